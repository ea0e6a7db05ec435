//! Model families for thaw: the configuration read from GGUF metadata, weights as
//! zero-copy views of a mapping, the KV cache, and the forward pass of each family
//! (`llama.rs` for llama/mistral/qwen2, `gemma3.rs` for Gemma 3), written to be read
//! top to bottom. Shared math lives in `ops.rs`; `perplexity` scores a token stream
//! the way llama.cpp's perplexity tool does.

#![forbid(unsafe_code)]

mod attn_decode;
mod config;
mod gemma3;
mod kv_cache;
mod layer;
mod llama;
mod moe;
mod ops;
mod perplexity;
mod weights;

pub use config::{Arch, ModelConfig, MoeConfig, RopeStyle, Yarn};
pub use kv_cache::{KvCache, KvSource};
pub use perplexity::{PerplexityReport, perplexity};
pub use weights::{Storage, Tensor};

use thaw_gguf::{GgmlType, GgufError, GgufFile};
use thaw_kernels::ThreadPool;

/// A debugging hook that sees named intermediate tensors of the forward pass (for
/// comparing with llama.cpp's eval callback, `examples/trace_tensors.rs`): called with
/// llama.cpp's tensor name (e.g. `attn_norm-3`) and the rows of the whole batch.
pub type TraceHook = Box<dyn Fn(&str, &[f32]) + Send + Sync>;

static TRACE: std::sync::OnceLock<TraceHook> = std::sync::OnceLock::new();

/// Installs the process-wide [`TraceHook`] (once; later calls are ignored). Without
/// it, tracing costs one atomic load per traced tensor.
pub fn set_trace_hook(hook: TraceHook) {
    let _ = TRACE.set(hook);
}

/// Hands `name` (built only when a hook is set) and `data` to the [`TraceHook`].
#[inline]
pub(crate) fn trace(name: impl FnOnce() -> String, data: &[f32]) {
    if let Some(h) = TRACE.get() {
        h(&name(), data);
    }
}

/// Errors from loading a model or running it.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(
        "unsupported model architecture `{0}` (thaw runs llama, mistral, qwen2, qwen3, smollm3, granite, granitemoe, gemma2 and gemma3)"
    )]
    UnsupportedArch(String),
    #[error("model configuration: {0}")]
    Config(String),
    #[error("tensor `{0}` is missing from the model file")]
    MissingTensor(String),
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    Shape {
        name: String,
        expected: Vec<u64>,
        found: Vec<u64>,
    },
    #[error("tensor `{name}` has type {ty}, which thaw's kernels do not compute with")]
    UnsupportedType { name: String, ty: GgmlType },
    #[error("tensor `{name}`: {what}")]
    BadTensor { name: String, what: String },
    #[error("a context of {n_ctx} tokens exceeds the model's training context of {n_ctx_train}")]
    ContextTooLarge { n_ctx: usize, n_ctx_train: usize },
    #[error(
        "prompt of {n_tokens} tokens does not fit the context of {n_ctx} ({used} already used)"
    )]
    ContextFull {
        n_tokens: usize,
        used: usize,
        n_ctx: usize,
    },
    #[error("token id {token} is out of range (vocabulary of {n_vocab})")]
    BadToken { token: u32, n_vocab: usize },
    #[error("this KV cache was made for a different model ({0})")]
    CacheMismatch(String),
    #[error("perplexity: {0}")]
    Perplexity(String),
}

/// Which logits `Model::forward` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// `n_vocab` logits for the last token of the call.
    Last,
    /// `tokens.len() × n_vocab` logits, one row per token (perplexity, scoring).
    All,
    /// None: only the K/V cache is filled (a prompt chunk other than the last).
    None,
}

/// A loaded model: its configuration and the weights of one family.
pub struct Model {
    config: ModelConfig,
    family: Family,
    /// Activations of [`Model::forward_batch`]: one set for the model rather than
    /// one per cache (the server's caches would each grow batch-sized buffers).
    batch_scratch: std::sync::Mutex<kv_cache::Scratch>,
}

enum Family {
    Llama(llama::Llama),
    Gemma3(gemma3::Gemma3),
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Read the configuration and build views of every weight. Validates that every
    /// needed tensor is present with the expected shape and a supported type.
    pub fn load(file: &GgufFile) -> Result<Self, ModelError> {
        let config = ModelConfig::from_gguf(file)?;
        let loader = weights::Loader::new(file);
        let family = match config.arch {
            Arch::Llama | Arch::Qwen2 => Family::Llama(llama::Llama::load(&config, &loader)?),
            Arch::Gemma3 => Family::Gemma3(gemma3::Gemma3::load(&config, &loader)?),
        };
        Ok(Self {
            config,
            family,
            batch_scratch: Default::default(),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// An empty cache for `n_ctx` positions (at most the training context).
    pub fn new_cache(&self, n_ctx: usize) -> Result<KvCache, ModelError> {
        let c = &self.config;
        if n_ctx > c.n_ctx_train {
            return Err(ModelError::ContextTooLarge {
                n_ctx,
                n_ctx_train: c.n_ctx_train,
            });
        }
        if n_ctx == 0 {
            return Err(ModelError::Config("a context of 0 tokens".into()));
        }
        Ok(KvCache::new(c, n_ctx))
    }

    /// Bytes of K/V a cache of `n_ctx` positions holds (f16 keys and values).
    pub fn cache_bytes(&self, n_ctx: usize) -> usize {
        let c = &self.config;
        2 * c.n_layer * c.n_head_kv * c.head_dim * n_ctx * std::mem::size_of::<half::f16>()
    }

    /// Run `tokens` at positions `cache.len()..` and append their K/V to the cache.
    /// Returns the logits selected by `logits`. On error the cache is unchanged.
    pub fn forward(
        &self,
        pool: &ThreadPool,
        cache: &mut KvCache,
        tokens: &[u32],
        logits: Logits,
    ) -> Result<Vec<f32>, ModelError> {
        let c = &self.config;
        self.check(cache, tokens)?;
        let n_out = match logits {
            Logits::Last => 1,
            Logits::All => tokens.len(),
            Logits::None => 0,
        };
        let mut out = vec![0.0f32; n_out * c.n_vocab];
        let mut scratch = std::mem::take(&mut cache.scratch);
        // Bounded chunks keep scratch memory independent of the prompt length.
        let mut done = 0;
        for chunk in tokens.chunks(MAX_BATCH) {
            let last_chunk = done + chunk.len() == tokens.len();
            let (rows, dst): (Vec<usize>, &mut [f32]) = match logits {
                Logits::All => (
                    (0..chunk.len()).collect(),
                    &mut out[done * c.n_vocab..(done + chunk.len()) * c.n_vocab],
                ),
                Logits::Last if last_chunk => (vec![chunk.len() - 1], &mut out[..]),
                Logits::Last | Logits::None => (Vec::new(), &mut []),
            };
            let mut seqs = [PassSeq {
                cache: &mut *cache,
                tokens: chunk,
            }];
            self.pass(pool, &mut scratch, &mut seqs, &rows, dst);
            done += chunk.len();
        }
        cache.scratch = scratch;
        Ok(out)
    }

    /// Whether `tokens` can be appended to `cache` ([`Model::forward`]'s checks).
    pub fn check(&self, cache: &KvCache, tokens: &[u32]) -> Result<(), ModelError> {
        let c = &self.config;
        cache.check_compatible(c)?;
        if tokens.is_empty() {
            return Err(ModelError::Config("forward called with no tokens".into()));
        }
        if cache.len() + tokens.len() > cache.n_ctx() {
            return Err(ModelError::ContextFull {
                n_tokens: tokens.len(),
                used: cache.len(),
                n_ctx: cache.n_ctx(),
            });
        }
        if let Some(&token) = tokens.iter().find(|&&t| t as usize >= c.n_vocab) {
            return Err(ModelError::BadToken {
                token,
                n_vocab: c.n_vocab,
            });
        }
        Ok(())
    }

    /// Several sequences in one pass: every weight matrix is read once for all their
    /// tokens (decode steps of many requests, plus prompt chunks of new ones), while
    /// attention runs per sequence over its own cache. Returns, per entry, the logits
    /// of its last token when `logits` is set. Each entry's result equals
    /// [`Model::forward`] on it alone up to the matmul kernel chosen for a batch (the
    /// GEMM tile and the single-token path may round the last bit differently).
    ///
    /// Entries are packed into passes of at most [`MAX_BATCH`] tokens; an entry with
    /// more runs alone in chunks. On error no cache has changed.
    pub fn forward_batch(
        &self,
        pool: &ThreadPool,
        batch: &mut [BatchEntry<'_>],
    ) -> Result<Vec<Option<Vec<f32>>>, ModelError> {
        for b in batch.iter() {
            self.check(b.cache, b.tokens)?;
        }
        let n_vocab = self.config.n_vocab;
        let mut results: Vec<Option<Vec<f32>>> = vec![None; batch.len()];
        let mut guard = self.batch_scratch.lock().unwrap_or_else(|e| e.into_inner());
        let mut scratch = std::mem::take(&mut *guard);
        let mut i = 0;
        while i < batch.len() {
            if batch[i].tokens.len() > MAX_BATCH {
                let b = &mut batch[i];
                let want = if b.logits { Logits::Last } else { Logits::None };
                let out = self.forward(pool, b.cache, b.tokens, want)?;
                results[i] = b.logits.then_some(out);
                i += 1;
                continue;
            }
            // Greedy packing, in order, up to MAX_BATCH tokens per pass.
            let mut j = i;
            let mut n = 0;
            while j < batch.len() && n + batch[j].tokens.len() <= MAX_BATCH {
                n += batch[j].tokens.len();
                j += 1;
            }
            let mut rows = Vec::new();
            let mut off = 0;
            for b in &batch[i..j] {
                off += b.tokens.len();
                if b.logits {
                    rows.push(off - 1);
                }
            }
            let mut out = vec![0.0f32; rows.len() * n_vocab];
            let mut seqs: Vec<PassSeq<'_, '_>> = batch[i..j]
                .iter_mut()
                .map(|b| PassSeq {
                    cache: &mut *b.cache,
                    tokens: b.tokens,
                })
                .collect();
            self.pass(pool, &mut scratch, &mut seqs, &rows, &mut out);
            let mut rows_out = out.chunks_exact(n_vocab);
            for (k, b) in batch[i..j].iter().enumerate() {
                if b.logits {
                    results[i + k] = rows_out.next().map(<[f32]>::to_vec);
                }
            }
            i = j;
        }
        *guard = scratch;
        Ok(results)
    }

    /// One pass of the family's layers over the concatenated tokens of `seqs`
    /// (checked, at most [`MAX_BATCH`] in all), writing the logits of batch rows
    /// `rows` into `dst` (`rows.len() × n_vocab`).
    fn pass(
        &self,
        pool: &ThreadPool,
        s: &mut kv_cache::Scratch,
        seqs: &mut [PassSeq<'_, '_>],
        rows: &[usize],
        dst: &mut [f32],
    ) {
        let c = &self.config;
        match &self.family {
            Family::Llama(m) => m.forward(c, pool, s, seqs, rows, dst),
            Family::Gemma3(m) => m.forward(c, pool, s, seqs, rows, dst),
        }
    }
}

/// One sequence's share of [`Model::forward_batch`].
pub struct BatchEntry<'a> {
    pub cache: &'a mut KvCache,
    /// Tokens to append at `cache.len()..`.
    pub tokens: &'a [u32],
    /// Return the logits of the last token (false for a prompt chunk that is not
    /// the prompt's last).
    pub logits: bool,
}

/// Tokens processed together per layer pass; longer prompts are split.
pub const MAX_BATCH: usize = 512;

/// A sequence inside one pass: its cache (whose scratch is not used) and tokens.
pub(crate) struct PassSeq<'a, 'b> {
    pub cache: &'a mut KvCache,
    pub tokens: &'b [u32],
}

/// The output head shared by every family: final RMSNorm of the first `m` rows of
/// `x` (`n_embd` wide; the last layer moved the rows whose logits are read there),
/// then the output projection into `dst` (`m × n_vocab`).
pub(crate) fn output_head(
    pool: &thaw_kernels::ThreadPool,
    c: &ModelConfig,
    s: &mut kv_cache::Scratch,
    norm: &[f32],
    output: &weights::Tensor,
    m: usize,
    dst: &mut [f32],
) {
    let e = c.n_embd;
    if m == 0 {
        return;
    }
    for i in 0..m {
        let x = &s.x[i * e..(i + 1) * e];
        ops::rmsnorm(x, norm, c.rms_eps, &mut s.xb[i * e..(i + 1) * e]);
    }
    trace(|| "result_norm".into(), &s.xb[..m * e]);
    thaw_kernels::matmul(pool, &output.matrix(), &s.xb[..m * e], m, dst);
}
