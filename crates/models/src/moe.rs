//! A mixture-of-experts feed-forward layer (Mixtral, Qwen3-MoE), computed as
//! llama.cpp's `build_moe_ffn` does with a softmax router and normalized weights:
//! router logits → softmax → the `k` most probable experts per token (ties to the
//! lower index), their probabilities divided by their sum; each expert's SwiGLU runs
//! on the tokens routed to it as one batch; a token's outputs, each scaled by its
//! weight, are added in the order the experts were picked.

use thaw_kernels::{ThreadPool, matmul, matmul_many};

use crate::config::MoeConfig;
use crate::ops;
use crate::weights::{Loader, Tensor};
use crate::{ModelConfig, ModelError};

pub(crate) struct Moe {
    /// `n_expert × n_embd`: one router logit per expert.
    router: Tensor,
    gate: Vec<Tensor>,
    up: Vec<Tensor>,
    down: Vec<Tensor>,
    cfg: MoeConfig,
}

/// Buffers of one MoE layer pass, reused across layers and calls.
#[derive(Default)]
pub(crate) struct MoeScratch {
    /// Router logits, then probabilities, `n × n_expert`.
    probs: Vec<f32>,
    /// Per token: the picked experts and their weights, `n × k`.
    picked: Vec<(usize, f32)>,
    /// One expert's tokens: inputs, gate/up, outputs.
    x: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    out: Vec<f32>,
    /// Every (token, pick)'s scaled output, `n × k × n_embd`.
    each: Vec<f32>,
    /// (token, pick) of each row of the current expert's batch.
    rows: Vec<(usize, usize)>,
}

impl Moe {
    pub fn load(
        c: &ModelConfig,
        l: &Loader<'_>,
        il: usize,
        cfg: MoeConfig,
    ) -> Result<Self, ModelError> {
        let (e, ff, n) = (c.n_embd, cfg.n_ff_expert, cfg.n_expert);
        let name = |s: &str| format!("blk.{il}.{s}");
        Ok(Self {
            router: l.matrix(&name("ffn_gate_inp.weight"), n, e)?,
            gate: l.experts(&name("ffn_gate_exps.weight"), n, ff, e)?,
            up: l.experts(&name("ffn_up_exps.weight"), n, ff, e)?,
            down: l.experts(&name("ffn_down_exps.weight"), n, e, ff)?,
            cfg,
        })
    }

    /// The layer's output for the `n` normalized inputs `x` (`n × n_embd`) into `out`.
    pub fn forward(
        &self,
        pool: &ThreadPool,
        x: &[f32],
        n: usize,
        s: &mut MoeScratch,
        out: &mut [f32],
    ) {
        let (ne, k) = (self.cfg.n_expert, self.cfg.n_expert_used);
        let e = x.len() / n.max(1);
        let ff = self.cfg.n_ff_expert;
        s.probs.resize(n * ne, 0.0);
        matmul(pool, &self.router.matrix(), x, n, &mut s.probs);
        s.picked.clear();
        let mut order: Vec<usize> = Vec::with_capacity(ne);
        for row in s.probs.chunks_exact_mut(ne) {
            thaw_kernels::attn::softmax(row);
            order.clear();
            order.extend(0..ne);
            // Stable: equal probabilities keep the lower expert first.
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            // ggml_sum_rows adds in double and rounds once; llama.cpp clamps the sum
            // away from 0 before dividing.
            let sum = order[..k].iter().map(|&i| f64::from(row[i])).sum::<f64>() as f32;
            let sum = sum.max(6.103_515_6e-5);
            s.picked
                .extend(order[..k].iter().map(|&i| (i, row[i] / sum)));
        }
        s.each.resize(n * k * e, 0.0);
        for ex in 0..ne {
            s.rows.clear();
            for (t, picks) in s.picked.chunks_exact(k).enumerate() {
                if let Some(i) = picks.iter().position(|p| p.0 == ex) {
                    s.rows.push((t, i));
                }
            }
            let m = s.rows.len();
            if m == 0 {
                continue;
            }
            s.x.resize(m * e, 0.0);
            for (dst, &(t, _)) in s.x.chunks_exact_mut(e).zip(&s.rows) {
                dst.copy_from_slice(&x[t * e..(t + 1) * e]);
            }
            s.gate.resize(m * ff, 0.0);
            s.up.resize(m * ff, 0.0);
            let (g, u) = (self.gate[ex].matrix(), self.up[ex].matrix());
            let gate_up: [&mut [f32]; 2] = [&mut s.gate, &mut s.up];
            matmul_many(pool, &[&g, &u], &s.x, m, &mut { gate_up });
            ops::swiglu(&mut s.gate, &s.up);
            s.out.resize(m * e, 0.0);
            matmul(pool, &self.down[ex].matrix(), &s.gate, m, &mut s.out);
            for (src, &(t, i)) in s.out.chunks_exact(e).zip(&s.rows) {
                let w = s.picked[t * k + i].1;
                let dst = &mut s.each[(t * k + i) * e..(t * k + i + 1) * e];
                for (d, &v) in dst.iter_mut().zip(src) {
                    *d = v * w;
                }
            }
        }
        for (t, o) in out[..n * e].chunks_exact_mut(e).enumerate() {
            o.copy_from_slice(&s.each[t * k * e..(t * k + 1) * e]);
            for i in 1..k {
                let y = &s.each[(t * k + i) * e..(t * k + i + 1) * e];
                ops::add_assign(o, y);
            }
        }
    }
}
