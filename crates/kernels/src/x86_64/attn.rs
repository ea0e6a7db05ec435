//! AVX2 + FMA + F16C versions of `crate::attn`: the same IEEE operations in the same
//! order per lane as the scalar reference, 8 lanes at a time (so results are
//! bit-identical). Used by both SIMD sets: the work is small next to the matmuls and
//! 256-bit registers keep the clocks up.

use core::arch::x86_64::*;

use half::f16;

use crate::attn::{EXP_C, EXP_LN2_HI, EXP_LN2_LO, EXP_LOG2E, EXP_ROUND, F16Sum};

/// 8 f16 at `p` → f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_h(p: *const f16) -> __m256 {
    // SAFETY: the caller guarantees 8 readable f16 at p.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p.cast()) })
}

/// `_mm512_reduce_add_ps` of lanes `lo` (0..8) and `hi` (8..16): folds 8, 4, 2, 1.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn reduce16(lo: __m256, hi: __m256) -> f32 {
    let t8 = _mm256_add_ps(lo, hi);
    let t4 = _mm_add_ps(_mm256_castps256_ps128(t8), _mm256_extractf128_ps(t8, 1));
    let t2 = _mm_add_ps(t4, _mm_movehl_ps(t4, t4));
    _mm_cvtss_f32(_mm_add_ss(t2, _mm_movehdup_ps(t2)))
}

/// One key's dot in tinyBLAS order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_tinyblas(q: &[f32], k: *const f16) -> f32 {
    let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for c in (0..q.len()).step_by(16) {
        // SAFETY: c + 16 <= q.len() and the key row has q.len() values.
        unsafe {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q.as_ptr().add(c)), load_h(k.add(c)), a0);
            a1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(q.as_ptr().add(c + 8)),
                load_h(k.add(c + 8)),
                a1,
            );
        }
    }
    reduce16(a0, a1)
}

/// Four keys' dots in tinyBLAS order (independent chains keep the FMA units busy).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_tinyblas4(q: &[f32], k: *const f16, hd: usize) -> [f32; 4] {
    let mut a = [_mm256_setzero_ps(); 8];
    for c in (0..q.len()).step_by(16) {
        // SAFETY: c + 16 <= hd and the four key rows hold hd values each.
        unsafe {
            let q0 = _mm256_loadu_ps(q.as_ptr().add(c));
            let q1 = _mm256_loadu_ps(q.as_ptr().add(c + 8));
            for r in 0..4 {
                let kr = k.add(r * hd + c);
                a[2 * r] = _mm256_fmadd_ps(q0, load_h(kr), a[2 * r]);
                a[2 * r + 1] = _mm256_fmadd_ps(q1, load_h(kr.add(8)), a[2 * r + 1]);
            }
        }
    }
    [
        reduce16(a[0], a[1]),
        reduce16(a[2], a[3]),
        reduce16(a[4], a[5]),
        reduce16(a[6], a[7]),
    ]
}

/// One key's dot in `ggml_vec_dot_f16` order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_vecdot(q: &[f32], k: *const f16) -> f32 {
    let mut a = [_mm256_setzero_ps(); 8];
    for c in (0..q.len()).step_by(64) {
        for (i, ai) in a.iter_mut().enumerate() {
            // SAFETY: c + 64 <= q.len() and the key row has q.len() values.
            unsafe {
                *ai = _mm256_fmadd_ps(
                    _mm256_loadu_ps(q.as_ptr().add(c + 8 * i)),
                    load_h(k.add(c + 8 * i)),
                    *ai,
                );
            }
        }
    }
    // Slots 16i..16i+16 are a[2i], a[2i+1]: (a0 + a2) + (a1 + a3) per 16-lane group.
    let lo = _mm256_add_ps(_mm256_add_ps(a[0], a[4]), _mm256_add_ps(a[2], a[6]));
    let hi = _mm256_add_ps(_mm256_add_ps(a[1], a[5]), _mm256_add_ps(a[3], a[7]));
    reduce16(lo, hi)
}

/// See `crate::attn::f16_scores`.
///
/// # Safety
/// AVX2, FMA and F16C must be available; `q.len()` is a non-zero multiple of
/// `order.lanes()` and `keys.len() == out.len() * q.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f16_scores(q: &[f32], keys: &[f16], order: F16Sum, scale: f32, out: &mut [f32]) {
    let hd = q.len();
    let k = keys.as_ptr();
    match order {
        F16Sum::TinyBlas => {
            let mut j = 0;
            while j + 4 <= out.len() {
                // SAFETY: rows j..j+4 are inside `keys`.
                let d = unsafe { dot_tinyblas4(q, k.add(j * hd), hd) };
                for r in 0..4 {
                    out[j + r] = d[r] * scale;
                }
                j += 4;
            }
            while j < out.len() {
                // SAFETY: row j is inside `keys`.
                out[j] = unsafe { dot_tinyblas(q, k.add(j * hd)) } * scale;
                j += 1;
            }
        }
        F16Sum::VecDot => {
            for (j, o) in out.iter_mut().enumerate() {
                // SAFETY: row j is inside `keys`.
                *o = unsafe { dot_vecdot(q, k.add(j * hd)) } * scale;
            }
        }
    }
}

/// `x` rounded to f16 and back, with round-to-nearest-even like `half`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn round_f16(x: f32) -> f32 {
    let h = _mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(x));
    _mm_cvtss_f32(_mm_cvtph_ps(h))
}

/// See `crate::attn::f16_weighted_sum`.
///
/// # Safety
/// AVX2, FMA and F16C must be available; `out.len()` is a multiple of 8,
/// `vals.len() == w.len() * out.len()` and `acc.len() >= order.lanes() * out.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f16_weighted_sum(
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
    let a = acc.as_mut_ptr();
    let v = vals.as_ptr();
    let mut slot = first_slot % lanes;
    for (j, &wj) in w.iter().enumerate() {
        let wv = _mm256_set1_ps(round_f16(wj));
        // SAFETY: slot < lanes, d + 8 <= hd; row j is inside `vals`.
        unsafe {
            let dst = a.add(slot * hd);
            let src = v.add(j * hd);
            for d in (0..hd).step_by(8) {
                let p = dst.add(d);
                _mm256_storeu_ps(
                    p,
                    _mm256_fmadd_ps(wv, load_h(src.add(d)), _mm256_loadu_ps(p)),
                );
            }
        }
        slot += 1;
        if slot == lanes {
            slot = 0;
        }
    }
    // SAFETY: acc holds lanes * hd values, out hd.
    unsafe { reduce_lanes(a, hd, order, out) };
}

/// Folds the `[lane][d]` accumulators at `a` into `out` in `order` (see `F16Sum::reduce`),
/// 8 output dims at a time.
///
/// # Safety
/// `a` points to `order.lanes() * out.len()` floats; `out.len()` is a multiple of 8.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn reduce_lanes(a: *const f32, hd: usize, order: F16Sum, out: &mut [f32]) {
    let at = |s: usize, d: usize| -> __m256 {
        // SAFETY: s < lanes and d + 8 <= hd.
        unsafe { _mm256_loadu_ps(a.add(s * hd + d)) }
    };
    for d in (0..hd).step_by(8) {
        let mut l = [_mm256_setzero_ps(); 16];
        for (i, li) in l.iter_mut().enumerate() {
            *li = match order {
                F16Sum::TinyBlas => at(i, d),
                F16Sum::VecDot => _mm256_add_ps(
                    _mm256_add_ps(at(i, d), at(32 + i, d)),
                    _mm256_add_ps(at(16 + i, d), at(48 + i, d)),
                ),
            };
        }
        // reduce_add_16 per output dim, 8 dims at a time.
        let t8: [__m256; 8] = std::array::from_fn(|i| _mm256_add_ps(l[i], l[i + 8]));
        let t4: [__m256; 4] = std::array::from_fn(|i| _mm256_add_ps(t8[i], t8[i + 4]));
        let r = _mm256_add_ps(_mm256_add_ps(t4[0], t4[2]), _mm256_add_ps(t4[1], t4[3]));
        // SAFETY: d + 8 <= hd = out.len().
        unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(d), r) };
    }
}

/// See `crate::attn::f16_accumulate`.
///
/// # Safety
/// AVX2, FMA and F16C must be available; `hd` is a multiple of 8, `vals` holds whole
/// rows of `hd`, `acc` whole blocks of `lanes * hd` (one per query) and `w` row `i`
/// of `vals.len() / hd` weights at `i * w_stride` for each of them.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f16_accumulate(
    w: &[f32],
    w_stride: usize,
    vals: &[f16],
    hd: usize,
    first_slot: usize,
    lanes: usize,
    acc: &mut [f32],
) {
    let m = acc.len() / (lanes * hd);
    let a = acc.as_mut_ptr();
    let v = vals.as_ptr();
    let mut slot = first_slot % lanes;
    for j in 0..vals.len() / hd {
        for i in 0..m {
            // SAFETY: weight i * w_stride + j is inside `w`, row j inside `vals`, query
            // i < m and slot < lanes inside `acc`, d + 8 <= hd (checked by the caller).
            unsafe {
                let wv = _mm256_set1_ps(*w.as_ptr().add(i * w_stride + j));
                let dst = a.add((i * lanes + slot) * hd);
                let src = v.add(j * hd);
                for d in (0..hd).step_by(8) {
                    let p = dst.add(d);
                    _mm256_storeu_ps(
                        p,
                        _mm256_fmadd_ps(wv, load_h(src.add(d)), _mm256_loadu_ps(p)),
                    );
                }
            }
        }
        slot += 1;
        if slot == lanes {
            slot = 0;
        }
    }
}

/// See `crate::attn::round_f16_slice`.
///
/// # Safety
/// AVX2 and F16C must be available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn round_f16_slice(x: &mut [f32]) {
    let mut chunks = x.chunks_exact_mut(8);
    for c in &mut chunks {
        // SAFETY: c holds 8 floats.
        unsafe {
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(c.as_ptr()));
            _mm256_storeu_ps(c.as_mut_ptr(), _mm256_cvtph_ps(h));
        }
    }
    for v in chunks.into_remainder() {
        *v = round_f16(*v);
    }
}

/// [`crate::attn::ggml_expf`] on 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn expf8(x: __m256) -> __m256 {
    let set = _mm256_set1_ps;
    let round = set(EXP_ROUND);
    let z = _mm256_fmadd_ps(x, set(EXP_LOG2E), round);
    let n = _mm256_sub_ps(z, round);
    let neg_n = _mm256_xor_ps(n, set(-0.0));
    let b = _mm256_fmadd_ps(
        neg_n,
        set(EXP_LN2_LO),
        _mm256_fmadd_ps(neg_n, set(EXP_LN2_HI), x),
    );
    let u = _mm256_mul_ps(b, b);
    let j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(
            _mm256_fmadd_ps(set(EXP_C[0]), b, set(EXP_C[1])),
            u,
            _mm256_fmadd_ps(set(EXP_C[2]), b, set(EXP_C[3])),
        ),
        u,
        _mm256_fmadd_ps(set(EXP_C[4]), b, set(1.0)),
    );
    // j · 2^a · 2^(n-a) with a = n / 2 truncated toward zero, as the scalar code.
    let ni = _mm256_cvttps_epi32(n);
    let a = _mm256_srai_epi32(_mm256_add_epi32(ni, _mm256_srli_epi32(ni, 31)), 1);
    let pow2 = |k: __m256i| {
        _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_add_epi32(k, _mm256_set1_epi32(127)),
            23,
        ))
    };
    let r = _mm256_mul_ps(_mm256_mul_ps(j, pow2(a)), pow2(_mm256_sub_epi32(ni, a)));
    // |n| > 192: 0 below, infinity above.
    let abs_n = _mm256_andnot_ps(set(-0.0), n);
    let big = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, set(192.0));
    let pos = _mm256_cmp_ps::<_CMP_GT_OQ>(n, set(0.0));
    let sat = _mm256_and_ps(pos, set(f32::INFINITY));
    _mm256_blendv_ps(r, sat, big)
}

/// See `crate::attn::softmax_slots`.
///
/// # Safety
/// AVX2 and FMA must be available.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn softmax(x: &mut [f32], first_slot: usize) {
    let n = x.len();
    let p = x.as_mut_ptr();
    // The max is exact in any order (NaNs aside, which poison every output either way).
    let mut mv = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n.
        mv = _mm256_max_ps(mv, unsafe { _mm256_loadu_ps(p.add(i)) });
        i += 8;
    }
    let mut lanes = [0.0f32; 8];
    // SAFETY: 8 f32 of stack.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), mv) };
    let mut max = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for &v in &x[i..] {
        max = max.max(v);
    }
    let maxv = _mm256_set1_ps(max);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n.
        unsafe {
            _mm256_storeu_ps(
                p.add(i),
                expf8(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), maxv)),
            )
        };
        i += 8;
    }
    if i < n {
        let mut t = [0.0f32; 8];
        t[..n - i].copy_from_slice(&x[i..]);
        // SAFETY: 8 f32 of stack.
        unsafe {
            let e = expf8(_mm256_sub_ps(_mm256_loadu_ps(t.as_ptr()), maxv));
            _mm256_storeu_ps(t.as_mut_ptr(), e);
        }
        x[i..].copy_from_slice(&t[..n - i]);
    }
    // ggml's grouping of the sum (16 slots in f32, then f64) fixes its rounding.
    let inv = (1.0 / crate::attn::slot_sum(x, first_slot)) as f32;
    let invv = _mm256_set1_ps(inv);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n.
        unsafe { _mm256_storeu_ps(p.add(i), _mm256_mul_ps(_mm256_loadu_ps(p.add(i)), invv)) };
        i += 8;
    }
    for v in &mut x[i..] {
        *v *= inv;
    }
}

/// See `crate::attn::swiglu`.
///
/// # Safety
/// AVX2 and FMA must be available; `gate.len() == up.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn swiglu(gate: &mut [f32], up: &[f32]) {
    let n = gate.len();
    let one = _mm256_set1_ps(1.0);
    let f = |g: __m256, u: __m256| {
        let e = expf8(_mm256_xor_ps(g, _mm256_set1_ps(-0.0)));
        _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), u)
    };
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n = up.len().
        unsafe {
            let g = _mm256_loadu_ps(gate.as_ptr().add(i));
            let u = _mm256_loadu_ps(up.as_ptr().add(i));
            _mm256_storeu_ps(gate.as_mut_ptr().add(i), f(g, u));
        }
        i += 8;
    }
    if i < n {
        let (mut g, mut u) = ([0.0f32; 8], [0.0f32; 8]);
        g[..n - i].copy_from_slice(&gate[i..]);
        u[..n - i].copy_from_slice(&up[i..]);
        // SAFETY: 8 f32 of stack each.
        unsafe {
            let r = f(_mm256_loadu_ps(g.as_ptr()), _mm256_loadu_ps(u.as_ptr()));
            _mm256_storeu_ps(g.as_mut_ptr(), r);
        }
        gate[i..].copy_from_slice(&g[..n - i]);
    }
}

// AVX-512 versions of the two kernels that dominate attention over a long context:
// one 16-lane accumulator per zmm is tinyBLAS's own layout, and widening 16 f16 per
// instruction halves the conversions and the accumulator traffic. Same operations per
// lane as the 8-lane versions above, so the results are the same bit for bit.

/// 16 f16 at `p` → f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn load_h16(p: *const f16) -> __m512 {
    // SAFETY: the caller guarantees 16 readable f16 at p.
    _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(p.cast()) })
}

/// `_mm512_reduce_add_ps` in ggml's order: halves folded 8, 4, 2, 1.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
fn reduce512(a: __m512) -> f32 {
    let lo = _mm512_castps512_ps256(a);
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(a)));
    reduce16(lo, hi)
}

/// See `crate::attn::f16_scores`.
///
/// # Safety
/// AVX-512F, AVX2, FMA and F16C must be available; `q.len()` is a non-zero multiple
/// of `order.lanes()` (so of 16) and `keys.len() == out.len() * q.len()`.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
pub unsafe fn f16_scores_512(q: &[f32], keys: &[f16], order: F16Sum, scale: f32, out: &mut [f32]) {
    let hd = q.len();
    let (k, qp) = (keys.as_ptr(), q.as_ptr());
    match order {
        F16Sum::TinyBlas => {
            let mut j = 0;
            while j + 4 <= out.len() {
                let mut a = [_mm512_setzero_ps(); 4];
                for c in (0..hd).step_by(16) {
                    // SAFETY: c + 16 <= hd; rows j..j+4 are inside `keys`.
                    unsafe {
                        let qv = _mm512_loadu_ps(qp.add(c));
                        for (r, ar) in a.iter_mut().enumerate() {
                            *ar = _mm512_fmadd_ps(qv, load_h16(k.add((j + r) * hd + c)), *ar);
                        }
                    }
                }
                for (r, ar) in a.iter().enumerate() {
                    out[j + r] = reduce512(*ar) * scale;
                }
                j += 4;
            }
            while j < out.len() {
                let mut a = _mm512_setzero_ps();
                for c in (0..hd).step_by(16) {
                    // SAFETY: c + 16 <= hd; row j is inside `keys`.
                    unsafe {
                        a = _mm512_fmadd_ps(
                            _mm512_loadu_ps(qp.add(c)),
                            load_h16(k.add(j * hd + c)),
                            a,
                        );
                    }
                }
                out[j] = reduce512(a) * scale;
                j += 1;
            }
        }
        F16Sum::VecDot => {
            for (j, o) in out.iter_mut().enumerate() {
                let mut a = [_mm512_setzero_ps(); 4];
                for c in (0..hd).step_by(64) {
                    for (g, ag) in a.iter_mut().enumerate() {
                        // SAFETY: c + 64 <= hd; row j is inside `keys`.
                        unsafe {
                            let at = c + 16 * g;
                            *ag = _mm512_fmadd_ps(
                                _mm512_loadu_ps(qp.add(at)),
                                load_h16(k.add(j * hd + at)),
                                *ag,
                            );
                        }
                    }
                }
                // ggml_vec_dot_f16's fold of its four accumulators: (a0 + a2) + (a1 + a3).
                let s = _mm512_add_ps(_mm512_add_ps(a[0], a[2]), _mm512_add_ps(a[1], a[3]));
                *o = reduce512(s) * scale;
            }
        }
    }
}

/// Rows `0..w.len()` of one query, row `j` into lane `(slot + j) % lanes`.
///
/// # Safety
/// `v` holds `w.len()` rows of `hd` f16 (a multiple of 16) and `acc` `lanes` × `hd` f32;
/// AVX-512F available.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn accumulate_rows(
    w: &[f32],
    v: *const f16,
    hd: usize,
    mut slot: usize,
    lanes: usize,
    acc: *mut f32,
) {
    for (j, &wj) in w.iter().enumerate() {
        let wv = _mm512_set1_ps(wj);
        // SAFETY: row j and lane `slot` are inside `v` and `acc` (caller contract).
        unsafe {
            let dst = acc.add(slot * hd);
            let src = v.add(j * hd);
            for d in (0..hd).step_by(16) {
                let p = dst.add(d);
                _mm512_storeu_ps(
                    p,
                    _mm512_fmadd_ps(wv, load_h16(src.add(d)), _mm512_loadu_ps(p)),
                );
            }
        }
        slot += 1;
        if slot == lanes {
            slot = 0;
        }
    }
}

/// Rows `16 * groups` of one query, row `j` into lane `j % 16` (`acc`: `[16][hd]`):
/// for each 16-wide column chunk the 16 lanes stay in registers over all rows, where
/// [`accumulate_rows`] loads and stores them per row. Same FMAs in the same order.
///
/// # Safety
/// `w` holds `16 * groups` weights, `v` that many rows of `hd` f16 (a multiple of 16)
/// and `acc` 16 × `hd` f32; AVX-512F available.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn accumulate_groups16(
    w: *const f32,
    v: *const f16,
    hd: usize,
    groups: usize,
    acc: *mut f32,
) {
    if groups == 0 {
        return;
    }
    for c in (0..hd).step_by(16) {
        // SAFETY: lane l's chunk c lies inside `acc` (caller contract).
        let mut r: [__m512; 16] =
            core::array::from_fn(|l| unsafe { _mm512_loadu_ps(acc.add(l * hd + c)) });
        for g in 0..groups {
            for (l, rl) in r.iter_mut().enumerate() {
                let j = 16 * g + l;
                // SAFETY: row j < 16 * groups of `w` and `v` (caller contract).
                unsafe {
                    *rl =
                        _mm512_fmadd_ps(_mm512_set1_ps(*w.add(j)), load_h16(v.add(j * hd + c)), *rl)
                };
            }
        }
        for (l, rl) in r.iter().enumerate() {
            // SAFETY: as above.
            unsafe { _mm512_storeu_ps(acc.add(l * hd + c), *rl) };
        }
    }
}

/// See `crate::attn::f16_accumulate`.
///
/// # Safety
/// As [`f16_accumulate`], with AVX-512F available and `hd` a multiple of 16.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
pub unsafe fn f16_accumulate_512(
    w: &[f32],
    w_stride: usize,
    vals: &[f16],
    hd: usize,
    first_slot: usize,
    lanes: usize,
    acc: &mut [f32],
) {
    let m = acc.len() / (lanes * hd);
    let v = vals.as_ptr();
    let slot = first_slot % lanes;
    let n = vals.len() / hd;
    // Each query on its own (its lanes' sums do not depend on the other queries). In
    // the 16-lane (batch) order, rows up to the next slot-0 boundary and after the
    // last whole group of 16 go row by row; the groups in between keep all 16 lanes of
    // a 16-wide column chunk in registers.
    let (head, groups) = if lanes == 16 {
        let head = ((16 - slot) % 16).min(n);
        (head, (n - head) / 16)
    } else {
        (n, 0)
    };
    let mid = head + 16 * groups;
    for (i, acc) in acc.chunks_exact_mut(lanes * hd).enumerate().take(m) {
        let (w, a) = (&w[i * w_stride..][..n], acc.as_mut_ptr());
        // SAFETY: the three calls cover rows [0, head), [head, mid) and [mid, n) of
        // query i, inside `w` and `vals` (checked by `f16_accumulate`), and its lanes.
        unsafe {
            accumulate_rows(&w[..head], v, hd, slot, lanes, a);
            accumulate_groups16(w.as_ptr().add(head), v.add(head * hd), hd, groups, a);
            let tail = v.add(mid * hd);
            accumulate_rows(&w[mid..], tail, hd, (slot + mid) % lanes, lanes, a);
        }
    }
}
