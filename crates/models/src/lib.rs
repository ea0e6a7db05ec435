//! Model families for thaw: the configuration read from GGUF metadata, weights as
//! zero-copy views of a mapping, the KV cache, and the forward pass of each family
//! (`llama.rs` for llama/mistral/qwen2, `gemma3.rs` for Gemma 3), written to be read
//! top to bottom. Shared math lives in `ops.rs`; `perplexity` scores a token stream
//! the way llama.cpp's perplexity tool does.

#![forbid(unsafe_code)]

mod config;
mod gemma3;
mod kv_cache;
mod llama;
mod ops;
mod perplexity;
mod weights;

pub use config::{Arch, ModelConfig, RopeStyle};
pub use kv_cache::KvCache;
pub use perplexity::{PerplexityReport, perplexity};
pub use weights::{Storage, Tensor};

use thaw_gguf::{GgmlType, GgufError, GgufFile};
use thaw_kernels::ThreadPool;

/// Errors from loading a model or running it.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("unsupported model architecture `{0}` (thaw runs llama, mistral, qwen2 and gemma3)")]
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
}

/// A loaded model: its configuration and the weights of one family.
pub struct Model {
    config: ModelConfig,
    family: Family,
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
        Ok(Self { config, family })
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
        let n_out = match logits {
            Logits::Last => 1,
            Logits::All => tokens.len(),
        };
        let mut out = vec![0.0f32; n_out * c.n_vocab];
        // Bounded chunks keep scratch memory independent of the prompt length.
        let mut done = 0;
        for chunk in tokens.chunks(MAX_BATCH) {
            let last_chunk = done + chunk.len() == tokens.len();
            let dst: Option<&mut [f32]> = match logits {
                Logits::All => Some(&mut out[done * c.n_vocab..(done + chunk.len()) * c.n_vocab]),
                Logits::Last if last_chunk => Some(&mut out[..]),
                Logits::Last => None,
            };
            let want = match (logits, dst) {
                (_, None) => Out::None,
                (Logits::Last, Some(d)) => Out::Last(d),
                (Logits::All, Some(d)) => Out::All(d),
            };
            match &self.family {
                Family::Llama(m) => m.forward(c, pool, cache, chunk, want),
                Family::Gemma3(m) => m.forward(c, pool, cache, chunk, want),
            }
            done += chunk.len();
        }
        Ok(out)
    }
}

/// Tokens processed together per layer pass; longer prompts are split.
pub(crate) const MAX_BATCH: usize = 512;

/// The output head shared by every family: final RMSNorm of the rows whose logits
/// are wanted (`x` holds `n` rows of `n_embd`), then the output projection into the
/// destination `out` names. Returns that destination (for post-processing such as
/// soft-capping), or `None` when no logits are wanted.
pub(crate) fn output_head<'a>(
    pool: &thaw_kernels::ThreadPool,
    c: &ModelConfig,
    s: &mut kv_cache::Scratch,
    norm: &[f32],
    output: &weights::Tensor,
    n: usize,
    out: Out<'a>,
) -> Option<&'a mut [f32]> {
    let e = c.n_embd;
    let (rows, dst) = match out {
        Out::None => return None,
        Out::Last(dst) => ((n - 1)..n, dst),
        Out::All(dst) => (0..n, dst),
    };
    let m = rows.len();
    ops::rmsnorm(
        &s.x[rows.start * e..rows.end * e],
        norm,
        c.rms_eps,
        &mut s.xb[..m * e],
    );
    thaw_kernels::matmul(pool, &output.matrix(), &s.xb[..m * e], m, dst);
    Some(dst)
}

/// Where a family's forward pass writes logits for one batch.
pub(crate) enum Out<'a> {
    /// Only K/V are needed (an earlier chunk of a longer prompt).
    None,
    /// Logits of the last token of the batch (`n_vocab`).
    Last(&'a mut [f32]),
    /// Logits of every token of the batch (`n × n_vocab`).
    All(&'a mut [f32]),
}
