//! A single token's attention over a long span (a decode step), split across threads
//! by position instead of by query head. Split by head, every task read its K/V head
//! whole (two or four tasks per K/V head to keep both threads busy), so a decode step
//! read the cache two to four times over; here every key and value row is read once.
//!
//! The arithmetic is [`crate::ops::attention`]'s for one token, bit for bit: scores
//! do not depend on which task computes them, each row's softmax runs over its whole
//! span, and the weighted sum's accumulator lanes (ggml's order: position `p` feeds
//! lane `p % 64`) are divided between tasks
//! ([`thaw_kernels::attn::f16_accumulate_lanes`]), each lane receiving its positions
//! in order, before the lanes are folded as usual.

use std::ops::Range;
use std::sync::Mutex;

use half::f16;
use thaw_kernels::ThreadPool;
use thaw_kernels::attn::{self, F16Sum, QueryWeights};

use crate::ops::{AttnShape, SharedKv, round_f16};

/// Spans shorter than this keep the per-head split: it reads less than L2 holds.
pub(crate) const MIN_SPAN: usize = 512;

/// ggml's accumulator lanes for a single token (`ggml_vec_dot_f16`'s 64 slots).
const LANES: usize = 64;

/// Where positions `r` of one K/V head live: below `sh.len` in the stored prefix, the
/// rest in the session's cache. Yields (K, V, first position) per piece.
fn pieces<'a>(
    s: &AttnShape,
    sh: SharedKv<'a>,
    k_layer: &'a [f16],
    v_layer: &'a [f16],
    kvh: usize,
    r: Range<usize>,
) -> impl Iterator<Item = (&'a [f16], &'a [f16], usize)> {
    let hd = s.head_dim;
    let split = sh.len.clamp(r.start, r.end);
    let stored = (sh.k, sh.v, kvh * sh.len * hd, r.start..split);
    let own = (k_layer, v_layer, kvh * s.n_ctx * hd, split..r.end);
    [stored, own]
        .into_iter()
        .filter(|(_, _, _, p)| !p.is_empty())
        .map(move |(k, v, base, p)| {
            let at = |j: usize| base + j * hd;
            (
                &k[at(p.start)..at(p.end)],
                &v[at(p.start)..at(p.end)],
                p.start,
            )
        })
}

/// Buffers kept across calls (on the thread that runs the forward pass): a decode
/// step calls this once per layer, and buffers of a few hundred KiB allocated anew
/// each time come back as fresh pages.
#[derive(Default)]
struct Buffers {
    parts: Vec<Mutex<Vec<f32>>>,
    rows: Vec<Mutex<Vec<f32>>>,
    weights: Vec<f32>,
    acc: Vec<Mutex<Vec<f32>>>,
}

thread_local! {
    static BUFFERS: std::cell::RefCell<Buffers> = std::cell::RefCell::default();
}

/// The first `n` of `v`'s buffers (added if missing; the others keep their capacity).
fn slots(v: &mut Vec<Mutex<Vec<f32>>>, n: usize) -> &[Mutex<Vec<f32>>] {
    if v.len() < n {
        v.resize_with(n, Mutex::default);
    }
    &v[..n]
}

/// [`crate::ops::attention`] for one token at `s.pos0` (`q`: `n_head × head_dim`),
/// writing `out` (`n_head × head_dim`).
pub(crate) fn attention_one_token(
    pool: &ThreadPool,
    s: &AttnShape,
    sh: SharedKv<'_>,
    k_layer: &[f16],
    v_layer: &[f16],
    q: &[f32],
    out: &mut [f32],
) {
    let (hd, n_kv) = (s.head_dim, s.n_head_kv);
    let group = s.n_head / n_kv;
    let pos = s.pos0;
    let lo = s.window.map_or(0, |w| (pos + 1).saturating_sub(w));
    let width = pos + 1 - lo;
    let query: Vec<f32> = q.iter().map(|&v| round_f16(v)).collect();
    let q_of = |kvh: usize| &query[kvh * group * hd..(kvh + 1) * group * hd];

    let mut b = BUFFERS.with(|c| std::mem::take(&mut *c.borrow_mut()));

    // 1. Scores: (K/V head, position part) tasks, each for the head's `group` rows.
    let parts = pool.n_threads().max(1);
    let bound = |i: usize| lo + width * i / parts;
    let part_scores = slots(&mut b.parts, n_kv * parts);
    pool.run(n_kv * parts, |i| {
        let (kvh, part) = (i / parts, i % parts);
        let r = bound(part)..bound(part + 1);
        let mut buf = part_scores[i].lock().unwrap_or_else(|e| e.into_inner());
        buf.clear();
        buf.resize(group * r.len(), 0.0);
        for (k, _, p0) in pieces(s, sh, k_layer, v_layer, kvh, r.clone()) {
            let out = &mut buf[p0 - r.start..];
            attn::f16_scores_many(q_of(kvh), k, hd, F16Sum::VecDot, s.scale, out, r.len());
        }
    });

    // 2. Each row's scores gathered and soft-maxed (rounded to f16 as ggml does).
    let rows = slots(&mut b.rows, s.n_head);
    pool.run(s.n_head, |h| {
        let (kvh, g) = (h / group, h % group);
        let mut row = rows[h].lock().unwrap_or_else(|e| e.into_inner());
        row.clear();
        for part in 0..parts {
            let len = bound(part + 1) - bound(part);
            let buf = part_scores[kvh * parts + part]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            row.extend_from_slice(&buf[g * len..(g + 1) * len]);
        }
        if let Some(cap) = s.softcap {
            crate::ops::softcap(&mut row, cap);
        }
        attn::softmax_slots_f16(&mut row, lo);
    });
    let mut weights = std::mem::take(&mut b.weights);
    weights.clear();
    for row in rows {
        weights.extend_from_slice(&row.lock().unwrap_or_else(|e| e.into_inner()));
    }

    // 3. The weighted sum: (K/V head, half of the lanes) tasks, each adding only the
    // rows that feed its lanes (runs of 32 positions, every other 32 of each 64).
    let halves = 2;
    let per = LANES / halves;
    let acc = slots(&mut b.acc, n_kv * halves);
    pool.run(n_kv * halves, |i| {
        let (kvh, half) = (i / halves, i % halves);
        let mut a = acc[i].lock().unwrap_or_else(|e| e.into_inner());
        a.clear();
        a.resize(group * LANES * hd, 0.0);
        // The group's weight rows are consecutive: one matrix of stride `width`.
        let w = &weights[kvh * group * width..(kvh + 1) * group * width];
        let mut rows = Vec::with_capacity(group);
        for (_, v, p0) in pieces(s, sh, k_layer, v_layer, kvh, lo..pos + 1) {
            let n = v.len() / hd;
            rows.clear();
            rows.resize(group, 0..n);
            let qw = QueryWeights {
                w: &w[p0 - lo..],
                stride: width,
                rows: &rows,
            };
            let keep = half * per..(half + 1) * per;
            attn::f16_accumulate_lanes(&qw, v, hd, p0, F16Sum::VecDot, keep, &mut a);
        }
    });

    // 4. Each row's lanes from the two halves, folded in ggml's order.
    let acc: Vec<_> = acc
        .iter()
        .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
        .collect();
    let mut lanes = vec![0.0f32; LANES * hd];
    for h in 0..s.n_head {
        let (kvh, g) = (h / group, h % group);
        for half in 0..halves {
            let src = &acc[kvh * halves + half][g * LANES * hd..(g + 1) * LANES * hd];
            let r = half * per * hd..(half + 1) * per * hd;
            lanes[r.clone()].copy_from_slice(&src[r]);
        }
        attn::f16_reduce_lanes(&lanes, F16Sum::VecDot, &mut out[h * hd..(h + 1) * hd]);
    }
    drop(acc);
    b.weights = weights;
    BUFFERS.with(|c| *c.borrow_mut() = b);
}
