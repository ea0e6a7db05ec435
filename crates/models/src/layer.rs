//! What every family's layer does the same way: loading the embeddings and output
//! head, and the per-sequence half of attention (RoPE, the cache write, attending)
//! in a batched pass.

use thaw_kernels::ThreadPool;

use crate::kv_cache::Scratch;
use crate::ops::{self, AttnShape, RopeFreqs};
use crate::weights::{Loader, Tensor};
use crate::{ModelConfig, ModelError, PassSeq};

/// Token embeddings and the output head (tied to the embeddings when the file has
/// no `output.weight`).
pub(crate) fn embeddings(c: &ModelConfig, l: &Loader<'_>) -> Result<(Tensor, Tensor), ModelError> {
    let token_embd = l.matrix(crate::weights::EMBEDDINGS, c.n_vocab, c.n_embd)?;
    let output = l
        .opt_matrix("output.weight", c.n_vocab, c.n_embd)?
        .unwrap_or_else(|| token_embd.clone());
    Ok((token_embd, output))
}

/// How one layer attends.
pub(crate) struct Attend<'a> {
    pub layer: usize,
    pub freqs: &'a RopeFreqs,
    /// RoPE on Q and K (false on a NoPE layer).
    pub rope: bool,
    /// Multiply Q by this after RoPE and attend with scale 1 (Gemma 3, as llama.cpp
    /// does: it rounds differently from scaling the scores once Q goes through f16);
    /// `None` scales the scores by `c.attn_scale`.
    pub prescale_q: Option<f32>,
    /// Sliding window of a local layer.
    pub window: Option<usize>,
    /// Positions are multiplied by this in RoPE (linear scaling; Gemma 3's local
    /// layers are never scaled).
    pub freq_scale: f32,
}

/// RoPE on the pass's Q and K, K/V written to each sequence's cache, and attention
/// of each sequence's queries over its own cache, into `s.att`. Q, K and V of the
/// whole pass are in `s.q`, `s.k`, `s.v`, sequence after sequence.
pub(crate) fn attend_sequences(
    pool: &ThreadPool,
    c: &ModelConfig,
    s: &mut Scratch,
    seqs: &mut [PassSeq<'_, '_>],
    a: &Attend<'_>,
) {
    let hd = c.head_dim;
    let (fs, st) = (a.freq_scale, c.rope_style);
    let mut t0 = 0;
    for seq in seqs.iter_mut() {
        let rows = t0..t0 + seq.tokens.len();
        t0 = rows.end;
        let cache = &mut *seq.cache;
        let (pos0, n_ctx) = (cache.len, cache.n_ctx);
        let q = &mut s.q[rows.start * c.q_dim()..rows.end * c.q_dim()];
        let k = &mut s.k[rows.start * c.kv_dim()..rows.end * c.kv_dim()];
        let v = &s.v[rows.start * c.kv_dim()..rows.end * c.kv_dim()];
        if a.rope {
            ops::rope(q, c.n_head, hd, pos0, fs, a.freqs, st, &mut s.rope);
            ops::rope(k, c.n_head_kv, hd, pos0, fs, a.freqs, st, &mut s.rope);
        }
        if let Some(f) = a.prescale_q {
            q.iter_mut().for_each(|v| *v *= f);
        }

        let per_layer = c.n_head_kv * n_ctx * hd;
        let range = a.layer * per_layer..(a.layer + 1) * per_layer;
        let (kl, vl) = (&mut cache.k[range.clone()], &mut cache.v[range]);
        ops::store_kv(kl, vl, k, v, c.n_head_kv, hd, n_ctx, pos0);
        let shared = cache.shared.as_ref().map(|p| {
            let (k, v) = p.layer(a.layer, c.n_head_kv, hd);
            ops::SharedKv { k, v, len: p.len }
        });
        let shape = AttnShape {
            n_head: c.n_head,
            n_head_kv: c.n_head_kv,
            head_dim: hd,
            n_ctx,
            pos0,
            scale: if a.prescale_q.is_some() {
                1.0
            } else {
                c.attn_scale
            },
            window: a.window,
            softcap: c.attn_softcap,
        };
        let att = &mut s.att[rows.start * c.q_dim()..rows.end * c.q_dim()];
        ops::attention(pool, &shape, shared, kl, vl, q, &s.heads, att);
    }
}
