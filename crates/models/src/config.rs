//! Hyperparameters read from GGUF metadata (`<arch>.*` keys), checked for consistency.

use thaw_gguf::GgufFile;

use crate::ModelError;

/// The model family, from `general.architecture`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// `llama`, `mistral` and `smollm3` files (SmolLM3: llama without RoPE on every
    /// fourth layer; Mixtral: llama with a mixture of experts).
    Llama,
    /// `qwen2`: llama with Q/K/V biases and NEOX RoPE; `qwen3`: the same without
    /// biases and with per-head RMSNorm of Q and K before RoPE; `qwen3moe`: qwen3
    /// with a mixture of experts.
    Qwen2,
    /// `gemma3`: sandwich norms, QK-norm, GeGLU, local/global attention layers.
    Gemma3,
}

/// How RoPE pairs up the dimensions of a head (ggml's rope modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// ggml mode 0: rotate adjacent pairs `(2i, 2i+1)`. llama.cpp's converter permutes
    /// llama Q/K weights so this is right for `llama` files.
    Normal,
    /// ggml NEOX mode: rotate `(i, i + n_rot/2)`.
    Neox,
}

/// Everything the forward pass needs to know about a model's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    /// `general.architecture` as written in the file.
    pub arch_name: String,
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Per-head dimension of Q, K and V.
    pub head_dim: usize,
    pub n_ff: usize,
    pub n_ctx_train: usize,
    /// Dimensions of each head that RoPE rotates (≤ `head_dim`).
    pub rope_dim: usize,
    pub rope_style: RopeStyle,
    /// RoPE frequency base of global-attention layers.
    pub rope_base: f32,
    /// RoPE frequency base of sliding-window layers (Gemma 3: 10,000).
    pub rope_base_local: f32,
    /// Positions are multiplied by this (linear or YaRN RoPE scaling: 1 / factor).
    pub rope_freq_scale: f32,
    /// YaRN's corrections on top of `rope_freq_scale` (`rope.scaling.type yarn`).
    pub rope_yarn: Option<Yarn>,
    pub rms_eps: f32,
    /// Multiplier of Q·K.
    pub attn_scale: f32,
    /// Sliding-window size of local layers (`None`: every layer is global).
    pub sliding_window: Option<usize>,
    /// Every `swa_pattern`-th layer (`il % swa_pattern == swa_pattern - 1`) is global.
    pub swa_pattern: usize,
    /// `cap · tanh(logit / cap)` on the output logits when present.
    pub final_logit_softcap: Option<f32>,
    /// The same on the attention scores before the softmax (Gemma 2).
    pub attn_softcap: Option<f32>,
    /// IBM Granite's multipliers (1 elsewhere): the token embeddings are multiplied
    /// by `embedding`, each block's output by `residual` before it is added to the
    /// residual stream, and the logits by `1 / logit`.
    pub scales: Scales,
    /// Every `n`-th layer (`(il + 1) % n == 0`) attends without RoPE (SmolLM3's NoPE
    /// layers: 4, fixed by the architecture as in llama.cpp; the GGUF has no key).
    pub no_rope_layer_step: Option<usize>,
    /// Per-head RMSNorm of Q and K (weights `attn_q_norm`/`attn_k_norm`) before RoPE
    /// in the llama-family layer (Qwen3).
    pub qk_norm: bool,
    /// A mixture of experts in place of the dense feed-forward network.
    pub moe: Option<MoeConfig>,
}

/// YaRN RoPE scaling as ggml's `rope_ext` takes it: dimensions below the
/// `beta_fast` correction dim keep their trained rotation, those above `beta_slow`'s
/// are interpolated by `rope_freq_scale`, with a linear ramp between, and cos/sin
/// scaled by `attn_factor · (1 + 0.1 ln(1 / freq_scale))`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scales {
    pub embedding: f32,
    pub residual: f32,
    pub logit: f32,
}

impl Default for Scales {
    fn default() -> Self {
        Self {
            embedding: 1.0,
            residual: 1.0,
            logit: 1.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Yarn {
    /// The context the model was trained with before scaling.
    pub orig_ctx: usize,
    pub ext_factor: f32,
    pub attn_factor: f32,
    pub beta_fast: f32,
    pub beta_slow: f32,
}

/// A sparse feed-forward layer: each token goes through `n_expert_used` of
/// `n_expert` SwiGLU experts, picked and weighted by a softmax router (Mixtral,
/// Qwen3-MoE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoeConfig {
    pub n_expert: usize,
    pub n_expert_used: usize,
    /// Hidden width of one expert.
    pub n_ff_expert: usize,
}

impl ModelConfig {
    /// Read and validate the configuration of a llama-family or Gemma 3 GGUF.
    pub fn from_gguf(f: &GgufFile) -> Result<Self, ModelError> {
        let arch_name = f.get_str("general.architecture")?.to_string();
        let arch = match arch_name.as_str() {
            "llama" | "mistral" | "smollm3" | "granite" | "granitemoe" => Arch::Llama,
            "qwen2" | "qwen3" | "qwen3moe" => Arch::Qwen2,
            "gemma2" | "gemma3" => Arch::Gemma3,
            other => return Err(ModelError::UnsupportedArch(other.to_string())),
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let usize_key = |k: &str| -> Result<usize, ModelError> {
            let v = f.get_u64(&key(k))?;
            usize::try_from(v)
                .map_err(|_| ModelError::Config(format!("{} = {v} is too large", key(k))))
        };
        let opt_usize = |k: &str| -> Result<Option<usize>, ModelError> {
            if f.get(&key(k)).is_some() {
                usize_key(k).map(Some)
            } else {
                Ok(None)
            }
        };
        let opt_f32 = |k: &str| -> Result<Option<f32>, ModelError> {
            if f.get(&key(k)).is_some() {
                Ok(Some(f.get_f32(&key(k))?))
            } else {
                Ok(None)
            }
        };

        let n_embd = usize_key("embedding_length")?;
        let n_layer = usize_key("block_count")?;
        let n_head = usize_key("attention.head_count")?;
        let n_head_kv = opt_usize("attention.head_count_kv")?.unwrap_or(n_head);
        let n_ff = usize_key("feed_forward_length")?;
        let n_ctx_train = usize_key("context_length")?;
        if n_embd == 0 || n_layer == 0 || n_head == 0 || n_head_kv == 0 || n_ff == 0 {
            return Err(ModelError::Config(
                "embedding_length, block_count, head counts and feed_forward_length must be > 0"
                    .into(),
            ));
        }
        if n_head % n_head_kv != 0 {
            return Err(ModelError::Config(format!(
                "head_count {n_head} is not a multiple of head_count_kv {n_head_kv}"
            )));
        }
        let head_dim = match opt_usize("attention.key_length")? {
            Some(d) => d,
            None if n_embd % n_head == 0 => n_embd / n_head,
            None => {
                return Err(ModelError::Config(format!(
                    "embedding_length {n_embd} is not a multiple of head_count {n_head}"
                )));
            }
        };
        if let Some(v) = opt_usize("attention.value_length")?
            && v != head_dim
        {
            return Err(ModelError::Config(format!(
                "value_length {v} differs from key_length {head_dim} (not supported)"
            )));
        }
        let moe = match opt_usize("expert_count")?.filter(|&n| n > 0) {
            None if matches!(arch_name.as_str(), "qwen3moe" | "granitemoe") => {
                return Err(ModelError::Config(format!(
                    "{arch_name} without expert_count"
                )));
            }
            None => None,
            Some(n) => {
                // Mixtral-style files say `llama`; other families' experts (shared
                // experts, other routers) are not implemented.
                if !matches!(
                    arch_name.as_str(),
                    "llama" | "mistral" | "qwen3moe" | "granitemoe"
                ) {
                    return Err(ModelError::Config(format!(
                        "{arch_name} with {n} experts (mixture of experts) is not supported; \
                         thaw runs experts in llama/mistral (Mixtral), qwen3moe and \
                         granitemoe files"
                    )));
                }
                let used = opt_usize("expert_used_count")?.unwrap_or(0);
                if used == 0 || used > n {
                    return Err(ModelError::Config(format!(
                        "expert_used_count {used} must be between 1 and expert_count {n}"
                    )));
                }
                let n_ff_expert = opt_usize("expert_feed_forward_length")?.unwrap_or(n_ff);
                if n_ff_expert == 0 {
                    return Err(ModelError::Config("expert_feed_forward_length is 0".into()));
                }
                Some(MoeConfig {
                    n_expert: n,
                    n_expert_used: used,
                    n_ff_expert,
                })
            }
        };
        let rope_dim = opt_usize("rope.dimension_count")?.unwrap_or(head_dim);
        if rope_dim > head_dim || rope_dim % 2 != 0 || head_dim == 0 {
            return Err(ModelError::Config(format!(
                "rope.dimension_count {rope_dim} must be even and at most the head size {head_dim}"
            )));
        }
        let default_eps = if arch == Arch::Gemma3 { 1e-6 } else { 1e-5 };
        let rms_eps = opt_f32("attention.layer_norm_rms_epsilon")?.unwrap_or(default_eps);
        let default_base = if arch_name == "gemma3" {
            1_000_000.0
        } else {
            10_000.0
        };
        let rope_base = opt_f32("rope.freq_base")?.unwrap_or(default_base);

        let factor = || -> Result<f32, ModelError> {
            let factor = opt_f32("rope.scaling.factor")?.unwrap_or(1.0);
            if factor.is_finite() && factor > 0.0 {
                Ok(factor)
            } else {
                Err(ModelError::Config(format!("rope scaling factor {factor}")))
            }
        };
        let scaling = match f.get(&key("rope.scaling.type")) {
            None => "none",
            Some(_) => f.get_str(&key("rope.scaling.type"))?,
        };
        let (rope_freq_scale, rope_yarn) = match scaling {
            "none" => (1.0, None),
            "linear" => (1.0 / factor()?, None),
            "yarn" if arch != Arch::Gemma3 => {
                let orig_ctx = opt_usize("rope.scaling.original_context_length")?
                    .filter(|&n| n > 0)
                    .unwrap_or(n_ctx_train);
                // DeepSeek's variant scales the magnitude by a log multiplier too.
                if opt_f32("rope.scaling.yarn_log_multiplier")?.is_some_and(|m| m != 0.0) {
                    return Err(ModelError::Config(
                        "YaRN with a log multiplier (DeepSeek's variant) is not supported".into(),
                    ));
                }
                let yarn = Yarn {
                    orig_ctx,
                    ext_factor: opt_f32("rope.scaling.yarn_ext_factor")?.unwrap_or(1.0),
                    // As llama.cpp: the YaRN factor times the file's attention factor.
                    attn_factor: opt_f32("rope.scaling.yarn_attn_factor")?.unwrap_or(1.0)
                        * opt_f32("rope.scaling.attn_factor")?.unwrap_or(1.0),
                    beta_fast: opt_f32("rope.scaling.yarn_beta_fast")?.unwrap_or(32.0),
                    beta_slow: opt_f32("rope.scaling.yarn_beta_slow")?.unwrap_or(1.0),
                };
                (1.0 / factor()?, Some(yarn))
            }
            other => {
                return Err(ModelError::Config(format!(
                    "RoPE scaling `{other}` is not supported for {arch_name} (none, linear, yarn)"
                )));
            }
        };

        // n_vocab is the embedding's row count: the one number every part agrees on.
        let embd = f
            .tensor_info("token_embd.weight")
            .ok_or_else(|| ModelError::MissingTensor("token_embd.weight".into()))?;
        let n_vocab = match embd.dims.as_slice() {
            [cols, rows] if *cols as usize == n_embd => *rows as usize,
            _ => {
                return Err(ModelError::Shape {
                    name: "token_embd.weight".into(),
                    expected: vec![n_embd as u64, 0],
                    found: embd.dims.clone(),
                });
            }
        };
        if n_vocab == 0 {
            return Err(ModelError::Config("empty vocabulary".into()));
        }

        // Granite's four multipliers are required, as llama.cpp requires them; its
        // attention scale replaces 1/sqrt(head_dim).
        let granite = matches!(arch_name.as_str(), "granite" | "granitemoe");
        let (scales, granite_attn_scale) = if granite {
            let need = |k: &str| -> Result<f32, ModelError> {
                let v = opt_f32(k)?.ok_or_else(|| {
                    ModelError::Config(format!("{arch_name} file without {}", key(k)))
                })?;
                if v.is_finite() && v != 0.0 {
                    Ok(v)
                } else {
                    Err(ModelError::Config(format!("{} = {v}", key(k))))
                }
            };
            let scales = Scales {
                embedding: need("embedding_scale")?,
                residual: need("residual_scale")?,
                logit: need("logit_scale")?,
            };
            (scales, Some(need("attention.scale")?))
        } else {
            (Scales::default(), None)
        };
        let (rope_style, sliding_window, swa_pattern, rope_base_local, attn_scale, softcap) =
            match arch {
                Arch::Llama => (
                    RopeStyle::Normal,
                    None,
                    1,
                    rope_base,
                    granite_attn_scale.unwrap_or_else(|| head_scale(head_dim)),
                    None,
                ),
                Arch::Qwen2 => (
                    RopeStyle::Neox,
                    None,
                    1,
                    rope_base,
                    head_scale(head_dim),
                    None,
                ),
                Arch::Gemma3 if arch_name == "gemma2" => {
                    // llama.cpp: local and global layers alternate (window 4096 unless
                    // the file says), one RoPE base for both, Q scaled by
                    // 1/sqrt(head_dim) (n_embd/n_head for the 27B, 46 layers), and
                    // soft-capped final logits (30 unless the file says).
                    let window = opt_usize("attention.sliding_window")?.unwrap_or(4096);
                    let scale = if n_layer == 46 {
                        head_scale(n_embd / n_head)
                    } else {
                        head_scale(head_dim)
                    };
                    let softcap = Some(opt_f32("final_logit_softcapping")?.unwrap_or(30.0))
                        .filter(|&c| c > 0.0);
                    (RopeStyle::Neox, Some(window), 2, rope_base, scale, softcap)
                }
                Arch::Gemma3 => {
                    // llama.cpp: 5 sliding-window layers then one global, local base 10k,
                    // Q scaled by 1/sqrt(head_dim) (the 27B's n_embd/n_head variant
                    // is recognised by its 62 layers).
                    let window = usize_key("attention.sliding_window")?;
                    let scale = if n_layer == 62 {
                        head_scale(n_embd / n_head)
                    } else {
                        head_scale(head_dim)
                    };
                    let softcap = opt_f32("final_logit_softcapping")?.filter(|&c| c > 0.0);
                    (RopeStyle::Neox, Some(window), 6, 10_000.0, scale, softcap)
                }
            };
        if sliding_window == Some(0) {
            return Err(ModelError::Config("attention.sliding_window is 0".into()));
        }

        // Gemma 2 soft-caps the attention scores too (50 unless the file says).
        let attn_softcap = if arch_name == "gemma2" {
            Some(opt_f32("attn_logit_softcapping")?.unwrap_or(50.0)).filter(|&c| c > 0.0)
        } else {
            None
        };
        let no_rope_layer_step = (arch_name == "smollm3").then_some(4);
        Ok(Self {
            arch,
            qk_norm: matches!(arch_name.as_str(), "qwen3" | "qwen3moe"),
            moe,
            arch_name,
            n_vocab,
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            n_ff,
            n_ctx_train,
            rope_dim,
            rope_style,
            rope_base,
            rope_base_local,
            rope_freq_scale,
            rope_yarn,
            rms_eps,
            attn_scale,
            sliding_window,
            swa_pattern,
            final_logit_softcap: softcap,
            attn_softcap,
            scales,
            no_rope_layer_step,
        })
    }

    /// Whether layer `il` rotates Q and K (false on SmolLM3's NoPE layers).
    pub fn uses_rope(&self, il: usize) -> bool {
        self.no_rope_layer_step
            .is_none_or(|n| !(il + 1).is_multiple_of(n))
    }

    /// Whether layer `il` attends only to the last `sliding_window` positions.
    pub fn is_local_layer(&self, il: usize) -> bool {
        self.sliding_window.is_some() && il % self.swa_pattern < self.swa_pattern - 1
    }

    /// Key/value width of one token in one layer.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    /// Query width of one token.
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }
}

fn head_scale(d: usize) -> f32 {
    1.0 / (d as f32).sqrt()
}
