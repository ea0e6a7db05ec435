//! The llama family (llama, mistral, qwen2): pre-norm transformer with RMSNorm,
//! grouped-query attention with RoPE, and a SwiGLU feed-forward network.
//!
//! Per layer: `h = x + Wo·attn(rope(Wq·n), rope(Wk·n), Wv·n)` with `n = rmsnorm(x)`,
//! then `x' = h + Wdown·(silu(Wgate·m) * Wup·m)` with `m = rmsnorm(h)`.
//! qwen2 adds biases to Q/K/V and uses NEOX RoPE (set in the config); qwen3 drops the
//! biases and RMS-normalizes each head of Q and K before RoPE; smollm3 skips RoPE on
//! every fourth layer; granite multiplies the embeddings, each block's output before
//! the residual add and the logits by constants from the file (and scales attention
//! by its own constant). Mixtral (`llama` with `expert_count`), qwen3moe and
//! granitemoe replace the feed-forward network by a mixture of experts (`moe`).

use thaw_kernels::{ThreadPool, matmul, matmul_many};

use crate::kv_cache::Scratch;
use crate::layer::{Attend, attend_sequences, embeddings};
use crate::moe::Moe;
use crate::ops;
use crate::weights::{Loader, Tensor};
use crate::{ModelConfig, ModelError, PassSeq};

pub(crate) struct Llama {
    token_embd: Tensor,
    layers: Vec<Layer>,
    output_norm: Vec<f32>,
    /// `output.weight`, or the embedding when the output is tied.
    output: Tensor,
    inv_freq: ops::RopeFreqs,
}

struct Layer {
    attn_norm: Vec<f32>,
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    bq: Option<Vec<f32>>,
    bk: Option<Vec<f32>>,
    bv: Option<Vec<f32>>,
    /// Per-head Q/K RMSNorm weights (Qwen3).
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    wo: Tensor,
    ffn_norm: Vec<f32>,
    ffn: Ffn,
}

/// The feed-forward network of a layer.
enum Ffn {
    Dense {
        gate: Tensor,
        up: Tensor,
        down: Tensor,
    },
    Experts(Moe),
}

impl Llama {
    pub fn load(c: &ModelConfig, l: &Loader<'_>) -> Result<Self, ModelError> {
        let (e, q, kv, ff) = (c.n_embd, c.q_dim(), c.kv_dim(), c.n_ff);
        let (token_embd, output) = embeddings(c, l)?;
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let name = |s: &str| format!("blk.{i}.{s}");
            let qk_norm = |n: &str| c.qk_norm.then(|| l.vector(n, c.head_dim)).transpose();
            layers.push(Layer {
                attn_norm: l.vector(&name("attn_norm.weight"), e)?,
                wq: l.matrix(&name("attn_q.weight"), q, e)?,
                wk: l.matrix(&name("attn_k.weight"), kv, e)?,
                wv: l.matrix(&name("attn_v.weight"), kv, e)?,
                bq: l.opt_vector(&name("attn_q.bias"), q)?,
                bk: l.opt_vector(&name("attn_k.bias"), kv)?,
                bv: l.opt_vector(&name("attn_v.bias"), kv)?,
                q_norm: qk_norm(&name("attn_q_norm.weight"))?,
                k_norm: qk_norm(&name("attn_k_norm.weight"))?,
                wo: l.matrix(&name("attn_output.weight"), e, q)?,
                ffn_norm: l.vector(&name("ffn_norm.weight"), e)?,
                ffn: match c.moe {
                    Some(m) => Ffn::Experts(Moe::load(c, l, i, m)?),
                    None => Ffn::Dense {
                        gate: l.matrix(&name("ffn_gate.weight"), ff, e)?,
                        up: l.matrix(&name("ffn_up.weight"), ff, e)?,
                        down: l.matrix(&name("ffn_down.weight"), e, ff)?,
                    },
                },
            });
        }
        let mut inv_freq = ops::rope_inv_freq(c.rope_base, c.rope_dim);
        inv_freq.yarn = c
            .rope_yarn
            .map(|y| ops::YarnRamp::new(&y, c.rope_base, c.rope_dim, c.rope_freq_scale));
        // Llama 3.1-style frequency factors divide each pair's angle.
        if let Some(factors) = l.opt_vector("rope_freqs.weight", c.rope_dim / 2)? {
            inv_freq.factors = factors;
        }
        Ok(Self {
            token_embd,
            layers,
            output_norm: l.vector("output_norm.weight", e)?,
            output,
            inv_freq,
        })
    }

    /// One pass over the concatenated tokens of `seqs` (at most `MAX_BATCH`, room
    /// checked by the caller): projections and the feed-forward network see every
    /// token at once; RoPE, the cache write and attention go per sequence. Logits of
    /// batch rows `rows` go to `dst`.
    pub fn forward(
        &self,
        c: &ModelConfig,
        pool: &ThreadPool,
        s: &mut Scratch,
        seqs: &mut [PassSeq<'_, '_>],
        rows: &[usize],
        dst: &mut [f32],
    ) {
        let (n, e) = (s.prepare_pass(c, seqs), c.n_embd);
        for (t, &tok) in seqs.iter().flat_map(|q| q.tokens).enumerate() {
            self.token_embd
                .row_into(tok as usize, &mut s.x[t * e..(t + 1) * e]);
        }
        let sc = c.scales;
        if sc.embedding != 1.0 {
            s.x[..n * e].iter_mut().for_each(|v| *v *= sc.embedding);
        }

        let mut n = n;
        for (il, w) in self.layers.iter().enumerate() {
            let last = il + 1 == self.layers.len();
            // Attention block.
            ops::rmsnorm(&s.x, &w.attn_norm, c.rms_eps, &mut s.xb);
            let tr = |name: &str, d: &[f32]| crate::trace(|| format!("{name}-{il}"), d);
            tr("attn_norm", &s.xb[..n * e]);
            // One activation quantization and one pool hand-off for Q, K and V.
            let (wq, wk, wv) = (w.wq.matrix(), w.wk.matrix(), w.wv.matrix());
            let qkv: [&mut [f32]; 3] = [&mut s.q, &mut s.k, &mut s.v];
            matmul_many(pool, &[&wq, &wk, &wv], &s.xb, n, &mut { qkv });
            if let Some(b) = &w.bq {
                ops::add_bias(&mut s.q, b);
            }
            if let Some(b) = &w.bk {
                ops::add_bias(&mut s.k, b);
            }
            if let Some(b) = &w.bv {
                ops::add_bias(&mut s.v, b);
            }
            if let (Some(qn), Some(kn)) = (&w.q_norm, &w.k_norm) {
                ops::rmsnorm_inplace(&mut s.q, qn, c.rms_eps);
                ops::rmsnorm_inplace(&mut s.k, kn, c.rms_eps);
            }
            let attend = Attend {
                layer: il,
                freqs: &self.inv_freq,
                rope: c.uses_rope(il),
                prescale_q: None,
                window: None,
                freq_scale: c.rope_freq_scale,
            };
            tr("Qcur", &s.q[..n * c.q_dim()]);
            tr("Kcur", &s.k[..n * c.kv_dim()]);
            tr("Vcur", &s.v[..n * c.kv_dim()]);
            attend_sequences(pool, c, s, seqs, &attend);
            tr("kqv_out", &s.att[..n * c.q_dim()]);
            if last && rows.is_empty() {
                // Only the cache was wanted from this pass.
                break;
            }

            matmul(pool, &w.wo.matrix(), &s.att, n, &mut s.proj);
            scale_residual(&mut s.proj[..n * e], sc.residual);
            ops::add_assign(&mut s.x, &s.proj);
            if last {
                n = s.keep_rows(c, rows);
            }
            tr("ffn_inp", &s.x[..n * e]);

            // Feed-forward block.
            ops::rmsnorm(&s.x, &w.ffn_norm, c.rms_eps, &mut s.xb);
            tr("ffn_norm", &s.xb[..n * e]);
            match &w.ffn {
                Ffn::Dense { gate, up, down } => {
                    let (wg, wu) = (gate.matrix(), up.matrix());
                    let gate_up: [&mut [f32]; 2] = [&mut s.gate, &mut s.up];
                    matmul_many(pool, &[&wg, &wu], &s.xb, n, &mut { gate_up });
                    tr("ffn_gate", &s.gate[..n * c.n_ff]);
                    tr("ffn_up", &s.up[..n * c.n_ff]);
                    ops::swiglu(&mut s.gate, &s.up);
                    tr("ffn_swiglu", &s.gate[..n * c.n_ff]);
                    matmul(pool, &down.matrix(), &s.gate, n, &mut s.proj);
                }
                Ffn::Experts(moe) => moe.forward(pool, &s.xb[..n * e], n, &mut s.moe, &mut s.proj),
            }
            tr("ffn_out", &s.proj[..n * e]);
            scale_residual(&mut s.proj[..n * e], sc.residual);
            ops::add_assign(&mut s.x, &s.proj);
            tr("l_out", &s.x[..n * e]);
        }
        for seq in seqs.iter_mut() {
            seq.cache.len += seq.tokens.len();
        }

        // The last layer kept the logit rows, in order, at the front.
        crate::output_head(pool, c, s, &self.output_norm, &self.output, rows.len(), dst);
        if sc.logit != 1.0 {
            // As ggml_scale: a multiply by the reciprocal, not a division.
            let inv = 1.0 / sc.logit;
            dst.iter_mut().for_each(|v| *v *= inv);
        }
    }
}

/// A block's output times Granite's residual multiplier (nothing elsewhere).
fn scale_residual(x: &mut [f32], scale: f32) {
    if scale != 1.0 {
        x.iter_mut().for_each(|v| *v *= scale);
    }
}
