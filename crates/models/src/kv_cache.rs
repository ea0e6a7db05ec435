//! Per-sequence state: the K/V of every processed position, plus the scratch buffers
//! a forward pass reuses so decoding a token allocates nothing but its logits.

use std::sync::Mutex;

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::{ModelConfig, ModelError};

/// Keys and values of one sequence, in f16 (llama.cpp's default cache type: half the
/// memory of f32, and the same rounding as the reference), laid out
/// `[layer][kv_head][pos][head_dim]` so that one head's keys are contiguous.
pub struct KvCache {
    pub(crate) n_layer: usize,
    pub(crate) n_head_kv: usize,
    pub(crate) head_dim: usize,
    pub(crate) n_ctx: usize,
    pub(crate) len: usize,
    pub(crate) k: Vec<f16>,
    pub(crate) v: Vec<f16>,
    pub(crate) scratch: Scratch,
}

impl std::fmt::Debug for KvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvCache")
            .field("len", &self.len)
            .field("n_ctx", &self.n_ctx)
            .finish()
    }
}

/// `n` zero f16 from zeroed memory (`vec![0u16; n]` is one `calloc`, whose pages the
/// OS hands out zeroed on first touch) instead of `vec![f16::ZERO; n]`, which writes
/// every element: a session sized for 4,096 tokens wrote tens of MB at creation, a
/// cost a cold start paid before its first token.
fn zeroed(n: usize) -> Vec<f16> {
    use half::vec::HalfBitsVecExt;
    vec![0u16; n].reinterpret_into()
}

impl KvCache {
    pub(crate) fn new(c: &ModelConfig, n_ctx: usize) -> Self {
        let size = c.n_layer * c.n_head_kv * n_ctx * c.head_dim;
        Self {
            n_layer: c.n_layer,
            n_head_kv: c.n_head_kv,
            head_dim: c.head_dim,
            n_ctx,
            len: 0,
            k: zeroed(size),
            v: zeroed(size),
            scratch: Scratch::default(),
        }
    }

    /// Positions filled.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Capacity in positions.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Keep the first `n` positions (to roll back or reuse a prompt prefix).
    pub fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n);
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Bytes of [`Self::export`] for `n` positions of a model shaped like this cache.
    pub fn export_len(&self, n: usize) -> usize {
        2 * self.n_layer * self.n_head_kv * n * self.head_dim * 2
    }

    /// K/V of the first `n` positions as little-endian f16 bytes, layer by layer
    /// (each: K of every KV head, then V), independent of `n_ctx`: a prompt prefix
    /// computed once (a snapshot stores it) and restored by [`Self::import`].
    ///
    /// # Panics
    /// If `n` exceeds the filled positions.
    pub fn export(&self, n: usize) -> Vec<u8> {
        assert!(n <= self.len, "export {n} of {} positions", self.len);
        let mut out = Vec::with_capacity(self.export_len(n));
        self.for_each_run(n, |k, _| {
            out.extend(k.iter().flat_map(|x| x.to_bits().to_le_bytes()));
        });
        self.for_each_run(n, |_, v| {
            out.extend(v.iter().flat_map(|x| x.to_bits().to_le_bytes()));
        });
        out
    }

    /// Replace the cache's contents by `n` positions from [`Self::export`] bytes.
    pub fn import(&mut self, bytes: &[u8], n: usize) -> Result<(), ModelError> {
        if bytes.len() != self.export_len(n) || n > self.n_ctx {
            return Err(ModelError::CacheMismatch(format!(
                "stored K/V of {} bytes does not hold {n} positions of this model \
                 ({} bytes) or exceeds the context ({})",
                bytes.len(),
                self.export_len(n),
                self.n_ctx
            )));
        }
        let run = n * self.head_dim;
        let per_layer = self.n_head_kv * self.n_ctx * self.head_dim;
        let (kb, vb) = bytes.split_at(bytes.len() / 2);
        for (dst, src) in [(&mut self.k, kb), (&mut self.v, vb)] {
            let mut chunks = src.chunks_exact(run * 2);
            for il in 0..self.n_layer {
                for h in 0..self.n_head_kv {
                    let at = il * per_layer + h * self.n_ctx * self.head_dim;
                    let chunk = chunks.next().expect("length checked");
                    // As u16 bits: a plain little-endian copy the compiler vectorizes.
                    let dst = dst[at..at + run].reinterpret_cast_mut();
                    for (d, s) in dst.iter_mut().zip(chunk.chunks_exact(2)) {
                        *d = u16::from_le_bytes([s[0], s[1]]);
                    }
                }
            }
        }
        self.len = n;
        Ok(())
    }

    /// Calls `f` with the K and V runs of the first `n` positions of every (layer,
    /// KV head), in export order.
    fn for_each_run(&self, n: usize, mut f: impl FnMut(&[f16], &[f16])) {
        let run = n * self.head_dim;
        let per_layer = self.n_head_kv * self.n_ctx * self.head_dim;
        for il in 0..self.n_layer {
            for h in 0..self.n_head_kv {
                let at = il * per_layer + h * self.n_ctx * self.head_dim;
                f(&self.k[at..at + run], &self.v[at..at + run]);
            }
        }
    }

    pub(crate) fn check_compatible(&self, c: &ModelConfig) -> Result<(), ModelError> {
        if (self.n_layer, self.n_head_kv, self.head_dim) != (c.n_layer, c.n_head_kv, c.head_dim) {
            return Err(ModelError::CacheMismatch(format!(
                "cache has {} layers × {} KV heads × {}, model {} × {} × {}",
                self.n_layer, self.n_head_kv, self.head_dim, c.n_layer, c.n_head_kv, c.head_dim
            )));
        }
        Ok(())
    }
}

/// Activations of one batch, reused across calls (grown, never shrunk).
#[derive(Default)]
pub(crate) struct Scratch {
    /// Residual stream, `n × n_embd`.
    pub x: Vec<f32>,
    /// Normalised input of a sub-layer, `n × n_embd`.
    pub xb: Vec<f32>,
    /// Output of a sub-layer's last projection, `n × n_embd`.
    pub proj: Vec<f32>,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    /// Attention output, `n × n_head × head_dim`.
    pub att: Vec<f32>,
    pub gate: Vec<f32>,
    pub up: Vec<f32>,
    /// RoPE cos/sin of one position.
    pub rope: Vec<f32>,
    /// Attention scratch, one per query head (at least one per thread).
    pub heads: Vec<Mutex<HeadScratch>>,
}

#[derive(Default)]
pub(crate) struct HeadScratch {
    /// One head's output for a block of query tokens, `tokens × head_dim`.
    pub out: Vec<f32>,
    /// Attention scores of one query.
    pub scores: Vec<f32>,
    /// Lane accumulators of the weighted sum of values, `lanes × head_dim`.
    pub acc: Vec<f32>,
    /// One query rounded through f16.
    pub query: Vec<f32>,
}

impl Scratch {
    /// Size every buffer for one pass over `seqs`; returns the pass's token count.
    pub(crate) fn prepare_pass(
        &mut self,
        c: &ModelConfig,
        seqs: &[crate::PassSeq<'_, '_>],
    ) -> usize {
        let n = seqs.iter().map(|q| q.tokens.len()).sum();
        let n_ctx = seqs.iter().map(|q| q.cache.n_ctx).max().unwrap_or(0);
        let longest = seqs.iter().map(|q| q.tokens.len()).max().unwrap_or(0);
        self.prepare(c, n, longest, n_ctx);
        n
    }

    /// Size every buffer for a batch of `n` tokens, attention for at most
    /// `per_seq` queries of one sequence over `n_ctx` positions.
    pub fn prepare(&mut self, c: &ModelConfig, n: usize, per_seq: usize, n_ctx: usize) {
        self.x.resize(n * c.n_embd, 0.0);
        self.xb.resize(n * c.n_embd, 0.0);
        self.proj.resize(n * c.n_embd, 0.0);
        self.q.resize(n * c.q_dim(), 0.0);
        self.k.resize(n * c.kv_dim(), 0.0);
        self.v.resize(n * c.kv_dim(), 0.0);
        self.att.resize(n * c.q_dim(), 0.0);
        self.gate.resize(n * c.n_ff, 0.0);
        self.up.resize(n * c.n_ff, 0.0);
        self.rope.resize(c.rope_dim, 0.0);
        if self.heads.len() != c.n_head {
            self.heads = (0..c.n_head)
                .map(|_| Mutex::new(HeadScratch::default()))
                .collect();
        }
        for h in &mut self.heads {
            let h = h.get_mut().unwrap_or_else(|e| e.into_inner());
            h.out.resize(per_seq * c.head_dim, 0.0);
            h.scores.resize(n_ctx, 0.0);
            h.acc.resize(64 * c.head_dim, 0.0);
            h.query.resize(c.head_dim, 0.0);
        }
    }
}
