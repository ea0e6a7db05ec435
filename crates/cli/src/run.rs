//! `thaw run`: one answer, or an interactive chat like `ollama run`.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;
use thaw_engine::{Engine, FinishReason, GenerateParams, GenerateStats, LoadOptions, Session};
use thaw_sampling::SamplerConfig;

#[derive(Args)]
pub struct RunArgs {
    /// `[MODEL] [PROMPT]`: with one argument, it is the model when it names one (a
    /// known name, a file, hf:…), otherwise the prompt for the default model.
    #[arg(num_args = 0..=2, value_name = "MODEL|PROMPT")]
    pub args: Vec<String>,
    /// The model (instead of the first positional argument).
    #[arg(short, long)]
    pub model: Option<String>,
    /// System prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// Maximum tokens to generate per answer (default: until the model stops or the context is full).
    #[arg(short = 'n', long)]
    pub max_tokens: Option<usize>,
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = SamplerConfig::default().temperature)]
    pub temperature: f32,
    /// Keep the K most likely tokens (0 = off).
    #[arg(long, default_value_t = SamplerConfig::default().top_k)]
    pub top_k: usize,
    /// Nucleus sampling: keep the smallest set of tokens with this much probability.
    #[arg(long, default_value_t = SamplerConfig::default().top_p)]
    pub top_p: f32,
    /// Drop tokens less likely than this fraction of the most likely one.
    #[arg(long, default_value_t = SamplerConfig::default().min_p)]
    pub min_p: f32,
    /// Penalize repeating recent tokens (1.0 = off).
    #[arg(long, default_value_t = SamplerConfig::default().repeat_penalty)]
    pub repeat_penalty: f32,
    /// Random seed, for reproducible sampling.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Kernel threads (default: all cores).
    #[arg(short, long, default_value_t = 0)]
    pub threads: usize,
    /// Context size in tokens (default: the model's, at most 4096).
    #[arg(short, long, default_value_t = 0)]
    pub ctx_size: usize,
    /// Send the prompt as-is, without the chat template.
    #[arg(long)]
    pub raw: bool,
    /// Chat line by line even when stdin is not a terminal (scripts, tests).
    #[arg(long, conflicts_with = "raw")]
    pub chat: bool,
    /// Print a timing summary on stderr after each answer.
    #[arg(short, long)]
    pub verbose: bool,
    /// Constrain every answer to JSON valid against this JSON-schema file.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["tools", "raw"])]
    pub json_schema: Option<std::path::PathBuf>,
    /// Offer these tools (a JSON file with an OpenAI `tools` array); parsed calls are
    /// printed as a JSON line `{"tool_calls": [...]}` after the answer.
    #[arg(long, value_name = "FILE", conflicts_with = "raw")]
    pub tools: Option<std::path::PathBuf>,
    /// With --tools: `auto` (the model may answer in text), `required` (it must call a
    /// tool) or a function name (it must call that one).
    #[arg(long, default_value = "auto", requires = "tools")]
    pub tool_choice: String,
}

/// Set while tokens are being generated: Ctrl-C then stops the answer instead of
/// exiting.
static GENERATING: AtomicBool = AtomicBool::new(false);
static CANCEL: AtomicBool = AtomicBool::new(false);

pub fn run(args: RunArgs) -> Result<()> {
    let (model_spec, prompt) = split_positionals(&args)?;
    let path = thaw_hub::resolve(&model_spec)?;
    let opts = LoadOptions {
        threads: args.threads,
    };
    // A GGUF thaws from its frozen snapshot once one was made (bit-identical logits,
    // a fraction of the start-up); a damaged one is dropped and the GGUF loaded.
    let frozen = crate::frozen::for_run(&path);
    let (engine, thawed) = match frozen.as_deref().map(|f| (f, Engine::load(f, &opts))) {
        Some((f, Ok(e))) => {
            if args.verbose {
                eprintln!("thawing {} (frozen from {})", f.display(), path.display());
            }
            (e, true)
        }
        other => {
            if let Some((f, Err(e))) = other {
                eprintln!(
                    "warning: {} did not load ({e}); removing it and loading the GGUF",
                    f.display()
                );
                let _ = std::fs::remove_file(f);
            }
            let e = Engine::load(&path, &opts)
                .with_context(|| format!("loading {}", path.display()))?;
            (e, false)
        }
    };
    if !args.raw && !engine.has_native_template() && args.verbose {
        eprintln!(
            "note: {} has no chat template; using the built-in fallback (Gemma turns or ChatML)",
            path.display()
        );
    }
    let mut session = engine.session(args.ctx_size)?;
    let params = GenerateParams {
        sampler: SamplerConfig {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            min_p: args.min_p,
            repeat_penalty: args.repeat_penalty,
            seed: args.seed,
            ..SamplerConfig::default()
        },
        max_tokens: args.max_tokens,
        ..GenerateParams::default()
    };
    params.sampler.validate()?;
    let mut params = params;
    let tools = match &args.tools {
        Some(f) => Some(crate::structured::load_tools(
            &engine,
            f,
            &args.tool_choice,
        )?),
        None => None,
    };
    if let Some(f) = &args.json_schema {
        params.constraint = Some(crate::structured::schema_constraint(&engine, f)?);
    }
    if let Some(t) = &tools {
        params.constraint = Some(t.constraint.clone());
    }

    let prompt = match prompt {
        Some(p) => Some(p),
        None if !args.chat && !std::io::stdin().is_terminal() => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the prompt from standard input")?;
            Some(text)
        }
        None => None,
    };
    ctrlc::set_handler(|| {
        if GENERATING.load(Ordering::SeqCst) {
            CANCEL.store(true, Ordering::SeqCst);
        } else {
            eprintln!();
            std::process::exit(130);
        }
    })
    .context("installing the Ctrl-C handler")?;

    let mut chat = Chat::new(&args, tools);
    match prompt {
        Some(p) => {
            chat.turn(&engine, &mut session, &params, &p, args.verbose)?;
        }
        None => interactive(&engine, &mut session, &params, &mut chat, args.verbose)?,
    }
    if !thawed {
        // Answered from the GGUF: freeze it for the next run, in a process of its own
        // started only now, so that it neither delays nor slows this answer.
        crate::frozen::freeze_detached(&path);
    }
    Ok(())
}

/// Decide which positional argument is the model and which the prompt.
fn split_positionals(args: &RunArgs) -> Result<(String, Option<String>)> {
    let default = thaw_hub::DEFAULT_MODEL.to_string();
    Ok(match (&args.model, args.args.as_slice()) {
        (Some(m), []) => (m.clone(), None),
        (Some(m), [p]) => (m.clone(), Some(p.clone())),
        (Some(_), _) => {
            anyhow::bail!("with --model, give at most one positional argument (the prompt)")
        }
        (None, []) => (default, None),
        (None, [one]) if names_a_model(one) => (one.clone(), None),
        (None, [one]) => (default, Some(one.clone())),
        (None, [m, p]) => (m.clone(), Some(p.clone())),
        (None, _) => unreachable!("clap limits positionals to two"),
    })
}

fn names_a_model(s: &str) -> bool {
    s.starts_with("hf:")
        || thaw_hub::known_models().iter().any(|k| k.name == s)
        || (!s.contains('\n') && std::path::Path::new(s).is_file())
}

/// The conversation so far, as chat messages (or raw text with --raw).
struct Chat {
    raw: bool,
    messages: Vec<serde_json::Value>,
    transcript: String,
    tools: Option<crate::structured::Tools>,
}

impl Chat {
    fn new(args: &RunArgs, tools: Option<crate::structured::Tools>) -> Self {
        let mut messages = Vec::new();
        let system = match (&args.system, tools.as_ref().and_then(|t| t.system.as_ref())) {
            (Some(s), Some(t)) => Some(format!("{s}\n\n{t}")),
            (s, t) => s.clone().or(t.cloned()),
        };
        if let Some(system) = &system {
            messages.push(json!({"role": "system", "content": system}));
        }
        Self {
            raw: args.raw,
            messages,
            transcript: args.system.clone().unwrap_or_default(),
            tools,
        }
    }

    /// One user turn: print the answer as it streams and remember it.
    fn turn(
        &mut self,
        engine: &Engine,
        session: &mut Session,
        params: &GenerateParams,
        user: &str,
        verbose: bool,
    ) -> Result<GenerateStats> {
        let tokens = if self.raw {
            self.transcript.push_str(user);
            engine.text_tokens(&self.transcript, true)?
        } else {
            self.messages.push(json!({"role": "user", "content": user}));
            let tools = self.tools.as_ref().and_then(|t| t.template_tools.as_ref());
            engine.chat_tokens_with_tools(&self.messages, true, tools)?
        };
        let mut answer = String::new();
        let mut stdout = std::io::stdout();
        CANCEL.store(false, Ordering::SeqCst);
        GENERATING.store(true, Ordering::SeqCst);
        let result = session.generate(&tokens, params, Some(&CANCEL), |piece| {
            answer.push_str(piece);
            // A closed stdout (e.g. `| head`) ends the answer quietly.
            if stdout
                .write_all(piece.as_bytes())
                .and_then(|_| stdout.flush())
                .is_err()
            {
                CANCEL.store(true, Ordering::SeqCst);
            }
        });
        GENERATING.store(false, Ordering::SeqCst);
        let stats = result?;
        println!();
        if let Some(t) = &self.tools
            && let Some(line) = t.calls_line(&answer)
        {
            println!("{line}");
        }
        if self.raw {
            self.transcript.push_str(&answer);
        } else {
            self.messages
                .push(json!({"role": "assistant", "content": answer}));
        }
        if stats.finish_reason == FinishReason::ContextFull {
            eprintln!(
                "[context full: {} tokens; start a new chat or raise --ctx-size]",
                session.n_ctx()
            );
        }
        if verbose {
            print_stats(&stats);
        }
        Ok(stats)
    }
}

fn print_stats(s: &GenerateStats) {
    eprintln!(
        "prompt: {} tokens ({} reused) in {:.0} ms, {:.1} tok/s | generated: {} tokens, {:.1} tok/s | {:?}",
        s.prompt_tokens,
        s.cached_tokens,
        s.prefill_time.as_secs_f64() * 1e3,
        s.prefill_tokens_per_second(),
        s.generated_tokens,
        s.decode_tokens_per_second(),
        s.finish_reason
    );
}

fn interactive(
    engine: &Engine,
    session: &mut Session,
    params: &GenerateParams,
    chat: &mut Chat,
    verbose: bool,
) -> Result<()> {
    eprintln!(
        "chatting with {} — /bye or Ctrl-D to leave, Ctrl-C stops an answer, /clear forgets the chat",
        engine.path().display()
    );
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        print!(">>> ");
        std::io::stdout().flush().ok();
        line.clear();
        if stdin.lock().read_line(&mut line)? == 0 {
            println!();
            return Ok(());
        }
        let input = line.trim_end_matches(['\n', '\r']);
        match input.trim() {
            "" => continue,
            "/bye" | "/exit" | "/quit" => return Ok(()),
            "/clear" => {
                chat.messages.retain(|m| m["role"] == "system");
                chat.transcript.clear();
                session.reset();
                eprintln!("[chat cleared]");
                continue;
            }
            "/?" | "/help" => {
                eprintln!(
                    "/bye  leave\n/clear  forget the conversation\nCtrl-C  stop the current answer"
                );
                continue;
            }
            _ => {}
        }
        match chat.turn(engine, session, params, input, verbose) {
            Ok(_) => {}
            // Too long a history: say so and keep the chat usable.
            Err(e) => {
                eprintln!("error: {e:#}");
                if !chat.raw {
                    chat.messages.pop();
                }
            }
        }
    }
}
