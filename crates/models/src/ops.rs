//! The math shared by the model families: RMSNorm, RoPE, softmax, causal attention
//! over the KV cache, activations. Rows are contiguous: a batch of `n` vectors of
//! width `d` is one `n × d` slice.

use std::sync::{Mutex, MutexGuard, TryLockError};

use half::f16;
use half::slice::HalfFloatSliceExt;
use thaw_kernels::ThreadPool;
use thaw_kernels::attn::QueryWeights;

use crate::RopeStyle;
use crate::kv_cache::HeadScratch;

/// `out[r] = x[r] / rms(x[r]) * w` for each row of width `w.len()`. Squares in f32 and
/// sums in f64 as ggml does.
pub fn rmsnorm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let scale = rms_scale(xr, eps);
        for ((o, &v), &g) in or.iter_mut().zip(xr).zip(w) {
            *o = v * scale * g;
        }
    }
}

/// [`rmsnorm`] in place (per-head Q/K norms).
pub fn rmsnorm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    let d = w.len();
    for xr in x.chunks_exact_mut(d) {
        let scale = rms_scale(xr, eps);
        for (v, &g) in xr.iter_mut().zip(w) {
            *v = *v * scale * g;
        }
    }
}

fn rms_scale(x: &[f32], eps: f32) -> f32 {
    // ggml: `sum += (ggml_float)(x[i] * x[i])`: the square is rounded to f32 first.
    let sum: f64 = x.iter().map(|&v| f64::from(v * v)).sum();
    let mean = (sum / x.len() as f64) as f32;
    1.0 / (mean + eps).sqrt()
}

/// RoPE frequencies the way ggml derives them: pair `i` of position `p` turns by
/// `p · theta_scale^i / factor[i]`, the power built by repeated f32 multiplication
/// (`theta_scale = base^(-2/n_rot)`) so angles round exactly as llama.cpp's do.
#[derive(Debug, Clone)]
pub struct RopeFreqs {
    pub n_pairs: usize,
    pub theta_scale: f32,
    /// Per-pair divisors (Llama 3.1 `rope_freqs`), empty when absent.
    pub factors: Vec<f32>,
    /// YaRN's ramp between extrapolated and interpolated pairs, and its magnitude.
    pub yarn: Option<YarnRamp>,
}

/// YaRN for one RoPE base (ggml's `rope_yarn_corr_dims` and `rope_yarn`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct YarnRamp {
    /// Correction dims: pairs at or below `low` keep the trained rotation, at or above
    /// `high` are interpolated, a linear ramp between.
    pub low: f32,
    pub high: f32,
    pub ext_factor: f32,
    /// cos/sin multiplier: `attn_factor · (1 + 0.1 ln(1 / freq_scale))`.
    pub mscale: f32,
}

impl YarnRamp {
    /// For RoPE over `n_rot` dims with `base`, positions scaled by `freq_scale`.
    pub fn new(y: &crate::config::Yarn, base: f32, n_rot: usize, freq_scale: f32) -> Self {
        let dim = |beta: f32| {
            n_rot as f32 * (y.orig_ctx as f32 / (beta * 2.0 * std::f32::consts::PI)).ln()
                / (2.0 * base.ln())
        };
        let low = dim(y.beta_fast).floor().max(0.0);
        let high = dim(y.beta_slow).ceil().min(n_rot as f32 - 1.0);
        let mut mscale = y.attn_factor;
        if y.ext_factor != 0.0 {
            mscale *= 1.0 + 0.1 * (1.0 / freq_scale).ln();
        }
        YarnRamp {
            low,
            high,
            ext_factor: y.ext_factor,
            mscale,
        }
    }

    /// How much of pair `i`'s angle stays extrapolated (1 below `low`, 0 above `high`).
    fn mix(&self, i: usize) -> f32 {
        let y = (i as f32 - self.low) / (self.high - self.low).max(0.001);
        (1.0 - y.clamp(0.0, 1.0)) * self.ext_factor
    }
}

/// [`RopeFreqs`] for `base` over the first `n_rot` dims.
pub fn rope_inv_freq(base: f32, n_rot: usize) -> RopeFreqs {
    RopeFreqs {
        n_pairs: n_rot / 2,
        theta_scale: base.powf(-2.0 / n_rot as f32),
        factors: Vec::new(),
        yarn: None,
    }
}

/// Rotate the first `2 * freqs.n_pairs` dims of every head of every token in `x`
/// (`n × n_heads × head_dim`). Token `t` is at position `pos0 + t`; `cs` is scratch
/// for one position's cos/sin (`2 * freqs.n_pairs` long).
#[allow(clippy::too_many_arguments)]
pub fn rope(
    x: &mut [f32],
    n_heads: usize,
    head_dim: usize,
    pos0: usize,
    freq_scale: f32,
    freqs: &RopeFreqs,
    style: RopeStyle,
    cs: &mut [f32],
) {
    let half = freqs.n_pairs;
    let (cos, sin) = cs[..2 * half].split_at_mut(half);
    for (t, xt) in x.chunks_exact_mut(n_heads * head_dim).enumerate() {
        let mut theta = (pos0 + t) as f32;
        for i in 0..half {
            let ff = freqs.factors.get(i).copied().unwrap_or(1.0);
            let extrap = theta / ff;
            let (s, c) = match &freqs.yarn {
                None => (freq_scale * extrap).sin_cos(),
                Some(y) => {
                    let interp = freq_scale * extrap;
                    let mix = y.mix(i);
                    let (s, c) = (interp * (1.0 - mix) + extrap * mix).sin_cos();
                    (s * y.mscale, c * y.mscale)
                }
            };
            cos[i] = c;
            sin[i] = s;
            theta *= freqs.theta_scale;
        }
        for head in xt.chunks_exact_mut(head_dim) {
            for i in 0..half {
                let (a, b) = match style {
                    RopeStyle::Normal => (2 * i, 2 * i + 1),
                    RopeStyle::Neox => (i, i + half),
                };
                let (x0, x1) = (head[a], head[b]);
                // ggml's C is compiled with FP contraction: the first product is fused.
                head[a] = x0.mul_add(cos[i], -(x1 * sin[i]));
                head[b] = x0.mul_add(sin[i], x1 * cos[i]);
            }
        }
    }
}

pub use thaw_kernels::attn::{F16Sum as F16Order, swiglu};

/// `gelu(gate) * up` with the tanh approximation, written into `gate` (GeGLU). Like
/// ggml, gelu is read from a table indexed by the input rounded to f16 (the result
/// stored as f16), except for inputs beyond ±10.
pub fn geglu(gate: &mut [f32], up: &[f32]) {
    let table = gelu_table();
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = *g;
        *g = if x <= -10.0 {
            0.0
        } else if x >= 10.0 {
            x * u
        } else {
            table[usize::from(f16::from_f32(x).to_bits())].to_f32() * u
        };
    }
}

/// ggml's `ggml_table_gelu_f16`: gelu of every f16 value, rounded to f16.
fn gelu_table() -> &'static [f16] {
    static TABLE: std::sync::OnceLock<Vec<f16>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|bits| f16::from_f32(gelu(f16::from_bits(bits).to_f32())))
            .collect()
    })
}

fn gelu(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    // ggml's C is compiled with FP contraction: `1 + a·x·x` is one FMA.
    let inner = (0.044_715 * x).mul_add(x, 1.0);
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * inner).tanh())
}

/// `x += y` element-wise (residual connections).
pub fn add_assign(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Add `bias` to every row of `x`.
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        add_assign(row, bias);
    }
}

/// Copy K and V of `n` new tokens (`n × n_head_kv × head_dim`) into one layer of the
/// cache (`[kv_head][pos][head_dim]`, `n_ctx` positions per head) at `pos0..`.
#[allow(clippy::too_many_arguments)]
pub fn store_kv(
    k_layer: &mut [f16],
    v_layer: &mut [f16],
    k: &[f32],
    v: &[f32],
    n_head_kv: usize,
    head_dim: usize,
    n_ctx: usize,
    pos0: usize,
) {
    let kv_dim = n_head_kv * head_dim;
    for (t, (kt, vt)) in k
        .chunks_exact(kv_dim)
        .zip(v.chunks_exact(kv_dim))
        .enumerate()
    {
        for h in 0..n_head_kv {
            let dst = (h * n_ctx + pos0 + t) * head_dim;
            let src = h * head_dim..(h + 1) * head_dim;
            k_layer[dst..dst + head_dim].convert_from_f32_slice(&kt[src.clone()]);
            v_layer[dst..dst + head_dim].convert_from_f32_slice(&vt[src]);
        }
    }
}

/// The shape of one attention call.
pub struct AttnShape {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    /// Positions per head in the cache layer.
    pub n_ctx: usize,
    /// Position of the first query token.
    pub pos0: usize,
    /// Multiplier of Q·K.
    pub scale: f32,
    /// Attend only to the last `window` positions (the query's included).
    pub window: Option<usize>,
    /// `cap · tanh(score / cap)` on the scaled scores before the softmax (Gemma 2).
    pub softcap: Option<f32>,
}

/// Most query rows (query heads sharing a K/V head × tokens) per attention task:
/// each widened key and value row serves all of them (the kernels run ~2× faster per
/// row at 18–33 rows than at 6), while their scores and accumulators stay in L2.
const ATTN_ROWS: usize = 32;

/// Attention tasks per thread to aim for when the rows allow it: tasks are handed out
/// one at a time, so a thread finishes at most one task after the others.
const ATTN_TASKS_PER_THREAD: usize = 3;

/// The first positions of a layer's K/V when they are read in place from a stored
/// prompt prefix (a snapshot's mapping) instead of the session's cache: K and V laid
/// out `[kv_head][pos][head_dim]` with `len` positions per head.
#[derive(Clone, Copy)]
pub struct SharedKv<'a> {
    pub k: &'a [f16],
    pub v: &'a [f16],
    pub len: usize,
}

/// Causal attention of `n` query tokens (`q`: `n × n_head × head_dim`, already
/// rotated and with their own K/V already in the cache) over cache positions
/// `0..=pos`. (head, block of queries) tasks run in parallel; writes `out`
/// (`n × n_head × head_dim`).
///
/// Rounds like llama.cpp's default CPU path (no flash attention, f16 cache): each
/// query is rounded to f16 before `Q·K` (ggml converts it to K's dot type), scores are
/// scaled and soft-maxed in f32, and the probabilities are rounded to f16 before the
/// weighted sum of V (ggml's `V·KQ` matmul converts KQ to f16). These models are
/// sensitive enough that skipping either rounding moves logits by ~0.1–0.5. The
/// SIMD kernels of `thaw_kernels::attn` give results bit-identical to
/// [`attention_reference`].
///
/// Positions below `shared.len` are read from `shared` (a stored prefix used in
/// place) and the rest from `k_layer`/`v_layer`, with the same result as one cache
/// holding both: scores do not depend on where a key lives, and the weighted sum
/// feeds each accumulator lane its rows in the same order across the two ranges.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    pool: &ThreadPool,
    s: &AttnShape,
    shared: Option<SharedKv<'_>>,
    k_layer: &[f16],
    v_layer: &[f16],
    q: &[f32],
    heads: &[Mutex<HeadScratch>],
    out: &mut [f32],
) {
    let hd = s.head_dim;
    let q_dim = s.n_head * hd;
    let n = q.len() / q_dim;
    let group = s.n_head / s.n_head_kv;
    let order = if n == 1 {
        F16Order::VecDot
    } else {
        F16Order::TinyBlas
    };
    let lanes = order.lanes();
    if !hd.is_multiple_of(lanes) {
        match shared {
            None => attention_reference(s, k_layer, v_layer, q, out),
            Some(sh) => {
                let (k, v) = merge_shared(s, sh, k_layer, v_layer);
                attention_reference(s, &k, &v, q, out);
            }
        }
        return;
    }
    let no_shared = SharedKv {
        k: &[],
        v: &[],
        len: 0,
    };
    let sh = shared.unwrap_or(no_shared);
    let span = s.pos0 + 1 - s.window.map_or(0, |w| (s.pos0 + 1).saturating_sub(w));
    if n == 1 && pool.n_threads() > 1 && span >= crate::attn_decode::MIN_SPAN {
        crate::attn_decode::attention_one_token(pool, s, sh, k_layer, v_layer, q, out);
        return;
    }
    // One task per (K/V head, block of query tokens) covers the `group` query heads
    // that share the K/V head, so each key and value row is widened once for all of
    // their queries. Blocks hold at most ATTN_ROWS query rows.
    let target = ATTN_TASKS_PER_THREAD * pool.n_threads();
    let block = n
        .div_ceil(target.div_ceil(s.n_head_kv))
        .clamp(1, (ATTN_ROWS / group).max(1));
    let n_chunks = n.div_ceil(block);
    // Too few tasks that way (a decode step, few K/V heads: Gemma 3 has one) leaves
    // threads idle: then a group's heads are split across tasks.
    let per_task = group.div_ceil(target.div_ceil(s.n_head_kv * n_chunks).clamp(1, group));
    let splits = group.div_ceil(per_task);
    let out = Mutex::new(out);
    pool.run(s.n_head_kv * splits * n_chunks, |i| {
        // Later blocks attend to more positions: hand them out first.
        let chunk = n_chunks - 1 - i / (s.n_head_kv * splits);
        let (kvh, part) = (i % (s.n_head_kv * splits) / splits, i % splits);
        let mine = part * per_task..((part + 1) * per_task).min(group);
        let gh = mine.len();
        let ts = chunk * block..((chunk + 1) * block).min(n);
        let mut local = None;
        let mut guard = free_scratch(heads);
        let sc: &mut HeadScratch = match guard.as_deref_mut() {
            Some(sc) => sc,
            None => local.insert(HeadScratch::default()),
        };
        // Query rows token-major: row (ti, g) is token ts.start + ti, head
        // kvh·group + mine.start + g.
        let m = ts.len() * gh;
        let span = |t: usize| {
            let pos = s.pos0 + t;
            s.window.map_or(0, |w| (pos + 1).saturating_sub(w))..pos + 1
        };
        let lo = span(ts.start).start;
        let hi = s.pos0 + ts.end;
        let width = hi - lo;
        sc.query.resize(m * hd, 0.0);
        sc.scores.resize(m * width, 0.0);
        sc.acc.resize(m * lanes * hd, 0.0);
        sc.out.resize(m * hd, 0.0);
        sc.rows.clear();
        for (ti, t) in ts.clone().enumerate() {
            for g in 0..gh {
                let h = kvh * group + mine.start + g;
                let row = &mut sc.query[(ti * gh + g) * hd..][..hd];
                for (d, &v) in row.iter_mut().zip(&q[t * q_dim + h * hd..][..hd]) {
                    *d = round_f16(v);
                }
                let r = span(t);
                sc.rows.push(r.start - lo..r.end - lo);
            }
        }
        // Keys below `sh.len` come from the stored prefix, the rest from the cache.
        let split = sh.len.clamp(lo, hi);
        let parts = [
            (sh.k, sh.v, kvh * sh.len * hd, lo..split),
            (k_layer, v_layer, kvh * s.n_ctx * hd, split..hi),
        ];
        // Every query row is scored against the block's whole span; a row's masked
        // keys (later tokens of the block, or before its window) are ignored below.
        for (k, _, base, r) in &parts {
            if !r.is_empty() {
                let keys = &k[base + r.start * hd..base + r.end * hd];
                let out = &mut sc.scores[r.start - lo..];
                thaw_kernels::attn::f16_scores_many(
                    &sc.query, keys, hd, order, s.scale, out, width,
                );
            }
        }
        for (row, r) in sc.scores.chunks_exact_mut(width).zip(&sc.rows) {
            let w = &mut row[r.clone()];
            if let Some(cap) = s.softcap {
                softcap(w, cap);
            }
            // ggml rounds the probabilities to f16 before the weighted sum.
            thaw_kernels::attn::softmax_slots_f16(w, lo + r.start);
        }
        sc.acc.fill(0.0);
        for (_, v, base, r) in &parts {
            if !r.is_empty() {
                let vals = &v[base + r.start * hd..base + r.end * hd];
                let off = r.start - lo;
                // Each row's own range, clipped to this part and relative to it.
                let clip = |x: usize| x.clamp(off, off + r.len()) - off;
                sc.part_rows.clear();
                sc.part_rows
                    .extend(sc.rows.iter().map(|q| clip(q.start)..clip(q.end)));
                let qw = QueryWeights {
                    w: &sc.scores[off..],
                    stride: width,
                    rows: &sc.part_rows,
                };
                thaw_kernels::attn::f16_accumulate(&qw, vals, hd, r.start, order, &mut sc.acc);
            }
        }
        for (o, acc) in sc
            .out
            .chunks_exact_mut(hd)
            .zip(sc.acc.chunks_exact(lanes * hd))
        {
            thaw_kernels::attn::f16_reduce_lanes(acc, order, o);
        }
        let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
        for (ti, t) in ts.enumerate() {
            let dst = &mut out[t * q_dim + (kvh * group + mine.start) * hd..][..gh * hd];
            dst.copy_from_slice(&sc.out[ti * gh * hd..][..gh * hd]);
        }
    });
}

/// A layer's K and V with the stored prefix copied in (the reference path's input).
fn merge_shared(
    s: &AttnShape,
    sh: SharedKv<'_>,
    k_layer: &[f16],
    v_layer: &[f16],
) -> (Vec<f16>, Vec<f16>) {
    let hd = s.head_dim;
    let (mut k, mut v) = (k_layer.to_vec(), v_layer.to_vec());
    for h in 0..s.n_head_kv {
        let (dst, src) = (h * s.n_ctx * hd, h * sh.len * hd);
        let run = sh.len * hd;
        k[dst..dst + run].copy_from_slice(&sh.k[src..src + run]);
        v[dst..dst + run].copy_from_slice(&sh.v[src..src + run]);
    }
    (k, v)
}

/// Some scratch no other task holds (there are as many as heads, and one task per
/// thread runs at a time), or `None` if every one is taken.
fn free_scratch(heads: &[Mutex<HeadScratch>]) -> Option<MutexGuard<'_, HeadScratch>> {
    heads.iter().find_map(|m| match m.try_lock() {
        Ok(g) => Some(g),
        Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    })
}

/// The scalar reference of [`attention`] (single-threaded, f16 widened up front,
/// ggml's lane order spelled out): the specification the SIMD path is tested against.
pub fn attention_reference(
    s: &AttnShape,
    k_layer: &[f16],
    v_layer: &[f16],
    q: &[f32],
    out: &mut [f32],
) {
    let hd = s.head_dim;
    let q_dim = s.n_head * hd;
    let n = q.len() / q_dim;
    let group = s.n_head / s.n_head_kv;
    let n_kv = s.pos0 + n;
    let order = if n == 1 {
        F16Order::VecDot
    } else {
        F16Order::TinyBlas
    };
    let mut keys = vec![0.0f32; n_kv * hd];
    let mut vals = vec![0.0f32; n_kv * hd];
    let mut query = vec![0.0f32; hd];
    let mut scores = vec![0.0f32; n_kv];
    let width = order.lanes();
    let mut lanes = vec![0.0f32; hd * width];
    for h in 0..s.n_head {
        let base = (h / group) * s.n_ctx * hd;
        k_layer[base..base + n_kv * hd].convert_to_f32_slice(&mut keys);
        v_layer[base..base + n_kv * hd].convert_to_f32_slice(&mut vals);
        for t in 0..n {
            let pos = s.pos0 + t;
            let lo = s.window.map_or(0, |w| (pos + 1).saturating_sub(w));
            let qh = &q[t * q_dim + h * hd..t * q_dim + (h + 1) * hd];
            for (d, &v) in query.iter_mut().zip(qh) {
                *d = round_f16(v);
            }
            let sc = &mut scores[..pos + 1 - lo];
            for (j, score) in sc.iter_mut().enumerate() {
                let kj = &keys[(lo + j) * hd..(lo + j + 1) * hd];
                *score = ggml_f16_dot(&query, kj, order) * s.scale;
            }
            if let Some(cap) = s.softcap {
                softcap(sc, cap);
            }
            thaw_kernels::attn::softmax_scalar_slots(sc, lo);
            // Output dim d sums w_j * v_j[d] over cache slots j in ggml's lane order:
            // slot j feeds lane j % 16 (batch) or j % 64 (one token); see F16Order.
            lanes.fill(0.0);
            for (j, &w) in sc.iter().enumerate() {
                let w = round_f16(w);
                let slot = (lo + j) % width;
                let vj = &vals[(lo + j) * hd..(lo + j + 1) * hd];
                for (d, &b) in vj.iter().enumerate() {
                    // f16 × f16 is exact in f32, so this add is ggml's FMA.
                    lanes[d * width + slot] += w * b;
                }
            }
            let o = &mut out[t * q_dim + h * hd..t * q_dim + (h + 1) * hd];
            for (d, od) in o.iter_mut().enumerate() {
                *od = order.reduce(&lanes[d * width..(d + 1) * width]);
            }
        }
    }
}

/// Dot product of f16-valued f32 vectors (exact products) in ggml's order `order`.
/// Lengths that are not whole steps fall back to [`dot`].
pub fn ggml_f16_dot(a: &[f32], b: &[f32], order: F16Order) -> f32 {
    let w = order.lanes();
    if !a.len().is_multiple_of(w) {
        return dot(a, b);
    }
    let mut acc = [0.0f32; 64];
    for (ca, cb) in a.chunks_exact(w).zip(b.chunks_exact(w)) {
        for i in 0..w {
            acc[i] += ca[i] * cb[i];
        }
    }
    order.reduce(&acc[..w])
}

/// `x` rounded to the nearest f16 (ties to even), as f32.
pub fn round_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// Dot product with 8 independent accumulators (lets the compiler vectorise).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `cap · tanh(x / cap)` in place.
pub fn softcap(x: &mut [f32], cap: f32) {
    // As ggml: scaled by the reciprocal (not divided), tanhf, scaled back.
    let inv = 1.0 / cap;
    for v in x.iter_mut() {
        *v = (*v * inv).tanh() * cap;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attention_tests_pass_in_every_kernel_set() {
        // The attention paths dispatch on the kernel set chosen for the process.
        thaw_kernels::rerun_tests_in_other_kernel_sets(&[
            "ops::tests::attention",
            "ops::tests::one_token",
            "--skip",
            "attention_tests_pass_in_every_kernel_set",
        ]);
    }

    #[test]
    fn softmax_sums_to_one_and_orders() {
        let mut x = vec![1.0, 2.0, 3.0, -1000.0];
        thaw_kernels::attn::softmax_slots(&mut x, 0);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[2] > x[1] && x[1] > x[0] && x[3] == 0.0);
        assert!((x[2] / x[1] - std::f32::consts::E).abs() < 1e-4);
    }

    #[test]
    fn rmsnorm_gives_unit_rms() {
        let x = vec![3.0, -4.0, 0.0, 5.0];
        let w = vec![1.0; 4];
        let mut out = vec![0.0; 4];
        rmsnorm(&x, &w, 0.0, &mut out);
        let rms = (out.iter().map(|v| v * v).sum::<f32>() / 4.0).sqrt();
        assert!((rms - 1.0).abs() < 1e-6);
        assert!((out[0] / out[1] + 0.75).abs() < 1e-6);
    }

    #[test]
    fn rope_modes_rotate_the_right_pairs_and_keep_norms() {
        let inv = rope_inv_freq(10_000.0, 4);
        let mut cs = vec![0.0; 4];
        let base: Vec<f32> = vec![1.0, 2.0, 3.0, 4.0];
        // Position 0 is the identity.
        let mut x = base.clone();
        rope(&mut x, 1, 4, 0, 1.0, &inv, RopeStyle::Normal, &mut cs);
        assert_eq!(x, base);
        // Position 1, pair 0 has frequency 1: normal rotates (x0, x1), neox (x0, x2).
        let (s, c) = 1.0f32.sin_cos();
        let mut n = base.clone();
        rope(&mut n, 1, 4, 1, 1.0, &inv, RopeStyle::Normal, &mut cs);
        assert!((n[0] - (c - 2.0 * s)).abs() < 1e-6 && (n[1] - (s + 2.0 * c)).abs() < 1e-6);
        let mut x = base.clone();
        rope(&mut x, 1, 4, 1, 1.0, &inv, RopeStyle::Neox, &mut cs);
        assert!((x[0] - (c - 3.0 * s)).abs() < 1e-6 && (x[2] - (s + 3.0 * c)).abs() < 1e-6);
        let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
        assert!((norm(&x) - norm(&base)).abs() < 1e-4 && (norm(&n) - norm(&base)).abs() < 1e-4);
    }

    #[test]
    fn activations_match_closed_forms() {
        let mut g = vec![0.0, 1.0, -2.0];
        swiglu(&mut g, &[1.0, 2.0, 1.0]);
        assert_eq!(g[0], 0.0);
        assert!((g[1] - 2.0 / (1.0 + (-1.0f32).exp())).abs() < 1e-6);
        let mut g = vec![0.0, 1.0, 10.0];
        geglu(&mut g, &[1.0, 1.0, 1.0]);
        assert_eq!(g[0], 0.0);
        // tanh-approximate gelu(1), through ggml's f16 table.
        assert_eq!(g[1], f16::from_f32(0.841_192).to_f32());
        assert!((g[2] - 10.0).abs() < 1e-4);
    }

    /// splitmix64 in [-1, 1).
    fn rand(state: &mut u64) -> f32 {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// `n` random f16 values in (-2, 2), the K/V cache's type.
    fn halves(state: &mut u64, n: usize) -> Vec<f16> {
        (0..n).map(|_| f16::from_f32(rand(state) * 2.0)).collect()
    }

    #[test]
    fn attention_matches_the_scalar_reference_bit_for_bit() {
        let pool = ThreadPool::new(2);
        let mut st = 7u64;
        // head_dim 40 is not a whole number of lanes (the reference path itself).
        for (n_head, n_head_kv, hd) in
            [(4, 2, 64), (3, 1, 256), (4, 1, 256), (2, 2, 40), (9, 3, 64)]
        {
            let n_ctx = 90;
            for (pos0, n, window) in [
                (0, 1, None),
                (0, 37, None),
                (20, 1, None),
                (53, 1, Some(7)),
                (11, 33, Some(20)),
                (70, 20, None),
            ] {
                let size = n_head_kv * n_ctx * hd;
                let (k, v) = (halves(&mut st, size), halves(&mut st, size));
                let q: Vec<f32> = (0..n * n_head * hd).map(|_| rand(&mut st) * 3.0).collect();
                let shape = test_shape((n_head, n_head_kv, hd), n_ctx, pos0, window);
                let what = format!(
                    "heads {n_head}/{n_head_kv} hd {hd} pos0 {pos0} n {n} window {window:?}"
                );
                matches_reference(&pool, &shape, None, (&k, &v), (&k, &v), &q, &what);
                // Gemma 2's soft-capped scores.
                let mut capped = test_shape((n_head, n_head_kv, hd), n_ctx, pos0, window);
                capped.softcap = Some(0.7);
                let what = format!("{what} softcap 0.7");
                matches_reference(&pool, &capped, None, (&k, &v), (&k, &v), &q, &what);
            }
        }
    }

    /// The shape of a test call: `(n_head, n_head_kv, head_dim)`, the usual scale.
    fn test_shape(
        (n_head, n_head_kv, head_dim): (usize, usize, usize),
        n_ctx: usize,
        pos0: usize,
        window: Option<usize>,
    ) -> AttnShape {
        AttnShape {
            n_head,
            n_head_kv,
            head_dim,
            n_ctx,
            pos0,
            scale: 1.0 / (head_dim as f32).sqrt(),
            window,
            softcap: None,
        }
    }

    /// [`attention`] (reading `own` K/V and `shared`) gives [`attention_reference`]'s
    /// bits over the whole cache `full`.
    fn matches_reference(
        pool: &ThreadPool,
        shape: &AttnShape,
        shared: Option<SharedKv<'_>>,
        own: (&[f16], &[f16]),
        full: (&[f16], &[f16]),
        q: &[f32],
        what: &str,
    ) {
        let heads: Vec<_> = (0..shape.n_head).map(|_| Mutex::default()).collect();
        let mut got = vec![f32::NAN; q.len()];
        let mut want = vec![f32::NAN; q.len()];
        attention(pool, shape, shared, own.0, own.1, q, &heads, &mut got);
        attention_reference(shape, full.0, full.1, q, &mut want);
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "{what}");
    }

    /// A cache split as a stored prefix is used: positions 0..plen of each K/V head
    /// in the prefix (stored K, stored V), the session's own cache holding garbage
    /// there (it is never written when the prefix is read in place).
    #[allow(clippy::type_complexity)]
    fn split_prefix(
        k: &[f16],
        v: &[f16],
        n_head_kv: usize,
        n_ctx: usize,
        hd: usize,
        plen: usize,
    ) -> (Vec<f16>, Vec<f16>, Vec<f16>, Vec<f16>) {
        let (mut sk, mut sv) = (Vec::new(), Vec::new());
        let (mut own_k, mut own_v) = (k.to_vec(), v.to_vec());
        for h in 0..n_head_kv {
            let run = h * n_ctx * hd..(h * n_ctx + plen) * hd;
            sk.extend_from_slice(&k[run.clone()]);
            sv.extend_from_slice(&v[run.clone()]);
            own_k[run.clone()].fill(f16::NAN);
            own_v[run].fill(f16::NAN);
        }
        (sk, sv, own_k, own_v)
    }

    #[test]
    fn attention_over_a_shared_prefix_matches_one_cache_bit_for_bit() {
        let pool = ThreadPool::new(2);
        let mut st = 9u64;
        for (n_head, n_head_kv, hd) in [(9, 3, 64), (4, 2, 64), (2, 2, 40), (3, 1, 256)] {
            let n_ctx = 80;
            for (pos0, n, window, plen) in [
                (40, 1, None, 40),
                (40, 1, None, 17),
                (33, 11, None, 33),
                (33, 11, None, 1),
                (50, 20, Some(30), 45),
                (16, 1, Some(7), 16),
                (60, 3, Some(5), 30),
            ] {
                let size = n_head_kv * n_ctx * hd;
                let (k, v) = (halves(&mut st, size), halves(&mut st, size));
                let q: Vec<f32> = (0..n * n_head * hd).map(|_| rand(&mut st) * 3.0).collect();
                let (sk, sv, own_k, own_v) = split_prefix(&k, &v, n_head_kv, n_ctx, hd, plen);
                let shape = test_shape((n_head, n_head_kv, hd), n_ctx, pos0, window);
                let shared = SharedKv {
                    k: &sk,
                    v: &sv,
                    len: plen,
                };
                let heads: Vec<_> = (0..n_head).map(|_| Mutex::default()).collect();
                let mut got = vec![f32::NAN; q.len()];
                let mut want = vec![f32::NAN; q.len()];
                attention(
                    &pool,
                    &shape,
                    Some(shared),
                    &own_k,
                    &own_v,
                    &q,
                    &heads,
                    &mut got,
                );
                attention(&pool, &shape, None, &k, &v, &q, &heads, &mut want);
                let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "heads {n_head}/{n_head_kv} hd {hd} pos0 {pos0} n {n} window {window:?} prefix {plen}"
                );
            }
        }
    }

    #[test]
    fn one_token_over_a_long_span_matches_the_reference_bit_for_bit() {
        // Spans from crate::attn_decode::MIN_SPAN on take the position-split path:
        // windows that start off a 64-lane boundary, a stored prefix that ends inside
        // a run of lanes, and one that covers the whole span.
        let pool = ThreadPool::new(2);
        let mut st = 11u64;
        for (n_head, n_head_kv, hd) in [(9, 3, 64), (4, 1, 256)] {
            let n_ctx = 1300;
            for (pos0, window, plen) in [
                (1200, None, 0),
                (1200, None, 1000),
                (1000, Some(600), 437),
                (700, Some(513), 701),
                (511, None, 0),
            ] {
                let size = n_head_kv * n_ctx * hd;
                let (k, v) = (halves(&mut st, size), halves(&mut st, size));
                let q: Vec<f32> = (0..n_head * hd).map(|_| rand(&mut st) * 3.0).collect();
                let shape = test_shape((n_head, n_head_kv, hd), n_ctx, pos0, window);
                let (sk, sv, own_k, own_v) = split_prefix(&k, &v, n_head_kv, n_ctx, hd, plen);
                let shared = (plen > 0).then_some(SharedKv {
                    k: &sk,
                    v: &sv,
                    len: plen,
                });
                let what = format!(
                    "heads {n_head}/{n_head_kv} hd {hd} pos0 {pos0} window {window:?} prefix {plen}"
                );
                let own = (&own_k[..], &own_v[..]);
                matches_reference(&pool, &shape, shared, own, (&k, &v), &q, &what);
                let mut capped = test_shape((n_head, n_head_kv, hd), n_ctx, pos0, window);
                capped.softcap = Some(0.7);
                let what = format!("{what} softcap 0.7");
                matches_reference(&pool, &capped, shared, own, (&k, &v), &q, &what);
            }
        }
    }

    #[test]
    fn attention_rounds_like_an_f16_cache() {
        assert_eq!(round_f16(1.0 + 1e-4), 1.0);
        assert_eq!(round_f16(0.5), 0.5);
    }
}
