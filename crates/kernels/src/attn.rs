//! Attention and activation primitives that round and sum exactly as llama.cpp's CPU
//! backend does (f16 KV cache, no flash attention, AVX-512 build), so SIMD changes
//! speed and never results: every function here returns bit-identical values in
//! every kernel set. The scalar code below is the reference; the x86-64 versions (in
//! `x86_64::attn`) perform the same IEEE operations in the same order per lane.
//!
//! Products of two f16 values are exact in f32, so `acc + a * b` and `fma(a, b, acc)`
//! round identically; only the order of additions matters, and [`F16Sum`] fixes it.

use std::ops::Range;

use half::f16;

/// Summation order of llama.cpp's f16 × f16 products with f32 accumulation (the KQ and
/// KQV mul_mats). A batch goes through llamafile's tinyBLAS: 16 lanes, element `i`
/// into lane `i % 16` in order, then `_mm512_reduce_add_ps`. A single token goes
/// through `ggml_vec_dot_f16`: four 16-lane accumulators over steps of 64 (element `i`
/// into slot `i % 64`), folded `(a0 + a2) + (a1 + a3)`, then the same 16-lane reduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum F16Sum {
    TinyBlas,
    VecDot,
}

impl F16Sum {
    /// Accumulator slots.
    pub fn lanes(self) -> usize {
        match self {
            Self::TinyBlas => 16,
            Self::VecDot => 64,
        }
    }

    /// Folds the slots into the final sum.
    pub fn reduce(self, acc: &[f32]) -> f32 {
        let mut l = [0.0f32; 16];
        match self {
            Self::TinyBlas => l.copy_from_slice(&acc[..16]),
            Self::VecDot => {
                for i in 0..16 {
                    l[i] = (acc[i] + acc[32 + i]) + (acc[16 + i] + acc[48 + i]);
                }
            }
        }
        reduce_add_16(&l)
    }
}

/// `_mm512_reduce_add_ps`: halves folded 8, 4, 2, 1.
fn reduce_add_16(l: &[f32; 16]) -> f32 {
    let mut t8 = [0.0f32; 8];
    for i in 0..8 {
        t8[i] = l[i] + l[i + 8];
    }
    let t4 = [t8[0] + t8[4], t8[1] + t8[5], t8[2] + t8[6], t8[3] + t8[7]];
    (t4[0] + t4[2]) + (t4[1] + t4[3])
}

fn simd() -> bool {
    cfg!(target_arch = "x86_64") && crate::dispatch::active().name() != "scalar"
}

/// The AVX-512 set is active (AVX-512F among its features).
fn avx512() -> bool {
    cfg!(target_arch = "x86_64") && crate::dispatch::active().name() == "avx512"
}

/// `out[j] = dot(q, keys[j]) * scale` for each key row `j` (`keys` holds `out.len()`
/// rows of `q.len()` values), the dot in `order`. `q` must hold f16 values (ggml
/// rounds the query to K's type first) so that every product is exact.
///
/// # Panics
/// If `q.len()` is not a multiple of `order.lanes()` or the lengths disagree.
pub fn f16_scores(q: &[f32], keys: &[f16], order: F16Sum, scale: f32, out: &mut [f32]) {
    let hd = q.len();
    assert!(
        hd > 0 && hd.is_multiple_of(order.lanes()) && keys.len() == out.len() * hd,
        "f16_scores: {} keys of {hd} values in order {order:?}",
        out.len()
    );
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: the AVX-512 set is active only after AVX-512F, AVX2, FMA and F16C were
        // detected; shapes were checked above (hd is a multiple of 16 or 64).
        unsafe { crate::x86_64::attn_scores::f16_scores_512(q, keys, order, scale, out) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: the SIMD sets are active only after AVX2, FMA and F16C were detected;
        // shapes were checked above.
        unsafe { crate::x86_64::attn_scores::f16_scores(q, keys, order, scale, out) };
        return;
    }
    f16_scores_scalar(q, keys, order, scale, out);
}

/// The scalar reference of [`f16_scores`].
pub fn f16_scores_scalar(q: &[f32], keys: &[f16], order: F16Sum, scale: f32, out: &mut [f32]) {
    let (hd, w) = (q.len(), order.lanes());
    for (o, k) in out.iter_mut().zip(keys.chunks_exact(hd)) {
        let mut acc = [0.0f32; 64];
        for (cq, ck) in q.chunks_exact(w).zip(k.chunks_exact(w)) {
            for i in 0..w {
                acc[i] += cq[i] * ck[i].to_f32();
            }
        }
        *o = order.reduce(&acc[..w]) * scale;
    }
}

/// Scores of several queries against the same keys: `out[i * stride + j]` is
/// [`f16_scores`] of query `i` (row `i` of `q`, `hd` f16-valued f32) and key `j`. One
/// call per block of queries lets each key row be widened once for all of them (the
/// query heads that share a K/V head, and consecutive tokens).
///
/// # Panics
/// If `hd` is not a non-zero multiple of `order.lanes()`, or the lengths disagree.
pub fn f16_scores_many(
    q: &[f32],
    keys: &[f16],
    hd: usize,
    order: F16Sum,
    scale: f32,
    out: &mut [f32],
    stride: usize,
) {
    assert!(
        hd > 0 && hd.is_multiple_of(order.lanes()) && q.len().is_multiple_of(hd),
        "f16_scores_many: {} query values of width {hd} in order {order:?}",
        q.len()
    );
    let (m, n) = (q.len() / hd, keys.len() / hd);
    assert!(
        keys.len() == n * hd && n <= stride && (m == 0 || out.len() >= (m - 1) * stride + n),
        "f16_scores_many: {m} queries, {} key values, {} scores of stride {stride}",
        keys.len(),
        out.len()
    );
    #[cfg(target_arch = "x86_64")]
    if avx512() && 4 * hd <= 8192 {
        // SAFETY: the AVX-512 set is active only after AVX-512F, AVX2, FMA and F16C were
        // detected; shapes were checked above (hd a multiple of 64 in VecDot order).
        unsafe {
            crate::x86_64::attn_scores::f16_scores_many_512(q, keys, hd, order, scale, out, stride)
        };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if simd() && order == F16Sum::TinyBlas && m >= 2 && 2 * hd <= 8192 {
        // SAFETY: the SIMD sets are active only after AVX2, FMA and F16C were
        // detected; shapes were checked above (hd a multiple of 16 in tinyBLAS order).
        unsafe { crate::x86_64::attn_scores::f16_scores_many_256(q, keys, hd, scale, out, stride) };
        return;
    }
    let rows = q.chunks_exact(hd).zip(out.chunks_mut(stride));
    for (qi, oi) in rows {
        f16_scores(qi, keys, order, scale, &mut oi[..n]);
    }
}

/// The scalar reference of [`f16_scores_many`]: [`f16_scores_scalar`] per query.
pub fn f16_scores_many_scalar(
    q: &[f32],
    keys: &[f16],
    hd: usize,
    order: F16Sum,
    scale: f32,
    out: &mut [f32],
    stride: usize,
) {
    let n = keys.len() / hd;
    let rows = q.chunks_exact(hd).zip(out.chunks_mut(stride));
    rows.for_each(|(qi, oi)| f16_scores_scalar(qi, keys, order, scale, &mut oi[..n]));
}

/// The attention output of one query: `out[d] = Σ_j round_f16(w[j]) · vals[j][d]`,
/// where value row `j` (of `out.len()` values) sits at cache slot `first_slot + j`
/// and feeds accumulator lane `(first_slot + j) % order.lanes()` (ggml's lane order
/// over the padded cache). `acc` is scratch of at least `order.lanes() * out.len()`.
///
/// # Panics
/// If the lengths disagree.
pub fn f16_weighted_sum(
    w: &[f32],
    vals: &[f16],
    first_slot: usize,
    order: F16Sum,
    acc: &mut [f32],
    out: &mut [f32],
) {
    let hd = out.len();
    let lanes = order.lanes();
    assert!(
        vals.len() == w.len() * hd && acc.len() >= lanes * hd,
        "f16_weighted_sum: {} weights, {} values of width {hd}, {} scratch",
        w.len(),
        vals.len(),
        acc.len()
    );
    #[cfg(target_arch = "x86_64")]
    if simd() && hd.is_multiple_of(8) {
        // SAFETY: as in `f16_scores`; shapes were checked above.
        unsafe { crate::x86_64::attn::f16_weighted_sum(w, vals, first_slot, order, acc, out) };
        return;
    }
    f16_weighted_sum_scalar(w, vals, first_slot, order, acc, out);
}

/// The scalar reference of [`f16_weighted_sum`]. `acc` is laid out `[lane][d]`.
pub fn f16_weighted_sum_scalar(
    w: &[f32],
    vals: &[f16],
    first_slot: usize,
    order: F16Sum,
    acc: &mut [f32],
    out: &mut [f32],
) {
    let hd = out.len();
    let lanes = order.lanes();
    let acc = &mut acc[..lanes * hd];
    acc.fill(0.0);
    for (j, (&wj, vj)) in w.iter().zip(vals.chunks_exact(hd)).enumerate() {
        let wj = f16::from_f32(wj).to_f32();
        let slot = (first_slot + j) % lanes;
        for (a, &b) in acc[slot * hd..(slot + 1) * hd].iter_mut().zip(vj) {
            // f16 × f16 is exact in f32, so this add is ggml's FMA.
            *a += wj * b.to_f32();
        }
    }
    let mut col = [0.0f32; 64];
    for (d, o) in out.iter_mut().enumerate() {
        for (s, c) in col[..lanes].iter_mut().enumerate() {
            *c = acc[s * hd + d];
        }
        *o = order.reduce(&col[..lanes]);
    }
}

/// The weights of several queries over the same value rows: query `i` weighs row `j`
/// of `rows[i]` by `w[i * stride + j]` (rows outside its range are not added: a
/// query's causal or sliding-window mask).
pub struct QueryWeights<'a> {
    pub w: &'a [f32],
    pub stride: usize,
    pub rows: &'a [Range<usize>],
}

/// Adds each query's weighted value rows into its accumulators (`acc`: per query
/// `[lane][d]`, `order.lanes() * hd` values; value row `j` sits at cache slot
/// `first_slot + j` and feeds lane `(first_slot + j) % order.lanes()`). The weights
/// must already be f16 values ([`round_f16_slice`]). Called over consecutive ranges
/// of slots (e.g. a stored prefix read in place, then the session's own cache), then
/// [`f16_reduce_lanes`], it gives [`f16_weighted_sum`]'s result bit for bit.
///
/// # Panics
/// If the lengths disagree.
pub fn f16_accumulate(
    qw: &QueryWeights<'_>,
    vals: &[f16],
    hd: usize,
    first_slot: usize,
    order: F16Sum,
    acc: &mut [f32],
) {
    f16_accumulate_lanes(qw, vals, hd, first_slot, order, 0..order.lanes(), acc);
}

/// [`f16_accumulate`]'s shape checks.
fn check_accumulate(qw: &QueryWeights<'_>, vals: &[f16], hd: usize, lanes: usize, acc: &[f32]) {
    let (m, n) = (qw.rows.len(), vals.len() / hd.max(1));
    assert!(
        hd > 0 && vals.len() == n * hd && acc.len() >= m * lanes * hd,
        "f16_accumulate: {} values of width {hd}, {m} queries, {} accumulators",
        vals.len(),
        acc.len()
    );
    for (i, r) in qw.rows.iter().enumerate() {
        assert!(
            r.start <= r.end && r.end <= n && (r.is_empty() || i * qw.stride + r.end <= qw.w.len()),
            "f16_accumulate: query {i} rows {r:?} of {n}, stride {}, {} weights",
            qw.stride,
            qw.w.len()
        );
    }
}

/// [`f16_accumulate`] for the accumulator lanes in `keep` only (whole sixteens of
/// `0..order.lanes()`): the rows that feed other lanes are skipped. Tasks that each
/// keep different lanes of the same queries add every row once between them, each
/// lane in the same order as [`f16_accumulate`] adds it (a single token's attention
/// split across threads by position).
///
/// # Panics
/// If `keep` is not made of whole sixteens inside the order's lanes, or as
/// [`f16_accumulate`].
pub fn f16_accumulate_lanes(
    qw: &QueryWeights<'_>,
    vals: &[f16],
    hd: usize,
    first_slot: usize,
    order: F16Sum,
    keep: Range<usize>,
    acc: &mut [f32],
) {
    let lanes = order.lanes();
    assert!(
        keep.start.is_multiple_of(16) && keep.end.is_multiple_of(16) && keep.end <= lanes,
        "f16_accumulate_lanes: lanes {keep:?} of {lanes}"
    );
    check_accumulate(qw, vals, hd, lanes, acc);
    #[cfg(target_arch = "x86_64")]
    if avx512() && hd.is_multiple_of(16) {
        // SAFETY: as in `f16_scores`; shapes were checked above.
        unsafe {
            crate::x86_64::attn_wsum::f16_accumulate_512(
                qw,
                vals,
                hd,
                first_slot,
                (lanes, keep),
                acc,
            )
        };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if simd() && hd.is_multiple_of(8) {
        // SAFETY: as in `f16_scores`; shapes were checked above.
        unsafe {
            crate::x86_64::attn_wsum::f16_accumulate_256(
                qw,
                vals,
                hd,
                first_slot,
                (lanes, keep),
                acc,
            )
        };
        return;
    }
    f16_accumulate_lanes_scalar(qw, vals, hd, first_slot, order, keep, acc);
}

/// The scalar reference of [`f16_accumulate`].
pub fn f16_accumulate_scalar(
    qw: &QueryWeights<'_>,
    vals: &[f16],
    hd: usize,
    first_slot: usize,
    order: F16Sum,
    acc: &mut [f32],
) {
    f16_accumulate_lanes_scalar(qw, vals, hd, first_slot, order, 0..order.lanes(), acc);
}

/// The scalar reference of [`f16_accumulate_lanes`]: rows into their lanes one by
/// one, those whose lane is in `keep`.
pub fn f16_accumulate_lanes_scalar(
    qw: &QueryWeights<'_>,
    vals: &[f16],
    hd: usize,
    first_slot: usize,
    order: F16Sum,
    keep: Range<usize>,
    acc: &mut [f32],
) {
    let lanes = order.lanes();
    for (i, (r, acc)) in qw
        .rows
        .iter()
        .zip(acc.chunks_exact_mut(lanes * hd))
        .enumerate()
    {
        for j in r.clone() {
            let wj = qw.w[i * qw.stride + j];
            let slot = (first_slot + j) % lanes;
            if !keep.contains(&slot) {
                continue;
            }
            let vj = &vals[j * hd..(j + 1) * hd];
            for (a, &b) in acc[slot * hd..(slot + 1) * hd].iter_mut().zip(vj) {
                // f16 × f16 is exact in f32, so this add is ggml's FMA.
                *a += wj * b.to_f32();
            }
        }
    }
}

/// Folds one query's `[lane][d]` accumulators into `out` in `order`.
///
/// # Panics
/// If `acc` holds fewer than `order.lanes() * out.len()` values.
pub fn f16_reduce_lanes(acc: &[f32], order: F16Sum, out: &mut [f32]) {
    let (hd, lanes) = (out.len(), order.lanes());
    assert!(
        acc.len() >= lanes * hd,
        "f16_reduce_lanes: {} accumulators",
        acc.len()
    );
    #[cfg(target_arch = "x86_64")]
    if simd() && hd.is_multiple_of(8) {
        // SAFETY: as in `f16_scores`; `acc` holds lanes * hd values.
        unsafe { crate::x86_64::attn::reduce_lanes(acc.as_ptr(), hd, order, out) };
        return;
    }
    let mut col = [0.0f32; 64];
    for (d, o) in out.iter_mut().enumerate() {
        for (s, c) in col[..lanes].iter_mut().enumerate() {
            *c = acc[s * hd + d];
        }
        *o = order.reduce(&col[..lanes]);
    }
}

/// `bytes` viewed in place as little-endian f16 values (a snapshot's stored K/V), or
/// `None` when they are not 2-byte aligned or this target is big-endian.
pub fn f16_view(bytes: &[u8]) -> Option<&[f16]> {
    if cfg!(target_endian = "big")
        || !bytes.len().is_multiple_of(2)
        || bytes.as_ptr().align_offset(2) != 0
    {
        return None;
    }
    // SAFETY: f16 is two bytes with every bit pattern valid; the pointer is 2-byte
    // aligned and the length whole (checked above), the lifetime is that of `bytes`,
    // and the byte order matches (little-endian target).
    Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<f16>(), bytes.len() / 2) })
}

/// Every value rounded to the nearest f16 (ties to even), in place.
pub fn round_f16_slice(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: the SIMD sets are active only after AVX2 and F16C were detected.
        unsafe { crate::x86_64::attn::round_f16_slice(x) };
        return;
    }
    round_f16_slice_scalar(x);
}

/// The scalar reference of [`round_f16_slice`].
pub fn round_f16_slice_scalar(x: &mut [f32]) {
    for v in x {
        *v = f16::from_f32(*v).to_f32();
    }
}

/// Softmax in place of a row starting at cache slot 0: [`softmax_slots`]`(x, 0)`.
pub fn softmax(x: &mut [f32]) {
    softmax_slots(x, 0);
}

/// Softmax in place (max-subtracted, [`ggml_expf`], normalized by the f64 sum of the
/// exps), as ggml's `soft_max` computes it over a row of attention scores whose first
/// entry is cache slot `first_slot`: ggml works on the whole (padded) cache row, masked
/// slots giving exactly 0, and its AVX-512 `ggml_vec_soft_max_f32` adds the exps 16
/// slots at a time, each group reduced in f32 (`_mm512_reduce_add_ps`) before it is
/// added to the f64 sum ([`slot_sum`]).
pub fn softmax_slots(x: &mut [f32], first_slot: usize) {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: the AVX-512 set is active only after AVX-512F, AVX2, FMA and F16C
        // were detected.
        unsafe { crate::x86_64::attn::softmax_512(x, first_slot, false) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: the SIMD sets are active only after AVX2 and FMA were detected.
        unsafe { crate::x86_64::attn::softmax(x, first_slot) };
        return;
    }
    softmax_scalar_slots(x, first_slot);
}

/// [`softmax_slots`], then every probability rounded to f16 ([`round_f16_slice`]), as
/// ggml converts KQ to f16 before the weighted sum of V; one pass fewer where fused.
pub fn softmax_slots_f16(x: &mut [f32], first_slot: usize) {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: as in `softmax_slots`.
        unsafe { crate::x86_64::attn::softmax_512(x, first_slot, true) };
        return;
    }
    softmax_slots(x, first_slot);
    round_f16_slice(x);
}

/// The scalar reference of [`softmax_slots_f16`].
pub fn softmax_slots_f16_scalar(x: &mut [f32], first_slot: usize) {
    softmax_scalar_slots(x, first_slot);
    round_f16_slice_scalar(x);
}

/// The f64 sum of `x` (cache slots `first_slot..`) the way ggml's AVX-512 softmax adds
/// it: per aligned group of 16 slots, the f32 `_mm512_reduce_add_ps` of the group's
/// values (absent slots 0), then the groups in order in f64.
pub fn slot_sum(x: &[f32], first_slot: usize) -> f64 {
    let mut sum = 0.0f64;
    let mut j = 0;
    while j < x.len() {
        let lane = (first_slot + j) % 16;
        let take = (16 - lane).min(x.len() - j);
        let mut l = [0.0f32; 16];
        l[lane..lane + take].copy_from_slice(&x[j..j + take]);
        sum += f64::from(reduce_add_16(&l));
        j += take;
    }
    sum
}

/// The scalar reference of [`softmax`].
pub fn softmax_scalar(x: &mut [f32]) {
    softmax_scalar_slots(x, 0);
}

/// The scalar reference of [`softmax_slots`].
pub fn softmax_scalar_slots(x: &mut [f32], first_slot: usize) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for v in x.iter_mut() {
        *v = ggml_expf(*v - max);
    }
    let inv = (1.0 / slot_sum(x, first_slot)) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// `silu(gate) * up` written into `gate` (SwiGLU), with [`ggml_expf`]:
/// `g / (1 + expf(-g)) * u`.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "swiglu: gate and up lengths differ");
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: the SIMD sets are active only after AVX2 and FMA were detected.
        unsafe { crate::x86_64::attn::swiglu(gate, up) };
        return;
    }
    swiglu_scalar(gate, up);
}

/// The scalar reference of [`swiglu`].
pub fn swiglu_scalar(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + ggml_expf(-*g)) * u;
    }
}

/// ggml's vectorised `expf` (the AVX-512 `ggml_v_expf`, from ARM's optimized
/// routines), one lane at a time with the same fused operations, so activations
/// round exactly as llama.cpp's do: a last-bit difference here can flip the 8-bit
/// quantization of the next matmul's input. Max error ~1.5 ulp versus `expf`.
pub fn ggml_expf(x: f32) -> f32 {
    let z = x.mul_add(EXP_LOG2E, EXP_ROUND);
    let n = z - EXP_ROUND;
    // x - n·ln2, with ln2 split in two parts.
    let b = (-n).mul_add(EXP_LN2_LO, (-n).mul_add(EXP_LN2_HI, x));
    if n.abs() > 192.0 {
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    let u = b * b;
    let j = EXP_C[0]
        .mul_add(b, EXP_C[1])
        .mul_add(u, EXP_C[2].mul_add(b, EXP_C[3]))
        .mul_add(u, EXP_C[4].mul_add(b, 1.0));
    // `j · 2^n` (`_mm512_scalef_ps`), in two steps so that an exponent beyond f32's
    // range saturates or flushes as the instruction does.
    let n = n as i32;
    let a = n / 2;
    j * pow2(a) * pow2(n - a)
}

/// 0x1.8p23: adding it rounds to an integer.
pub(crate) const EXP_ROUND: f32 = 12_582_912.0;
pub(crate) const EXP_LOG2E: f32 = f32::from_bits(0x3fb8_aa3b);
pub(crate) const EXP_LN2_HI: f32 = f32::from_bits(0x3f31_7200);
pub(crate) const EXP_LN2_LO: f32 = f32::from_bits(0x35bf_be8e);
pub(crate) const EXP_C: [f32; 5] = [
    f32::from_bits(0x3c07_2010),
    f32::from_bits(0x3d2b_9f17),
    f32::from_bits(0x3e2a_af33),
    f32::from_bits(0x3eff_fedb),
    f32::from_bits(0x3f7f_fff6),
];

/// `2^k` for `k` in -126..=127.
fn pow2(k: i32) -> f32 {
    f32::from_bits(((k + 127) as u32) << 23)
}
