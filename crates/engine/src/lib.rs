//! The inference engine without HTTP or JSON: load a model with its tokenizer and
//! chat template, keep per-conversation state (KV cache + the tokens it holds), and
//! run the generate loop with sampling, stop rules and streaming text.
//!
//! `thaw run` uses it in-process; the server drives the same sessions.

#![forbid(unsafe_code)]

mod generate;
mod prefix;
mod stop;

pub use generate::{FinishReason, GenerateParams, GenerateStats, Session, SessionBatch};
pub use prefix::{CHAT_PREAMBLE_LABEL, PrefixSpec, SnapshotOptions, build_snapshot};
pub use stop::StopMatcher;
/// Most tokens one batched forward pass carries (longer work is split).
pub use thaw_models::MAX_BATCH;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use thaw_constrain::{ConstrainError, Constrainer};
use thaw_gguf::GgufFile;
use thaw_kernels::ThreadPool;
use thaw_models::Model;
use thaw_tokenizer::{ChatTemplate, Tokenizer};

use prefix::Prefixes;

/// Errors from loading a model or running it.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Gguf(#[from] thaw_gguf::GgufError),
    #[error(transparent)]
    Snapshot(#[from] thaw_snapshot::SnapshotError),
    #[error("{path}: {source}")]
    Model {
        path: PathBuf,
        source: thaw_models::ModelError,
    },
    #[error("{path}: tokenizer: {source}")]
    Tokenizer {
        path: PathBuf,
        source: thaw_tokenizer::TokenizerError,
    },
    #[error(transparent)]
    Forward(#[from] thaw_models::ModelError),
    #[error("batched forward pass: {0}")]
    Batch(String),
    #[error(transparent)]
    Tokenize(#[from] thaw_tokenizer::TokenizerError),
    #[error("chat template: {0}")]
    Template(#[from] thaw_tokenizer::TemplateError),
    #[error(transparent)]
    Sampling(#[from] thaw_sampling::SamplingError),
    #[error(transparent)]
    Constrain(#[from] thaw_constrain::ConstrainError),
    #[error("{path}: {what}; rebuild it with `thaw snapshot build MODEL -o FILE`")]
    BadPrefix { path: PathBuf, what: String },
    /// A prefix to store tokenizes to nothing (an empty `--raw-prefix`, say).
    #[error("prefix {label:?} has no tokens: give a non-empty prefix text")]
    EmptyPrefix { label: String },
    /// `THAW_KERNELS` names no kernel set this CPU runs.
    #[error(transparent)]
    Kernels(#[from] thaw_kernels::KernelError),
    #[error(
        "the prompt is {prompt} tokens but the context holds {n_ctx}: shorten it or raise --ctx-size (the model was trained for {n_ctx_train})"
    )]
    PromptTooLong {
        prompt: usize,
        n_ctx: usize,
        n_ctx_train: usize,
    },
}

/// How to load a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Worker threads for the kernels (0 = all cores).
    pub threads: usize,
}

/// Where [`Engine::load`] spent its time (the cold-start breakdown).
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadTimings {
    /// Opening and mapping the file, parsing its header (GGUF metadata and tensor
    /// table, or the snapshot's header, table and GGUF section).
    pub map: std::time::Duration,
    /// Building (GGUF) or thawing (snapshot) the tokenizer.
    pub tokenizer: std::time::Duration,
    /// Model config and weight views.
    pub model: std::time::Duration,
    /// Compiling the chat template.
    pub template: std::time::Duration,
    /// Starting the kernel thread pool.
    pub pool: std::time::Duration,
}

/// A loaded model ready to serve sessions: weights (mapped), tokenizer, chat template
/// and the thread pool the kernels run on.
pub struct Engine {
    path: PathBuf,
    model: Arc<Model>,
    tokenizer: Arc<Tokenizer>,
    template: ChatTemplate,
    has_native_template: bool,
    pool: Arc<ThreadPool>,
    /// Grammar compiler, built on first use (~0.1 s: token trie of the vocabulary).
    constrainer: std::sync::OnceLock<Result<Arc<Constrainer>, String>>,
    prefixes: Arc<Prefixes>,
    timings: LoadTimings,
}

impl Engine {
    /// Load a GGUF model file or a `.thaw` snapshot.
    pub fn load(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Self, EngineError> {
        // A mistyped THAW_KERNELS would silently measure or test the wrong kernels.
        thaw_kernels::select_kernels()?;
        let path = path.as_ref().to_path_buf();
        let mut timings = LoadTimings::default();
        let mut clock = std::time::Instant::now();
        let mut lap = || {
            let now = std::time::Instant::now();
            let d = now - clock;
            clock = now;
            d
        };
        // A snapshot: its GGUF section holds no tokenizer arrays (cheap to parse) and
        // the tokenizer is thawed from its TOKENIZER section, not rebuilt.
        // Byte-level tokenizers compile a shared regex on first use: on another core,
        // while the rest loads.
        let warm = |gguf: &GgufFile| {
            let kind = gguf
                .get_str("tokenizer.ggml.model")
                .unwrap_or("")
                .to_string();
            std::thread::spawn(move || thaw_tokenizer::warm_up(&kind));
        };
        // By content, or by name: a damaged `.thaw` gets the snapshot's errors, not
        // "not a GGUF file".
        let named_thaw = path.extension().is_some_and(|e| e == "thaw");
        let (gguf, tokenizer, snapshot) = if named_thaw || thaw_snapshot::is_snapshot(&path) {
            let snap = Arc::new(thaw_snapshot::Snapshot::open(&path)?);
            let gguf = snap.gguf()?;
            warm(&gguf);
            timings.map = lap();
            (gguf, snap.tokenizer()?, Some(snap))
        } else {
            let gguf = GgufFile::open(&path)?;
            warm(&gguf);
            timings.map = lap();
            let tokenizer =
                Tokenizer::from_gguf(&gguf).map_err(|source| EngineError::Tokenizer {
                    path: path.clone(),
                    source,
                })?;
            (gguf, tokenizer, None)
        };
        timings.tokenizer = lap();
        let model = Model::load(&gguf).map_err(|source| EngineError::Model {
            path: path.clone(),
            source,
        })?;
        let c = model.config();
        // f16 K and V per layer and KV head.
        let kv_bytes_per_token = 2 * 2 * c.n_layer * c.n_head_kv * c.head_dim;
        let prefixes = match snapshot {
            Some(snap) => Prefixes::load(snap, kv_bytes_per_token)?,
            None => Prefixes::default(),
        };
        timings.model = lap();
        // A template that does not compile is an error the user must see, not a
        // silent switch to the fallback.
        let (template, fallback) = ChatTemplate::from_gguf_or_fallback(&gguf, &tokenizer)?;
        let has_native_template = !fallback;
        timings.template = lap();
        let pool = Arc::new(ThreadPool::new(opts.threads));
        timings.pool = lap();
        Ok(Self {
            path,
            model: Arc::new(model),
            tokenizer: Arc::new(tokenizer),
            template,
            has_native_template,
            pool,
            constrainer: std::sync::OnceLock::new(),
            prefixes: Arc::new(prefixes),
            timings,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Where loading spent its time.
    pub fn load_timings(&self) -> LoadTimings {
        self.timings
    }
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }
    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.tokenizer
    }
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }
    /// False when the GGUF has no chat template and a documented fallback (Gemma's
    /// turn format when the vocabulary has it, else ChatML) is used.
    pub fn has_native_template(&self) -> bool {
        self.has_native_template
    }
    pub fn pool(&self) -> &Arc<ThreadPool> {
        &self.pool
    }

    /// The grammar compiler for this model's vocabulary (built once, on first use).
    pub fn constrainer(&self) -> Result<Arc<Constrainer>, ConstrainError> {
        self.constrainer
            .get_or_init(|| {
                Constrainer::new(self.tokenizer.clone())
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(ConstrainError::Vocab)
    }

    /// Like [`Engine::chat_tokens`] with tool definitions passed to the template.
    pub fn chat_tokens_with_tools(
        &self,
        messages: &[serde_json::Value],
        add_generation_prompt: bool,
        tools: Option<&serde_json::Value>,
    ) -> Result<Vec<u32>, EngineError> {
        self.chat_tokens_with_vars(messages, add_generation_prompt, tools, None)
    }

    /// Like [`Engine::chat_tokens_with_tools`] with extra template variables (see
    /// [`ChatTemplate::render_with_vars`]).
    pub fn chat_tokens_with_vars(
        &self,
        messages: &[serde_json::Value],
        add_generation_prompt: bool,
        tools: Option<&serde_json::Value>,
        vars: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<Vec<u32>, EngineError> {
        let text = self
            .template
            .render_with_vars(messages, add_generation_prompt, tools, vars)?;
        self.chat_text_tokens(&text)
    }

    /// Whether the model writes its reasoning in a `<think>` … `</think>` block: both
    /// tags are text tokens of its vocabulary (Qwen3, SmolLM3, DeepSeek-R1 distills).
    /// Control tokens are left out of the output text, so a block made of them could
    /// not be found there.
    pub fn thinks(&self) -> bool {
        let t = &self.tokenizer;
        let text_token = |s: &str| t.token_id(s).is_some_and(|id| !t.is_control(id));
        text_token("<think>") && text_token("</think>")
    }

    /// Gets a thinking model's chat turn ready. Under a grammar that applies from the
    /// first token (JSON output, a forced tool call) a block the template opened is
    /// closed in `prompt`, so the answer is the JSON rather than reasoning; a lazy
    /// grammar (`tool_choice: auto`) counts its trigger only after the block. Returns
    /// `Some(opened by the template)` when the output may hold a block to split off,
    /// `None` for other models and for a closed block.
    pub fn prepare_thinking(
        &self,
        prompt: &mut Vec<u32>,
        constraint: Option<&mut thaw_constrain::Constraint>,
    ) -> Result<Option<bool>, EngineError> {
        if !self.thinks() {
            return Ok(None);
        }
        let tail = &prompt[prompt.len().saturating_sub(4)..];
        let open =
            thaw_constrain::ReasoningStream::prompt_opens(&self.tokenizer.decode(tail, false));
        match constraint {
            Some(c) if c.is_active() => {
                if open {
                    prompt.extend(self.tokenizer.encode("\n</think>\n\n", false, true)?);
                }
                Ok(None)
            }
            Some(c) => {
                c.think_first(open);
                Ok(Some(open))
            }
            None => Ok(Some(open)),
        }
    }

    /// A new conversation state with room for `n_ctx` tokens (0 = the model's
    /// training context, capped at 4096 to keep the KV cache small by default).
    pub fn session(&self, n_ctx: usize) -> Result<Session, EngineError> {
        let n_ctx_train = self.model.config().n_ctx_train;
        let n_ctx = if n_ctx == 0 {
            n_ctx_train.min(4096)
        } else {
            n_ctx
        };
        let cache = self.model.new_cache(n_ctx)?;
        Ok(Session::new(
            self.model.clone(),
            self.tokenizer.clone(),
            self.pool.clone(),
            cache,
            self.prefixes.clone(),
        ))
    }

    /// Stored prompt prefixes (from a snapshot): (label, tokens).
    pub fn prefixes(&self) -> Vec<(String, Vec<u32>)> {
        self.prefixes
            .entries()
            .iter()
            .map(|p| (p.label.clone(), p.tokens.clone()))
            .collect()
    }

    /// The tokens every chat with `system` as its system message starts with: the
    /// common token prefix of the template rendered with two different first user
    /// messages. What `thaw snapshot build --prefix` stores.
    pub fn system_prefix_tokens(&self, system: &str) -> Result<Vec<u32>, EngineError> {
        self.common_chat_prefix(Some(system))
    }

    /// The tokens every chat without a system message starts with, after the chat
    /// template (see [`PrefixSpec::ChatPreamble`]).
    pub fn chat_preamble_tokens(&self) -> Result<Vec<u32>, EngineError> {
        self.common_chat_prefix(None)
    }

    /// The common start of two chats (with `system`, if any) whose first user
    /// messages differ from their first character on.
    fn common_chat_prefix(&self, system: Option<&str>) -> Result<Vec<u32>, EngineError> {
        let render = |user: &str| {
            let mut messages = Vec::new();
            if let Some(system) = system {
                messages.push(serde_json::json!({"role": "system", "content": system}));
            }
            messages.push(serde_json::json!({"role": "user", "content": user}));
            self.chat_tokens(&messages, true)
        };
        let (a, b) = (render("Hello")?, render("What")?);
        let n = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
        Ok(a[..n].to_vec())
    }

    /// Render chat messages through the model's template and tokenize the result the
    /// way llama.cpp does for chat (special tokens parsed; BOS added only when the
    /// template did not already emit it).
    pub fn chat_tokens(
        &self,
        messages: &[serde_json::Value],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>, EngineError> {
        let text = self
            .template
            .render(messages, add_generation_prompt, None)?;
        self.chat_text_tokens(&text)
    }

    /// A rendered chat's ids ([`Engine::text_tokens`] with special tokens parsed). A
    /// stored prefix's ids stand for the text they were tokenized from, so the part of
    /// the chat they cover (up to its last special token) is not tokenized again: a
    /// 1,000-token system prompt costs ~2 ms to tokenize on every request otherwise.
    fn chat_text_tokens(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        let entries = self.prefixes.entries();
        if entries.is_empty() {
            return self.text_tokens(text, true);
        }
        let tok = &self.tokenizer;
        // `encode` adds a BOS that `text_tokens` drops again when the template wrote
        // one itself; the stored ids are after that drop.
        let bos = tok.bos_id().filter(|_| tok.add_bos());
        let template_bos = bos.filter(|&b| text.starts_with(tok.token_text(b)));
        let raw: Vec<std::borrow::Cow<'_, [u32]>> = entries
            .iter()
            .map(|p| match template_bos {
                Some(b) if p.tokens.first() == Some(&b) => {
                    std::iter::once(b).chain(p.tokens.iter().copied()).collect()
                }
                _ => std::borrow::Cow::Borrowed(&p.tokens[..]),
            })
            .collect();
        let known: Vec<&[u32]> = raw.iter().map(|k| &k[..]).collect();
        let (ids, _) = tok.encode_with_known(text, true, true, &known)?;
        Ok(self.drop_double_bos(ids))
    }

    /// Tokenize plain text (no template). `parse_special` lets control-token strings
    /// in the text become control tokens. BOS is added per the model's metadata unless
    /// the text already starts with it.
    pub fn text_tokens(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, EngineError> {
        let ids = self.tokenizer.encode(text, true, parse_special)?;
        Ok(self.drop_double_bos(ids))
    }

    /// A template that writes `{{ bos_token }}` itself must not get a second BOS.
    fn drop_double_bos(&self, mut ids: Vec<u32>) -> Vec<u32> {
        if let Some(bos) = self.tokenizer.bos_id()
            && ids.len() >= 2
            && ids[0] == bos
            && ids[1] == bos
        {
            ids.remove(0);
        }
        ids
    }
}
