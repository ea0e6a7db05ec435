//! Per-sequence state: the K/V of every processed position, plus the scratch buffers
//! a forward pass reuses so decoding a token allocates nothing but its logits.

use std::sync::{Arc, Mutex};

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
    /// A stored prefix read in place for the first positions (see [`Self::share`]);
    /// `k`/`v` then hold only the positions after it.
    pub(crate) shared: Option<SharedPrefix>,
    pub(crate) scratch: Scratch,
}

/// Stored K/V in [`KvCache::export`]'s layout, kept by another owner (a snapshot's
/// mapping) that a cache reads in place rather than copying.
pub trait KvSource: Send + Sync {
    /// The stored bytes: little-endian f16, 2-byte aligned.
    fn kv_bytes(&self) -> &[u8];
}

/// The first `len` positions of a cache, read from `src`.
#[derive(Clone)]
pub(crate) struct SharedPrefix {
    src: Arc<dyn KvSource>,
    pub(crate) len: usize,
}

impl SharedPrefix {
    /// K and V of layer `il`, `[kv_head][pos][head_dim]` with `len` positions per head.
    pub(crate) fn layer(&self, il: usize, n_head_kv: usize, head_dim: usize) -> (&[f16], &[f16]) {
        let all = thaw_kernels::attn::f16_view(self.src.kv_bytes()).unwrap_or(&[]);
        let (k, v) = all.split_at(all.len() / 2);
        let per_layer = n_head_kv * self.len * head_dim;
        let at = il * per_layer..(il + 1) * per_layer;
        (&k[at.clone()], &v[at])
    }
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
            shared: None,
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
        if self.shared.as_ref().is_some_and(|p| self.len < p.len) {
            // Positions after `len` will be overwritten, and the stored prefix cannot
            // be: copy what is kept of it into the cache and stop reading it.
            self.unshare(self.len);
        }
    }

    pub fn clear(&mut self) {
        self.len = 0;
        self.shared = None;
    }

    /// Positions read in place from a stored prefix ([`Self::share`]), 0 if none.
    pub fn shared_len(&self) -> usize {
        self.shared.as_ref().map_or(0, |p| p.len)
    }

    /// Start from `n` positions of stored K/V ([`Self::export`] bytes of `src`) read in
    /// place: nothing is copied, so a session starting from a long stored prefix costs
    /// no time proportional to it before attention reads it. The cache then holds
    /// those `n` positions; later ones are written to its own storage.
    pub fn share(&mut self, src: Arc<dyn KvSource>, n: usize) -> Result<(), ModelError> {
        let bytes = src.kv_bytes();
        if bytes.len() != self.export_len(n)
            || n > self.n_ctx
            || thaw_kernels::attn::f16_view(bytes).is_none()
        {
            return Err(ModelError::CacheMismatch(format!(
                "stored K/V of {} bytes does not hold {n} positions of this model \
                 ({} bytes), exceeds the context ({}) or is not 2-byte aligned",
                bytes.len(),
                self.export_len(n),
                self.n_ctx
            )));
        }
        self.shared = Some(SharedPrefix { src, len: n });
        self.len = n;
        Ok(())
    }

    /// Copy the first `n` positions of the shared prefix into the cache's own
    /// storage and stop reading the prefix.
    fn unshare(&mut self, n: usize) {
        let Some(p) = self.shared.take() else {
            return;
        };
        self.copy_stored(&p, n.min(p.len));
    }

    /// Positions `0..n` (n ≤ `p.len`) of stored prefix `p` into the own storage.
    fn copy_stored(&mut self, p: &SharedPrefix, n: usize) {
        let (hd, nkv) = (self.head_dim, self.n_head_kv);
        let per_layer = nkv * self.n_ctx * hd;
        for il in 0..self.n_layer {
            let (sk, sv) = p.layer(il, nkv, hd);
            for h in 0..nkv {
                let at = il * per_layer + h * self.n_ctx * hd;
                let src = h * p.len * hd..(h * p.len + n) * hd;
                self.k[at..at + n * hd].copy_from_slice(&sk[src.clone()]);
                self.v[at..at + n * hd].copy_from_slice(&sv[src]);
            }
        }
    }

    /// Replace the contents by the first `n` positions of `src` (same model): its
    /// stored prefix, when `n` covers it, is shared (read in place as `src` does), the
    /// rest copied layer by layer. No intermediate buffer.
    pub fn copy_prefix(&mut self, src: &KvCache, n: usize) -> Result<(), ModelError> {
        let shape = |c: &KvCache| (c.n_layer, c.n_head_kv, c.head_dim);
        if shape(self) != shape(src) || n > src.len || n > self.n_ctx {
            return Err(ModelError::CacheMismatch(format!(
                "cannot copy {n} positions of a {}-position cache shaped {:?} into one of \
                 {} positions shaped {:?}",
                src.len,
                shape(src),
                self.n_ctx,
                shape(self)
            )));
        }
        let (hd, nkv) = (self.head_dim, self.n_head_kv);
        let (own, theirs) = (nkv * self.n_ctx * hd, nkv * src.n_ctx * hd);
        self.shared = None;
        let mut from = 0;
        if let Some(p) = &src.shared {
            if n >= p.len {
                self.shared = Some(p.clone());
                from = p.len;
            } else {
                self.copy_stored(p, n);
                from = n;
            }
        }
        for il in 0..self.n_layer {
            for h in 0..nkv {
                let dst = il * own + h * self.n_ctx * hd;
                let s0 = il * theirs + h * src.n_ctx * hd;
                let run = from * hd..n * hd;
                self.k[dst + run.start..dst + run.end]
                    .copy_from_slice(&src.k[s0 + run.start..s0 + run.end]);
                self.v[dst + run.start..dst + run.end]
                    .copy_from_slice(&src.v[s0 + run.start..s0 + run.end]);
            }
        }
        self.len = n;
        Ok(())
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
        let (hd, nkv) = (self.head_dim, self.n_head_kv);
        let plen = self.shared_len().min(n);
        let per_layer = nkv * self.n_ctx * hd;
        for (which, own) in [(0, &self.k), (1, &self.v)] {
            for il in 0..self.n_layer {
                let stored = self.shared.as_ref().map(|p| {
                    let (k, v) = p.layer(il, nkv, hd);
                    (if which == 0 { k } else { v }, p.len)
                });
                for h in 0..nkv {
                    let at = il * per_layer + h * self.n_ctx * hd;
                    // Positions below `plen` live in the stored prefix, the rest here.
                    let head = stored.map_or(&[][..], |(x, len)| &x[h * len * hd..][..plen * hd]);
                    let tail = &own[at + plen * hd..at + n * hd];
                    for x in head.iter().chain(tail) {
                        out.extend_from_slice(&x.to_bits().to_le_bytes());
                    }
                }
            }
        }
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
        self.shared = None;
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
    /// Mixture-of-experts buffers (empty for dense models).
    pub moe: crate::moe::MoeScratch,
}

/// One attention task's buffers: a block of query rows (the query heads sharing one
/// K/V head, for a block of tokens) over the block's span of cache positions.
#[derive(Default)]
pub(crate) struct HeadScratch {
    /// The rows' outputs, `rows × head_dim`.
    pub out: Vec<f32>,
    /// Scores, then probabilities, `rows × span`.
    pub scores: Vec<f32>,
    /// Lane accumulators of the weighted sums of values, `rows × lanes × head_dim`.
    pub acc: Vec<f32>,
    /// The query rows rounded through f16, `rows × head_dim`.
    pub query: Vec<f32>,
    /// Each row's unmasked positions, relative to the span's start.
    pub rows: Vec<std::ops::Range<usize>>,
    /// The same clipped to one part of the span (stored prefix or own cache).
    pub part_rows: Vec<std::ops::Range<usize>>,
}

impl Scratch {
    /// Size every buffer for one pass over `seqs`; returns the pass's token count.
    pub(crate) fn prepare_pass(
        &mut self,
        c: &ModelConfig,
        seqs: &[crate::PassSeq<'_, '_>],
    ) -> usize {
        let n = seqs.iter().map(|q| q.tokens.len()).sum();
        self.prepare(c, n);
        n
    }

    /// Keeps only batch rows `rows` (ascending) of the residual stream `x`, moved to
    /// the front, and sizes every buffer for them: the last layer's feed-forward block
    /// and the output head need only the rows whose logits are read (llama.cpp's
    /// `inp_out_ids`). Returns their number.
    pub(crate) fn keep_rows(&mut self, c: &ModelConfig, rows: &[usize]) -> usize {
        let e = c.n_embd;
        for (i, &r) in rows.iter().enumerate() {
            debug_assert!(r >= i && (i == 0 || r > rows[i - 1]), "rows not ascending");
            if r != i {
                self.x.copy_within(r * e..(r + 1) * e, i * e);
            }
        }
        self.prepare(c, rows.len());
        rows.len()
    }

    /// Size every buffer for a batch of `n` tokens. Attention tasks size their own
    /// scratch (query rows × span, which only they know) and keep its capacity.
    pub fn prepare(&mut self, c: &ModelConfig, n: usize) {
        self.x.resize(n * c.n_embd, 0.0);
        self.xb.resize(n * c.n_embd, 0.0);
        self.proj.resize(n * c.n_embd, 0.0);
        self.q.resize(n * c.q_dim(), 0.0);
        self.k.resize(n * c.kv_dim(), 0.0);
        self.v.resize(n * c.kv_dim(), 0.0);
        self.att.resize(n * c.q_dim(), 0.0);
        // A mixture of experts sizes its own buffers per expert batch.
        let ff = if c.moe.is_some() { 0 } else { c.n_ff };
        self.gate.resize(n * ff, 0.0);
        self.up.resize(n * ff, 0.0);
        self.rope.resize(c.rope_dim, 0.0);
        if self.heads.len() != c.n_head {
            self.heads = (0..c.n_head)
                .map(|_| Mutex::new(HeadScratch::default()))
                .collect();
        }
    }
}
