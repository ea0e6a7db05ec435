//! Gemma 3: like llama but with "sandwich" norms (RMSNorm before and after each
//! sub-layer), per-head RMSNorm of Q and K, a GeGLU feed-forward network,
//! embeddings scaled by `sqrt(n_embd)`, and attention that alternates five
//! sliding-window layers (RoPE base 10,000) with one global layer (RoPE base 1e6).
//! The output projection is tied to the embedding. Gemma 2 is the same without the
//! Q/K norms, with local and global layers alternating one by one on one RoPE base,
//! and soft-capped attention scores and logits (set in the config).
//!
//! Matches llama.cpp's `llm_build_gemma3<iswa>` and `llm_build_gemma2_iswa`; the norm weights in GGUF files
//! already include Gemma's `+1` (the converter adds it), so they are used as-is.

use thaw_kernels::{ThreadPool, matmul, matmul_many};

use crate::kv_cache::Scratch;
use crate::layer::{Attend, attend_sequences, embeddings};
use crate::ops;
use crate::weights::{Loader, Tensor};
use crate::{ModelConfig, ModelError, PassSeq};

pub(crate) struct Gemma3 {
    token_embd: Tensor,
    layers: Vec<Layer>,
    output_norm: Vec<f32>,
    output: Tensor,
    inv_freq_global: ops::RopeFreqs,
    inv_freq_local: ops::RopeFreqs,
}

struct Layer {
    attn_norm: Vec<f32>,
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    /// Per-head Q/K norms (Gemma 3; Gemma 2 has none).
    qk_norm: Option<(Vec<f32>, Vec<f32>)>,
    wo: Tensor,
    post_attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    w_gate: Tensor,
    w_up: Tensor,
    w_down: Tensor,
    post_ffn_norm: Vec<f32>,
}

impl Gemma3 {
    pub fn load(c: &ModelConfig, l: &Loader<'_>) -> Result<Self, ModelError> {
        let (e, q, kv, ff, hd) = (c.n_embd, c.q_dim(), c.kv_dim(), c.n_ff, c.head_dim);
        let (token_embd, output) = embeddings(c, l)?;
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let name = |s: &str| format!("blk.{i}.{s}");
            layers.push(Layer {
                attn_norm: l.vector(&name("attn_norm.weight"), e)?,
                wq: l.matrix(&name("attn_q.weight"), q, e)?,
                wk: l.matrix(&name("attn_k.weight"), kv, e)?,
                wv: l.matrix(&name("attn_v.weight"), kv, e)?,
                qk_norm: match c.arch_name.as_str() {
                    "gemma2" => None,
                    _ => Some((
                        l.vector(&name("attn_q_norm.weight"), hd)?,
                        l.vector(&name("attn_k_norm.weight"), hd)?,
                    )),
                },
                wo: l.matrix(&name("attn_output.weight"), e, q)?,
                post_attn_norm: l.vector(&name("post_attention_norm.weight"), e)?,
                ffn_norm: l.vector(&name("ffn_norm.weight"), e)?,
                w_gate: l.matrix(&name("ffn_gate.weight"), ff, e)?,
                w_up: l.matrix(&name("ffn_up.weight"), ff, e)?,
                w_down: l.matrix(&name("ffn_down.weight"), e, ff)?,
                post_ffn_norm: l.vector(&name("post_ffw_norm.weight"), e)?,
            });
        }
        Ok(Self {
            token_embd,
            layers,
            output_norm: l.vector("output_norm.weight", e)?,
            output,
            inv_freq_global: ops::rope_inv_freq(c.rope_base, c.rope_dim),
            inv_freq_local: ops::rope_inv_freq(c.rope_base_local, c.rope_dim),
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
        let embd_scale = (e as f32).sqrt();
        for (t, &tok) in seqs.iter().flat_map(|q| q.tokens).enumerate() {
            let row = &mut s.x[t * e..(t + 1) * e];
            self.token_embd.row_into(tok as usize, row);
            row.iter_mut().for_each(|v| *v *= embd_scale);
        }
        crate::trace(|| "inp_scaled".into(), &s.x[..n * e]);

        let mut n = n;
        for (il, w) in self.layers.iter().enumerate() {
            let last = il + 1 == self.layers.len();
            let local = c.is_local_layer(il);
            let inv_freq = if local {
                &self.inv_freq_local
            } else {
                &self.inv_freq_global
            };

            // Attention block: norm → Q/K/V → per-head norm → RoPE → attend → Wo → norm.
            ops::rmsnorm(&s.x, &w.attn_norm, c.rms_eps, &mut s.xb);
            let tr = |name: &str, d: &[f32]| crate::trace(|| format!("{name}-{il}"), d);
            tr("attn_norm", &s.xb[..n * e]);
            // One activation quantization and one pool hand-off for Q, K and V.
            let (wq, wk, wv) = (w.wq.matrix(), w.wk.matrix(), w.wv.matrix());
            let qkv: [&mut [f32]; 3] = [&mut s.q, &mut s.k, &mut s.v];
            matmul_many(pool, &[&wq, &wk, &wv], &s.xb, n, &mut { qkv });
            tr("Qcur", &s.q[..n * c.q_dim()]);
            tr("Kcur", &s.k[..n * c.kv_dim()]);
            tr("Vcur", &s.v[..n * c.kv_dim()]);
            if let Some((q_norm, k_norm)) = &w.qk_norm {
                ops::rmsnorm_inplace(&mut s.q, q_norm, c.rms_eps);
                ops::rmsnorm_inplace(&mut s.k, k_norm, c.rms_eps);
                tr("Qcur_normed", &s.q[..n * c.q_dim()]);
                tr("Kcur_normed", &s.k[..n * c.kv_dim()]);
            }
            let attend = Attend {
                layer: il,
                freqs: inv_freq,
                rope: true,
                prescale_q: Some(c.attn_scale),
                window: if local { c.sliding_window } else { None },
                // As llama.cpp: the linear RoPE scaling of Gemma 3 4B and larger
                // applies to the global layers; local ones keep their 10k base as is.
                freq_scale: if local { 1.0 } else { c.rope_freq_scale },
            };
            attend_sequences(pool, c, s, seqs, &attend);
            tr("kqv_out", &s.att[..n * c.q_dim()]);
            if last && rows.is_empty() {
                // Only the cache was wanted from this pass.
                break;
            }
            matmul(pool, &w.wo.matrix(), &s.att, n, &mut s.proj);
            tr("attn_out", &s.proj[..n * e]);
            ops::rmsnorm_inplace(&mut s.proj, &w.post_attn_norm, c.rms_eps);
            tr("attn_post_norm", &s.proj[..n * e]);
            ops::add_assign(&mut s.x, &s.proj);
            if last {
                n = s.keep_rows(c, rows);
            }
            tr("sa_out", &s.x[..n * e]);

            // Feed-forward block: norm → GeGLU → Wdown → norm.
            ops::rmsnorm(&s.x, &w.ffn_norm, c.rms_eps, &mut s.xb);
            tr("ffn_norm", &s.xb[..n * e]);
            let (wg, wu) = (w.w_gate.matrix(), w.w_up.matrix());
            let gate_up: [&mut [f32]; 2] = [&mut s.gate, &mut s.up];
            matmul_many(pool, &[&wg, &wu], &s.xb, n, &mut { gate_up });
            tr("ffn_gate", &s.gate[..n * c.n_ff]);
            tr("ffn_up", &s.up[..n * c.n_ff]);
            ops::geglu(&mut s.gate, &s.up);
            tr("ffn_geglu", &s.gate[..n * c.n_ff]);
            matmul(pool, &w.w_down.matrix(), &s.gate, n, &mut s.proj);
            tr("ffn_out", &s.proj[..n * e]);
            ops::rmsnorm_inplace(&mut s.proj, &w.post_ffn_norm, c.rms_eps);
            tr("ffn_post_norm", &s.proj[..n * e]);
            ops::add_assign(&mut s.x, &s.proj);
            tr("l_out", &s.x[..n * e]);
        }
        for seq in seqs.iter_mut() {
            seq.cache.len += seq.tokens.len();
        }

        // The last layer kept the logit rows, in order, at the front.
        crate::output_head(pool, c, s, &self.output_norm, &self.output, rows.len(), dst);
        if let Some(cap) = c.final_logit_softcap {
            ops::softcap(dst, cap);
        }
    }
}
