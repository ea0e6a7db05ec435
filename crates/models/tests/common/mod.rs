//! Tiny random models written as GGUF bytes, for tests that need no model file.

#![allow(dead_code)]

use thaw_gguf::writer::GgufWriter;
use thaw_gguf::{GgmlType, GgufFile};

/// A small deterministic generator (xorshift), so tests need no rand crate.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Uniform in [-1, 1).
    pub fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

/// Shape of a synthetic model.
#[derive(Clone, Copy)]
pub struct Spec {
    pub arch: &'static str,
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub n_ctx_train: usize,
    pub sliding_window: usize,
    pub biases: bool,
    pub tied: bool,
    /// Experts per layer and experts per token (0: a dense feed-forward network).
    pub experts: (usize, usize),
    /// Hidden width of an expert when it differs from `n_ff` (qwen3moe's key).
    pub n_ff_expert: Option<usize>,
    /// Matrices (2-D and experts' 3-D) whose rows are whole Q8_0 blocks stored as
    /// Q8_0 instead of f32.
    pub q8: bool,
    /// Linear RoPE scaling factor (`rope.scaling.type linear`), 0 for none.
    pub rope_linear: f32,
    /// YaRN RoPE scaling: factor and original context length.
    pub yarn: Option<(f32, usize)>,
}

/// `v` as tensor `name` of GGUF dims `dims` (`dims[0]` values per row): Q8_0 when
/// `q8` and the rows are whole blocks, else f32.
pub fn put(w: &mut GgufWriter, name: String, dims: &[u64], v: &[f32], q8: bool) {
    let cols = dims[0] as usize;
    if q8 && cols.is_multiple_of(32) {
        let rb = GgmlType::Q8_0.row_bytes(cols).expect("whole blocks");
        let mut data = vec![0u8; v.len() / cols * rb];
        for (row, dst) in v.chunks_exact(cols).zip(data.chunks_exact_mut(rb)) {
            thaw_kernels::reference::q8::quantize_q8_0(row, dst);
        }
        w.tensor(name, dims, GgmlType::Q8_0, data);
    } else {
        w.tensor_f32(name, dims, v);
    }
}

impl Spec {
    pub fn llama() -> Self {
        Self {
            arch: "llama",
            n_vocab: 67,
            n_embd: 32,
            n_layer: 2,
            n_head: 4,
            n_head_kv: 2,
            head_dim: 8,
            n_ff: 48,
            n_ctx_train: 1024,
            sliding_window: 0,
            biases: false,
            tied: false,
            experts: (0, 0),
            n_ff_expert: None,
            q8: false,
            rope_linear: 0.0,
            yarn: None,
        }
    }
    /// Mixtral's shape: `llama` with 4 experts, 2 per token.
    pub fn mixtral() -> Self {
        Self {
            experts: (4, 2),
            ..Self::llama()
        }
    }
    /// Qwen3 with 5 experts of their own width, 3 per token.
    pub fn qwen3moe() -> Self {
        Self {
            arch: "qwen3moe",
            experts: (5, 3),
            n_ff_expert: Some(24),
            ..Self::qwen3()
        }
    }
    pub fn qwen2() -> Self {
        Self {
            arch: "qwen2",
            biases: true,
            tied: true,
            ..Self::llama()
        }
    }
    /// Head size differs from n_embd / n_head (as Qwen3's does), per-head Q/K norms.
    pub fn qwen3() -> Self {
        Self {
            arch: "qwen3",
            head_dim: 16,
            tied: true,
            ..Self::llama()
        }
    }
    /// IBM Granite: llama with multipliers on the embeddings, the residual branches,
    /// the attention scores and the logits ([`GRANITE_SCALES`]).
    pub fn granite() -> Self {
        Self {
            arch: "granite",
            tied: true,
            ..Self::llama()
        }
    }
    pub fn granitemoe() -> Self {
        Self {
            arch: "granitemoe",
            experts: (5, 2),
            ..Self::granite()
        }
    }
    /// Gemma 2: Gemma 3's shape without Q/K norms, local and global layers
    /// alternating, soft-capped scores and logits.
    pub fn gemma2() -> Self {
        Self {
            arch: "gemma2",
            n_layer: 4,
            ..Self::gemma3()
        }
    }
    /// Four layers, so the last is a NoPE layer (no RoPE on every fourth).
    pub fn smollm3() -> Self {
        Self {
            arch: "smollm3",
            n_layer: 4,
            ..Self::llama()
        }
    }
    /// Head size differs from n_embd / n_head, six layers so both local and global
    /// attention run, and a window shorter than the test prompts.
    pub fn gemma3() -> Self {
        Self {
            arch: "gemma3",
            n_layer: 6,
            n_head: 2,
            n_head_kv: 1,
            head_dim: 32,
            sliding_window: 5,
            tied: true,
            ..Self::llama()
        }
    }
}

/// Granite's multipliers in the test models: far enough from 1 (and from
/// 1/sqrt(head_dim) for the attention) that leaving one out moves the logits.
pub const GRANITE_SCALES: [(&str, f32); 4] = [
    ("embedding_scale", 6.0),
    ("residual_scale", 0.3),
    ("attention.scale", 0.05),
    ("logit_scale", 4.0),
];

/// The GGUF writer filled with random weights for `spec` (callers may add or break
/// entries before writing).
pub fn writer(spec: &Spec, seed: u64) -> GgufWriter {
    writer_except(spec, seed, &[])
}

/// Like [`writer`] but without the tensors (or Granite multipliers) named in `skip`.
pub fn writer_except(spec: &Spec, seed: u64, skip: &[&str]) -> GgufWriter {
    let s = spec;
    let mut rng = Rng::new(seed);
    let mut w = GgufWriter::new();
    let a = s.arch;
    w.kv("general.architecture", a)
        .kv(format!("{a}.context_length"), s.n_ctx_train as u32)
        .kv(format!("{a}.embedding_length"), s.n_embd as u32)
        .kv(format!("{a}.block_count"), s.n_layer as u32)
        .kv(format!("{a}.feed_forward_length"), s.n_ff as u32)
        .kv(format!("{a}.attention.head_count"), s.n_head as u32)
        .kv(format!("{a}.attention.head_count_kv"), s.n_head_kv as u32)
        .kv(format!("{a}.attention.key_length"), s.head_dim as u32)
        .kv(format!("{a}.attention.value_length"), s.head_dim as u32)
        .kv(
            format!("{a}.rope.freq_base"),
            if a == "gemma3" {
                1_000_000.0f32
            } else {
                10_000.0
            },
        )
        .kv(format!("{a}.attention.layer_norm_rms_epsilon"), 1e-5f32);
    if let Some((factor, orig)) = s.yarn {
        w.kv(format!("{a}.rope.scaling.type"), "yarn")
            .kv(format!("{a}.rope.scaling.factor"), factor)
            .kv(
                format!("{a}.rope.scaling.original_context_length"),
                orig as u32,
            );
    }
    if s.rope_linear > 0.0 {
        w.kv(format!("{a}.rope.scaling.type"), "linear")
            .kv(format!("{a}.rope.scaling.factor"), s.rope_linear);
    }
    if s.experts.0 > 0 {
        w.kv(format!("{a}.expert_count"), s.experts.0 as u32)
            .kv(format!("{a}.expert_used_count"), s.experts.1 as u32);
        if let Some(xf) = s.n_ff_expert {
            w.kv(format!("{a}.expert_feed_forward_length"), xf as u32);
        }
    }
    if a == "gemma2" {
        // Caps small enough to bend these models' scores and logits (the real ones,
        // 50 and 30, barely touch random weights' small values).
        w.kv(format!("{a}.attn_logit_softcapping"), 0.5f32)
            .kv(format!("{a}.final_logit_softcapping"), 1.5f32);
    }
    if a.starts_with("granite") {
        for (k, v) in GRANITE_SCALES.iter().filter(|(k, _)| !skip.contains(k)) {
            w.kv(format!("{a}.{k}"), *v);
        }
    }
    if s.sliding_window > 0 {
        w.kv(
            format!("{a}.attention.sliding_window"),
            s.sliding_window as u32,
        );
    }
    let (e, q, kv, ff, hd) = (
        s.n_embd,
        s.n_head * s.head_dim,
        s.n_head_kv * s.head_dim,
        s.n_ff,
        s.head_dim,
    );
    let mut mat = |w: &mut GgufWriter, name: String, rows: usize, cols: usize| {
        let scale = 1.5 / (cols as f32).sqrt();
        let v = rng.vec(rows * cols, scale);
        if !skip.contains(&name.as_str()) {
            put(w, name, &[cols as u64, rows as u64], &v, s.q8);
        }
    };
    mat(&mut w, "token_embd.weight".into(), s.n_vocab, e);
    if !s.tied {
        mat(&mut w, "output.weight".into(), s.n_vocab, e);
    }
    let mut rng2 = Rng::new(seed ^ 0xabcdef);
    let mut norm = |w: &mut GgufWriter, name: String, n: usize| {
        let v: Vec<f32> = (0..n).map(|_| 1.0 + 0.2 * rng2.next()).collect();
        if !skip.contains(&name.as_str()) {
            w.tensor_f32(name, &[n as u64], &v);
        }
    };
    norm(&mut w, "output_norm.weight".into(), e);
    let mut rng3 = Rng::new(seed ^ 0x5eed);
    for i in 0..s.n_layer {
        let b = |n: &str| format!("blk.{i}.{n}");
        norm(&mut w, b("attn_norm.weight"), e);
        norm(&mut w, b("ffn_norm.weight"), e);
        if a == "gemma3" || a == "qwen3" || a == "qwen3moe" {
            norm(&mut w, b("attn_q_norm.weight"), hd);
            norm(&mut w, b("attn_k_norm.weight"), hd);
        }
        if a == "gemma3" || a == "gemma2" {
            norm(&mut w, b("post_attention_norm.weight"), e);
            norm(&mut w, b("post_ffw_norm.weight"), e);
        }
        if s.biases {
            norm(&mut w, b("attn_q.bias"), q);
            norm(&mut w, b("attn_k.bias"), kv);
            norm(&mut w, b("attn_v.bias"), kv);
        }
        mat(&mut w, b("attn_q.weight"), q, e);
        mat(&mut w, b("attn_k.weight"), kv, e);
        mat(&mut w, b("attn_v.weight"), kv, e);
        mat(&mut w, b("attn_output.weight"), e, q);
        let (ne, _) = s.experts;
        if ne == 0 {
            mat(&mut w, b("ffn_gate.weight"), ff, e);
            mat(&mut w, b("ffn_up.weight"), ff, e);
            mat(&mut w, b("ffn_down.weight"), e, ff);
        } else {
            // Router logits spread enough that the picks are not near-ties.
            let router = rng3.vec(ne * e, 4.0 / (e as f32).sqrt());
            let name = b("ffn_gate_inp.weight");
            if !skip.contains(&name.as_str()) {
                w.tensor_f32(name, &[e as u64, ne as u64], &router);
            }
            let xf = s.n_ff_expert.unwrap_or(ff);
            for (part, rows, cols) in [("gate", xf, e), ("up", xf, e), ("down", e, xf)] {
                let v = rng3.vec(ne * rows * cols, 1.5 / (cols as f32).sqrt());
                let dims = [cols as u64, rows as u64, ne as u64];
                let name = b(&format!("ffn_{part}_exps.weight"));
                if !skip.contains(&name.as_str()) {
                    put(&mut w, name, &dims, &v, s.q8);
                }
            }
        }
    }
    w
}

/// Last-token logits printed one per line by a reference script run as
/// `python3 SCRIPT MODEL ID...` (`numpy_ref.py`, `llamacpp_ids.py`).
pub fn script_logits(script: &str, model: &std::path::Path, ids: &[u32]) -> Vec<f32> {
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(model)
        .args(ids.iter().map(u32::to_string))
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{script} {}: {}",
        model.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("UTF-8 output")
        .lines()
        .map(|l| l.trim().parse().expect("one number per line"))
        .collect()
}

/// A placeholder GPT-2 vocabulary of `n` tokens `t0`, `t1`, … (llama.cpp will not
/// load a model without one; tests that feed token ids need nothing more).
pub fn dummy_vocab(w: &mut GgufWriter, n: usize) {
    w.kv("tokenizer.ggml.model", "gpt2")
        .kv("tokenizer.ggml.pre", "default")
        .kv(
            "tokenizer.ggml.tokens",
            (0..n).map(|i| format!("t{i}")).collect::<Vec<_>>(),
        )
        .kv("tokenizer.ggml.token_type", vec![1i32; n])
        .kv("tokenizer.ggml.merges", vec!["t 1".to_string()])
        .kv("tokenizer.ggml.bos_token_id", 0u32)
        .kv("tokenizer.ggml.eos_token_id", 1u32);
}

pub fn file(w: &GgufWriter) -> GgufFile {
    GgufFile::from_bytes("synthetic.gguf", &w.to_bytes()).expect("synthetic GGUF parses")
}

pub fn model_file(spec: &Spec, seed: u64) -> GgufFile {
    file(&writer(spec, seed))
}

/// A tensor of a type thaw's kernels do not compute with.
pub const UNSUPPORTED: GgmlType = GgmlType::Q8_1;

/// Largest |a-b| relative to the largest |b|.
pub fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

pub fn argmax(x: &[f32]) -> usize {
    x.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &v)| if v > b.1 { (i, v) } else { b },
        )
        .0
}
