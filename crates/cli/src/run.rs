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
    /// Maximum tokens to generate per answer (default, or -1: until the model stops or
    /// the context is full).
    #[arg(short = 'n', long, allow_negative_numbers = true, value_parser = parse_max_tokens)]
    pub max_tokens: Option<Limit>,
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
    /// Random seed, for reproducible sampling (default, or -1: a random one).
    #[arg(long, allow_negative_numbers = true, value_parser = parse_seed)]
    pub seed: Option<Limit>,
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
    /// Constrain every answer to JSON valid against this JSON schema (a file, or the
    /// schema itself inline: `'{"type": "object", ...}'`).
    #[arg(long, value_name = "FILE|JSON", conflicts_with_all = ["tools", "raw"])]
    pub json_schema: Option<std::path::PathBuf>,
    /// Offer these tools (an OpenAI `tools` array, in a file or inline); parsed calls
    /// are printed as a JSON line `{"tool_calls": [...]}` after the answer.
    #[arg(long, value_name = "FILE|JSON", conflicts_with = "raw")]
    pub tools: Option<std::path::PathBuf>,
    /// With --tools: `auto` (the model may answer in text), `required` (it must call a
    /// tool) or a function name (it must call that one).
    #[arg(long, default_value = "auto", requires = "tools")]
    pub tool_choice: String,
    /// Extra chat-template variables as a JSON object, e.g.
    /// '{"enable_thinking": false}' for Qwen3 or SmolLM3 to answer without thinking.
    #[arg(long, value_name = "JSON", value_parser = parse_template_vars, conflicts_with = "raw")]
    pub chat_template_kwargs: Option<serde_json::Map<String, serde_json::Value>>,
}

fn parse_template_vars(s: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match serde_json::from_str(s) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err("expected a JSON object, e.g. '{\"enable_thinking\": false}'".into()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

/// `-n` or `--seed`: a number, or -1 for none (no limit, a random seed), as
/// llama.cpp takes them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limit(Option<u64>);

fn parse_minus_one(s: &str, none: &str) -> Result<Limit, String> {
    match s.trim() {
        "-1" => Ok(Limit(None)),
        t if t.starts_with('-') => Err(format!("{t} is negative: give -1 for {none}")),
        t => t
            .parse()
            .map(|n| Limit(Some(n)))
            .map_err(|e| format!("{e}")),
    }
}

fn parse_max_tokens(s: &str) -> Result<Limit, String> {
    parse_minus_one(s, "no limit, or a number of tokens ≥ 0")
}

fn parse_seed(s: &str) -> Result<Limit, String> {
    parse_minus_one(s, "a random seed, or a seed ≥ 0")
}

/// Set while a prompt is processed and its answer generated: Ctrl-C then stops the
/// answer instead of exiting.
static GENERATING: AtomicBool = AtomicBool::new(false);
static CANCEL: AtomicBool = AtomicBool::new(false);
/// Ctrl-C stopped an answer (rather than a closed stdout).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub fn run(args: RunArgs) -> Result<()> {
    let (model_spec, prompt) = split_positionals(&args)?;
    let path = thaw_hub::resolve(&model_spec)?;
    let opts = LoadOptions {
        threads: crate::kernel_threads(args.threads),
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
            seed: args.seed.and_then(|s| s.0),
            ..SamplerConfig::default()
        },
        max_tokens: args
            .max_tokens
            .and_then(|n| n.0)
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
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

    // Piped stdin is the prompt, or with a prompt argument, text to go with it (as
    // `ollama run` does): `git diff | thaw run "Review this"`.
    let piped = !args.chat && !std::io::stdin().is_terminal();
    let read_stdin = || -> Result<String> {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the prompt from standard input")?;
        Ok(text)
    };
    let prompt = match prompt {
        // Only when text (or its end) arrives soon: a harness that leaves an idle
        // pipe on stdin must not hang a one-shot prompt.
        Some(p) if piped && stdin_ready(STDIN_WAIT) => Some(with_piped_text(p, &read_stdin()?)),
        Some(p) => Some(p),
        None if piped => Some(read_stdin()?),
        None => None,
    };
    // An empty question would be answered as one (llama.cpp and ollama refuse it too);
    // `--raw --system TEXT` with nothing after is a plain continuation of TEXT.
    if prompt.as_deref().is_some_and(|p| p.trim().is_empty())
        && !(args.raw && args.system.is_some())
    {
        anyhow::bail!(
            "the prompt is empty: give a question (argument or piped), or none at all on a terminal for an interactive chat"
        );
    }
    ctrlc::set_handler(|| {
        if GENERATING.load(Ordering::SeqCst) {
            INTERRUPTED.store(true, Ordering::SeqCst);
            CANCEL.store(true, Ordering::SeqCst);
        } else {
            eprintln!();
            std::process::exit(130);
        }
    })
    .context("installing the Ctrl-C handler")?;

    let mut chat = Chat::new(&args, tools);
    let mut json_cut = false;
    match prompt {
        Some(p) => {
            json_cut = chat.turn(&engine, &mut session, &params, &p, args.verbose)?;
            if INTERRUPTED.load(Ordering::SeqCst) {
                // Stopped by Ctrl-C: a failure for scripts, as for other tools (128 +
                // SIGINT), and nothing frozen for a run the user broke off.
                std::process::exit(130);
            }
        }
        None => interactive(&engine, &mut session, &params, &mut chat, args.verbose)?,
    }
    if !thawed {
        // Answered from the GGUF: freeze it for the next run, in a process of its own
        // started only now, so that it neither delays nor slows this answer.
        crate::frozen::freeze_detached(&path);
    }
    if json_cut {
        // What is on stdout is not the JSON asked for: a failure for scripts.
        std::io::stdout().flush().ok();
        std::process::exit(EXIT_JSON_CUT);
    }
    Ok(())
}

/// Exit status of a one-shot `--json-schema`/`--tools` run whose answer was cut off
/// (by `-n` or a full context) before its JSON closed.
const EXIT_JSON_CUT: i32 = 3;

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

/// How long a prompt argument waits for piped text to start arriving.
const STDIN_WAIT: std::time::Duration = std::time::Duration::from_millis(300);

/// Whether stdin has text or its end within `wait` (an idle pipe that nobody
/// writes to or closes has neither).
fn stdin_ready(wait: std::time::Duration) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let stdin = std::io::stdin();
    let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
    let ms = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
    matches!(poll(&mut fds, ms), Ok(n) if n > 0)
}

/// `prompt`, a blank line, and the text piped on stdin (the prompt alone when
/// nothing was piped).
fn with_piped_text(prompt: String, piped: &str) -> String {
    if piped.trim().is_empty() {
        prompt
    } else {
        format!("{prompt}\n\n{piped}")
    }
}

/// Whether a lone positional argument is the model: a known name, an existing file,
/// or something shaped like a model (`hf:…`, one word ending in `.gguf`/`.thaw`),
/// which then fails as a missing file instead of being answered as a prompt.
fn names_a_model(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    s.starts_with("hf:")
        || thaw_hub::known_models().iter().any(|k| k.name == s)
        || (!s.contains('\n') && std::path::Path::new(s).is_file())
        || (!s.contains(char::is_whitespace)
            && (lower.ends_with(".gguf") || lower.ends_with(".thaw")))
}

/// The conversation so far, as chat messages (or raw text with --raw).
struct Chat {
    raw: bool,
    messages: Vec<serde_json::Value>,
    /// --raw: the text so far, starting with `raw_start`.
    transcript: String,
    /// --raw: the system text and a newline (what `/clear` keeps).
    raw_start: String,
    tools: Option<crate::structured::Tools>,
    /// Answers are constrained to a JSON schema (--json-schema).
    json_schema: bool,
    /// --chat-template-kwargs.
    template_vars: Option<serde_json::Map<String, serde_json::Value>>,
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
        // --raw: the system text goes first, on a line of its own.
        let raw_start = args
            .system
            .as_ref()
            .map(|s| format!("{s}\n"))
            .unwrap_or_default();
        Self {
            raw: args.raw,
            messages,
            transcript: raw_start.clone(),
            raw_start,
            tools,
            json_schema: args.json_schema.is_some(),
            template_vars: args.chat_template_kwargs.clone(),
        }
    }

    /// Forget the conversation, keeping the system prompt (both modes).
    fn clear(&mut self) {
        self.messages.retain(|m| m["role"] == "system");
        self.transcript = self.raw_start.clone();
    }

    /// One user turn: print the answer as it streams and remember it. True when a
    /// --json-schema or --tools answer was cut off before its JSON closed (said on
    /// stderr).
    fn turn(
        &mut self,
        engine: &Engine,
        session: &mut Session,
        params: &GenerateParams,
        user: &str,
        verbose: bool,
    ) -> Result<bool> {
        let transcript_len = self.transcript.len();
        let mut params = params.clone();
        let mut open_block = None;
        let tokens = if self.raw {
            self.transcript.push_str(user);
            engine.text_tokens(&self.transcript, true)?
        } else {
            self.messages.push(json!({"role": "user", "content": user}));
            let tools = self.tools.as_ref().and_then(|t| t.template_tools.as_ref());
            let vars = self.template_vars.as_ref();
            let mut tokens = engine.chat_tokens_with_vars(&self.messages, true, tools, vars)?;
            // A thinking model: JSON output starts after a closed block, and a tool
            // call counts only after its reasoning.
            open_block = engine.prepare_thinking(&mut tokens, params.constraint.as_mut())?;
            tokens
        };
        let params = &params;
        let mut answer = String::new();
        let mut stdout = std::io::stdout();
        // On a terminal a thinking model's reasoning is shown dimmed, without its
        // tags; piped output stays the raw text.
        let mut printer = ThinkingPrinter::new(open_block.filter(|_| stdout.is_terminal()));
        CANCEL.store(false, Ordering::SeqCst);
        GENERATING.store(true, Ordering::SeqCst);
        let result = session.generate(&tokens, params, Some(&CANCEL), |piece| {
            answer.push_str(piece);
            // A closed stdout (e.g. `| head`) ends the answer quietly.
            if stdout
                .write_all(printer.push(piece).as_bytes())
                .and_then(|_| stdout.flush())
                .is_err()
            {
                CANCEL.store(true, Ordering::SeqCst);
            }
        });
        GENERATING.store(false, Ordering::SeqCst);
        let stats = result?;
        print!("{}", printer.finish());
        println!();
        let computed = session.tokens().len();
        if stats.finish_reason == FinishReason::Cancelled && computed < tokens.len() {
            // Stopped while the prompt was processed: the question is forgotten, as
            // if not asked (the part computed stays cached for asking it again).
            if self.raw {
                self.transcript.truncate(transcript_len);
            } else {
                self.messages.pop();
            }
            eprintln!(
                "[stopped while processing the prompt: {computed} of {} tokens in {:.0} ms]",
                tokens.len(),
                stats.prefill_time.as_secs_f64() * 1e3
            );
            return Ok(false);
        }
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
        let json_cut = self.json_cut(&answer, stats.finish_reason);
        if json_cut {
            let what = if self.json_schema {
                "the JSON value"
            } else {
                "the tool call's JSON"
            };
            match params.max_tokens {
                Some(n) if stats.finish_reason == FinishReason::Length => eprintln!(
                    "warning: the answer stopped at the -n token limit ({n}) before {what} closed, so it is not valid JSON; raise -n"
                ),
                _ => eprintln!(
                    "warning: the answer filled the context ({} tokens) before {what} closed, so it is not valid JSON; raise --ctx-size",
                    session.n_ctx()
                ),
            }
        }
        if verbose {
            print_stats(&stats);
        }
        Ok(json_cut)
    }

    /// Whether a constrained answer that ended at a token limit (-n or the context)
    /// has JSON that did not close. A stop (the grammar's end) always closes it.
    fn json_cut(&self, answer: &str, finish: FinishReason) -> bool {
        if !matches!(finish, FinishReason::Length | FinishReason::ContextFull) {
            return false;
        }
        if self.json_schema {
            return !crate::structured::json_closed(answer);
        }
        self.tools.as_ref().is_some_and(|t| t.call_unclosed(answer))
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
                chat.clear();
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

/// What to print of a thinking model's answer on a terminal: its reasoning dimmed
/// (ANSI faint) without the `<think>` tags, a blank line, then the answer; other
/// output as it comes.
struct ThinkingPrinter {
    split: Option<thaw_constrain::ReasoningStream>,
    reasoned: bool,
    answering: bool,
}

impl ThinkingPrinter {
    /// `open`: `Some(the template opened the block)` to split, `None` to pass through.
    fn new(open: Option<bool>) -> Self {
        Self {
            split: open.map(thaw_constrain::ReasoningStream::new),
            reasoned: false,
            answering: false,
        }
    }

    fn push(&mut self, piece: &str) -> String {
        match &mut self.split {
            Some(s) => {
                let p = s.push(piece);
                self.render(p)
            }
            None => piece.to_string(),
        }
    }

    fn finish(&mut self) -> String {
        match &mut self.split {
            Some(s) => {
                let p = s.finish();
                self.render(p)
            }
            None => String::new(),
        }
    }

    fn render(&mut self, p: thaw_constrain::ReasoningSplit) -> String {
        let mut out = String::new();
        if !p.reasoning.is_empty() {
            self.reasoned = true;
            out += &format!("\x1b[2m{}\x1b[0m", p.reasoning);
        }
        if !p.content.is_empty() {
            if self.reasoned && !self.answering {
                out += "\n\n";
            }
            self.answering = true;
            out += &p.content;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinking_is_dimmed_and_set_apart_from_the_answer() {
        let mut p = ThinkingPrinter::new(Some(true));
        let mut out = String::new();
        for piece in ["Let me", " think.\n</th", "ink>\n\n", "Hello", "!"] {
            out += &p.push(piece);
        }
        out += &p.finish();
        assert_eq!(out, "\x1b[2mLet me\x1b[0m\x1b[2m think.\x1b[0m\n\nHello!");
        // Piped output, or a model that does not think: the text as it comes.
        let mut p = ThinkingPrinter::new(None);
        assert_eq!(p.push("<think>x</think>y"), "<think>x</think>y");
        assert_eq!(p.finish(), "");
    }

    #[test]
    fn minus_one_means_none_and_other_negatives_are_errors() {
        assert_eq!(parse_seed("-1"), Ok(Limit(None)));
        assert_eq!(parse_seed("42"), Ok(Limit(Some(42))));
        assert_eq!(
            parse_seed("18446744073709551615"),
            Ok(Limit(Some(u64::MAX)))
        );
        assert_eq!(parse_max_tokens("-1"), Ok(Limit(None)));
        assert_eq!(parse_max_tokens("0"), Ok(Limit(Some(0))));
        let e = parse_max_tokens("-2").unwrap_err();
        assert!(e.contains("-2 is negative") && e.contains("-1"), "{e}");
        assert!(parse_seed("x").is_err());
    }

    #[test]
    fn piped_text_follows_the_prompt_after_a_blank_line() {
        assert_eq!(with_piped_text("Sum:".into(), "1\n2\n"), "Sum:\n\n1\n2\n");
        assert_eq!(with_piped_text("Hi".into(), ""), "Hi");
        assert_eq!(with_piped_text("Hi".into(), " \n"), "Hi");
    }

    fn chat(args: &[&str]) -> Chat {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        let cli =
            <Cli as clap::Parser>::parse_from(std::iter::once("run").chain(args.iter().copied()));
        Chat::new(&cli.run, None)
    }

    #[test]
    fn raw_system_text_is_its_own_line_and_survives_clear() {
        let mut c = chat(&["--raw", "--system", "Write a poem.", "x"]);
        assert_eq!(c.transcript, "Write a poem.\n");
        c.transcript.push_str("Roses are red");
        c.clear();
        assert_eq!(c.transcript, "Write a poem.\n");
        let mut c = chat(&["--raw", "x"]);
        assert_eq!(c.transcript, "");
        c.transcript.push_str("1, 2,");
        c.clear();
        assert_eq!(c.transcript, "");
        let mut c = chat(&["--system", "Be brief.", "x"]);
        c.messages.push(json!({"role": "user", "content": "hi"}));
        c.clear();
        assert_eq!(
            c.messages,
            vec![json!({"role": "system", "content": "Be brief."})]
        );
    }

    #[test]
    fn model_shaped_arguments_are_models() {
        assert!(names_a_model("missing.gguf"));
        assert!(names_a_model("dir/missing.THAW"));
        assert!(names_a_model("hf:org/repo/x.gguf"));
        assert!(names_a_model("smollm2"));
        assert!(!names_a_model("What is a .gguf"));
        assert!(!names_a_model("Why is the sky blue?"));
    }
}
