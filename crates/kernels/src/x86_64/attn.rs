//! AVX2 + FMA + F16C versions of `crate::attn`: the same IEEE operations in the same
//! order per lane as the scalar reference, 8 lanes at a time (so results are
//! bit-identical). Used by both SIMD sets: the work is small next to the matmuls and
//! 256-bit registers keep the clocks up.

use core::arch::x86_64::*;
use core::array::from_fn;

use half::f16;

use crate::attn::{EXP_C, EXP_LN2_HI, EXP_LN2_LO, EXP_LOG2E, EXP_ROUND, F16Sum, QueryWeights};

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
/// AVX2, FMA and F16C must be available; `hd` is a multiple of 8, and `vals`, `acc`
/// and the weights hold what `crate::attn::f16_accumulate` checks.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f16_accumulate(
    qw: &QueryWeights<'_>,
    vals: &[f16],
    hd: usize,
    first_slot: usize,
    lanes: usize,
    acc: &mut [f32],
) {
    let v = vals.as_ptr();
    for (i, r) in qw.rows.iter().enumerate() {
        let a = acc[i * lanes * hd..].as_mut_ptr();
        let mut slot = (first_slot + r.start) % lanes;
        for j in r.clone() {
            // SAFETY: weight i * stride + j is inside the weights, row j inside `vals`,
            // query i's lane `slot` inside `acc`, d + 8 <= hd (checked by the caller).
            unsafe {
                let wv = _mm256_set1_ps(*qw.w.as_ptr().add(i * qw.stride + j));
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

/// f32 values per block of key rows widened once and then read by every query of a
/// task (32 KiB: stays in a 48 KiB L1 next to the query rows).
const BLOCK_F32: usize = 8192;

/// A block of widened rows, cache-line aligned so that no 64-byte load straddles two
/// lines (rows are multiples of 16 values).
#[repr(C, align(64))]
struct Block([f32; BLOCK_F32]);

/// Widens `n` f16 (a multiple of 16) at `src` into `dst`.
///
/// # Safety
/// `src` holds `n` readable f16 and `dst` room for `n` f32; AVX-512F available.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn widen(src: *const f16, n: usize, dst: *mut f32) {
    for i in (0..n).step_by(16) {
        // SAFETY: i + 16 <= n (caller contract).
        unsafe { _mm512_storeu_ps(dst.add(i), load_h16(src.add(i))) };
    }
}

/// The sums of four 16-lane accumulators, each folded as [`reduce512`] folds one
/// (halves 8, 4, 2, 1), by shuffling them against each other: ~4 operations per sum
/// instead of ~9.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
fn reduce512x4(a: [__m512; 4]) -> __m128 {
    // 8: lanes 0..8 of a0 and a1 against their lanes 8..16, likewise a2 and a3.
    let s01 = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0x44>(a[0], a[1]),
        _mm512_shuffle_f32x4::<0xEE>(a[0], a[1]),
    );
    let s23 = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0x44>(a[2], a[3]),
        _mm512_shuffle_f32x4::<0xEE>(a[2], a[3]),
    );
    // 4: 128-bit lane k now holds accumulator k's four partial sums.
    let u = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0x88>(s01, s23),
        _mm512_shuffle_f32x4::<0xDD>(s01, s23),
    );
    // 2 and 1: (t0 + t2) + (t1 + t3) in element 0 of each 128-bit lane.
    let v = _mm512_add_ps(u, _mm512_permute_ps::<0x4E>(u));
    let r = _mm512_add_ps(v, _mm512_permute_ps::<0xB1>(v));
    let pick = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    _mm512_castps512_ps128(_mm512_permutexvar_ps(pick, r))
}

/// Scores of `Q` queries (rows of `hd` at `q`) against 4 widened key rows at `k`, into
/// `out` (row `i` at `i * stride`), tinyBLAS order.
///
/// # Safety
/// `q` holds `Q` rows and `k` 4 rows of `hd` (a multiple of 16) f32, `out` room for
/// `Q` rows of `stride` with 4 values each; AVX-512F available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn scores_tile<const Q: usize, const HALF: bool>(
    q: *const f32,
    k: *const u8,
    hd: usize,
    scale: f32,
    out: *mut f32,
    stride: usize,
) {
    let mut a = [[_mm512_setzero_ps(); 4]; Q];
    for c in (0..hd).step_by(16) {
        // SAFETY: c + 16 <= hd inside every row (caller contract).
        unsafe {
            let kr: [__m512; 4] = core::array::from_fn(|r| load16::<HALF>(k, r * hd + c));
            for (i, ai) in a.iter_mut().enumerate() {
                let qv = _mm512_loadu_ps(q.add(i * hd + c));
                for (r, air) in ai.iter_mut().enumerate() {
                    *air = _mm512_fmadd_ps(qv, kr[r], *air);
                }
            }
        }
    }
    // SAFETY: 4 values of rows 0..Q fit in `out` (caller contract).
    unsafe { store_tile::<Q>(a, scale, out, stride) };
}

/// [`scores_tile`] in `ggml_vec_dot_f16`'s order (a single token's scores): per query
/// and key, four 16-lane accumulators over steps of 64 values, folded
/// `(a0 + a2) + (a1 + a3)`; the folded sums of the tile then reduced together.
///
/// # Safety
/// As [`scores_tile`], with `hd` a multiple of 64.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn scores_tile_vecdot<const Q: usize, const HALF: bool>(
    q: *const f32,
    k: *const u8,
    hd: usize,
    scale: f32,
    out: *mut f32,
    stride: usize,
) {
    let mut x = [[_mm512_setzero_ps(); 4]; Q];
    for r in 0..4 {
        for (i, xi) in x.iter_mut().enumerate() {
            let mut a = [_mm512_setzero_ps(); 4];
            for c in (0..hd).step_by(64) {
                for (g, ag) in a.iter_mut().enumerate() {
                    let at = c + 16 * g;
                    // SAFETY: at + 16 <= hd inside query row i and key row r (caller
                    // contract).
                    unsafe {
                        let qv = _mm512_loadu_ps(q.add(i * hd + at));
                        *ag = _mm512_fmadd_ps(qv, load16::<HALF>(k, r * hd + at), *ag);
                    }
                }
            }
            xi[r] = _mm512_add_ps(_mm512_add_ps(a[0], a[2]), _mm512_add_ps(a[1], a[3]));
        }
    }
    // SAFETY: 4 values of rows 0..Q fit in `out` (caller contract).
    unsafe { store_tile::<Q>(x, scale, out, stride) };
}

/// Stores a tile's folded 16-lane sums `x[i][r]` (query `i`, key `r`), each reduced
/// as [`reduce512`] reduces one and scaled, at `out + i * stride + r`.
///
/// # Safety
/// 4 values of rows 0..Q fit in `out`; AVX-512F available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn store_tile<const Q: usize>(
    x: [[__m512; 4]; Q],
    scale: f32,
    out: *mut f32,
    stride: usize,
) {
    if Q == 4 {
        let r = _mm512_mul_ps(
            reduce512x16(core::array::from_fn(|i| x[i % 4][i / 4])),
            _mm512_set1_ps(scale),
        );
        // SAFETY: 4 values of rows 0..4 fit in `out` (caller contract).
        unsafe {
            _mm_storeu_ps(out, _mm512_castps512_ps128(r));
            _mm_storeu_ps(out.add(stride), _mm512_extractf32x4_ps::<1>(r));
            _mm_storeu_ps(out.add(2 * stride), _mm512_extractf32x4_ps::<2>(r));
            _mm_storeu_ps(out.add(3 * stride), _mm512_extractf32x4_ps::<3>(r));
        }
        return;
    }
    let sv = _mm_set1_ps(scale);
    for (i, xi) in x.iter().enumerate() {
        // SAFETY: 4 values of row i fit in `out` (caller contract).
        unsafe { _mm_storeu_ps(out.add(i * stride), _mm_mul_ps(reduce512x4(*xi), sv)) };
    }
}

/// The sums of sixteen 16-lane accumulators `x[4e + k]`, each folded as
/// [`reduce512`] folds one, into element `e` of 128-bit lane `k` (~3 operations per
/// sum): [`reduce512x4`]'s first two steps, then the last two across accumulators too.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
fn reduce512x16(x: [__m512; 16]) -> __m512 {
    // 8: lanes 0..8 of each pair against their lanes 8..16.
    let p: [__m512; 8] = core::array::from_fn(|i| {
        let (a, b) = (x[2 * i], x[2 * i + 1]);
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x44>(a, b),
            _mm512_shuffle_f32x4::<0xEE>(a, b),
        )
    });
    // 4: u[i]'s 128-bit lane k holds accumulator 4i + k's partial sums t0..t3.
    let u: [__m512; 4] = core::array::from_fn(|i| {
        let (a, b) = (p[2 * i], p[2 * i + 1]);
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x88>(a, b),
            _mm512_shuffle_f32x4::<0xDD>(a, b),
        )
    });
    // 2: per 128-bit lane [t0 + t2, t1 + t3] of u[2i] and then of u[2i + 1].
    let s: [__m512; 2] = core::array::from_fn(|i| {
        let (a, b) = (u[2 * i], u[2 * i + 1]);
        _mm512_add_ps(
            _mm512_shuffle_ps::<0x44>(a, b),
            _mm512_shuffle_ps::<0xEE>(a, b),
        )
    });
    // 1: (t0 + t2) + (t1 + t3) of u[0], u[1], u[2], u[3] in elements 0..4.
    _mm512_add_ps(
        _mm512_shuffle_ps::<0x88>(s[0], s[1]),
        _mm512_shuffle_ps::<0xDD>(s[0], s[1]),
    )
}

/// See `crate::attn::f16_scores_many`, tinyBLAS order: key blocks are widened once
/// and scored against every query, 4 queries × 4 keys per tile.
///
/// # Safety
/// AVX-512F, AVX2, FMA and F16C must be available; `hd` is a multiple of 16 with
/// `4 * hd <= 8192`, `q` and `keys` hold whole rows of `hd`, and `out` holds row `i`
/// (one score per key) at `i * stride` for each query.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
pub unsafe fn f16_scores_many_512(
    q: &[f32],
    keys: &[f16],
    hd: usize,
    order: F16Sum,
    scale: f32,
    out: &mut [f32],
    stride: usize,
) {
    let (m, n) = (q.len() / hd, keys.len() / hd);
    let per_block = (BLOCK_F32 / hd) & !3;
    // Widening a key block once pays from ~8 queries on (measured: `bench grouped`);
    // fewer convert each key chunk where they read it.
    let widened = m >= 8;
    let mut block = Block([0.0; BLOCK_F32]);
    let buf = &mut block.0;
    for j0 in (0..n).step_by(per_block) {
        let nb = per_block.min(n - j0);
        let keys_here = j0..j0 + nb;
        // SAFETY: rows j0..j0 + nb are inside `keys` and nb * hd <= BLOCK_F32; the
        // widened block holds them.
        unsafe {
            let src = keys.as_ptr().add(j0 * hd);
            if widened {
                widen(src, nb * hd, buf.as_mut_ptr());
                let k = buf.as_ptr().cast();
                scores_block::<false>(q, k, keys_here, hd, order, scale, out, stride);
            } else {
                scores_block::<true>(q, src.cast(), keys_here, hd, order, scale, out, stride);
            }
        }
    }
}

/// Scores of every query against keys `keys` (key `keys.start` at `k`, see [`load16`]).
///
/// # Safety
/// As [`f16_scores_many_512`], with `k` holding those keys.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn scores_block<const HALF: bool>(
    q: &[f32],
    k: *const u8,
    keys: core::ops::Range<usize>,
    hd: usize,
    order: F16Sum,
    scale: f32,
    out: &mut [f32],
    stride: usize,
) {
    let (m, nb, j0) = (q.len() / hd, keys.len(), keys.start);
    let width = if HALF { 2 } else { 4 };
    let (qp, o) = (q.as_ptr(), out.as_mut_ptr());
    let whole = nb & !3;
    let mut i = 0;
    while i < m {
        let rows = (m - i).min(4);
        // SAFETY: queries i..i + rows and the block's keys are inside `q`, `k` and `out`
        // (caller contract); tiles cover keys in fours below `whole`.
        unsafe {
            let (qi, oi) = (qp.add(i * hd), o.add(i * stride + j0));
            for j in (0..whole).step_by(4) {
                let (kj, oj) = (k.add(j * hd * width), oi.add(j));
                match (order, rows) {
                    (F16Sum::TinyBlas, 4) => scores_tile::<4, HALF>(qi, kj, hd, scale, oj, stride),
                    (F16Sum::TinyBlas, 3) => scores_tile::<3, HALF>(qi, kj, hd, scale, oj, stride),
                    (F16Sum::TinyBlas, 2) => scores_tile::<2, HALF>(qi, kj, hd, scale, oj, stride),
                    (F16Sum::TinyBlas, _) => scores_tile::<1, HALF>(qi, kj, hd, scale, oj, stride),
                    (F16Sum::VecDot, 4) => {
                        scores_tile_vecdot::<4, HALF>(qi, kj, hd, scale, oj, stride)
                    }
                    (F16Sum::VecDot, 3) => {
                        scores_tile_vecdot::<3, HALF>(qi, kj, hd, scale, oj, stride)
                    }
                    (F16Sum::VecDot, 2) => {
                        scores_tile_vecdot::<2, HALF>(qi, kj, hd, scale, oj, stride)
                    }
                    (F16Sum::VecDot, _) => {
                        scores_tile_vecdot::<1, HALF>(qi, kj, hd, scale, oj, stride)
                    }
                }
            }
            for r in 0..rows {
                for j in whole..nb {
                    let at = |c: usize| (qi.add(r * hd + c), j * hd + c);
                    let sum = match order {
                        F16Sum::TinyBlas => {
                            let mut a = _mm512_setzero_ps();
                            for c in (0..hd).step_by(16) {
                                let (qc, kc) = at(c);
                                a = _mm512_fmadd_ps(_mm512_loadu_ps(qc), load16::<HALF>(k, kc), a);
                            }
                            a
                        }
                        F16Sum::VecDot => {
                            let mut a = [_mm512_setzero_ps(); 4];
                            for c in (0..hd).step_by(16) {
                                let (qc, kc) = at(c);
                                let g = (c / 16) % 4;
                                a[g] = _mm512_fmadd_ps(
                                    _mm512_loadu_ps(qc),
                                    load16::<HALF>(k, kc),
                                    a[g],
                                );
                            }
                            _mm512_add_ps(_mm512_add_ps(a[0], a[2]), _mm512_add_ps(a[1], a[3]))
                        }
                    };
                    *oi.add(r * stride + j) = reduce512(sum) * scale;
                }
            }
        }
        i += rows;
    }
}

/// 16 values at element `i` of key rows held as f16 (`HALF`) or widened to f32.
///
/// # Safety
/// 16 values of that type are readable at element `i` of `p`; AVX-512F available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn load16<const HALF: bool>(p: *const u8, i: usize) -> __m512 {
    // SAFETY: caller contract.
    unsafe {
        if HALF {
            load_h16(p.cast::<f16>().add(i))
        } else {
            _mm512_loadu_ps(p.cast::<f32>().add(i))
        }
    }
}

/// Rows `0..w.len()` of one query, row `j` into lane `(slot + j) % lanes` if that
/// lane is in `keep`.
///
/// # Safety
/// `v` holds `w.len()` rows of `hd` f16 (a multiple of 16) and `acc` `lanes` × `hd`
/// f32; AVX-512F available.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn accumulate_rows(
    w: &[f32],
    v: *const f16,
    hd: usize,
    mut slot: usize,
    (lanes, keep): (usize, &core::ops::Range<usize>),
    acc: *mut f32,
) {
    for (j, &wj) in w.iter().enumerate() {
        if !keep.contains(&slot) {
            slot = if slot + 1 == lanes { 0 } else { slot + 1 };
            continue;
        }
        let wv = _mm512_set1_ps(wj);
        // SAFETY: row j and lane `slot` are inside `v` and `acc` (caller contract).
        unsafe {
            let dst = acc.add(slot * hd);
            for d in (0..hd).step_by(16) {
                let p = dst.add(d);
                let x = load_h16(v.add(j * hd + d));
                _mm512_storeu_ps(p, _mm512_fmadd_ps(wv, x, _mm512_loadu_ps(p)));
            }
        }
        slot += 1;
        if slot == lanes {
            slot = 0;
        }
    }
}

/// Rows `lanes * groups` (row `j` feeds lane `j % lanes`) of `Q` queries,
/// lanes `l0..l0 + L` and 16-wide column chunks `c0..c0 + C` only: the `Q·L·C`
/// accumulators stay in registers over all rows, each weight broadcast serves `C`
/// chunks and each value load `Q` queries (one load per FMA instead of two). Each
/// accumulator receives the same FMAs in the same order as row by row.
///
/// # Safety
/// `w[q]` holds `lanes * groups` weights, `v` that many rows of `hd` f16 (a multiple
/// of 16, at least `16 * (c0 + C)`), and `acc[q]` `lanes` × `hd` f32, with
/// `l0 + L <= lanes`; AVX-512F available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
// Query, lane and chunk index the register tile together; iterators would hide that.
#[allow(clippy::needless_range_loop)]
unsafe fn groups_tile<const Q: usize, const L: usize, const C: usize>(
    w: [*const f32; Q],
    v: *const f16,
    hd: usize,
    (lanes, groups): (usize, usize),
    (l0, c0): (usize, usize),
    acc: [*mut f32; Q],
) {
    let at = |l: usize, c: usize| (l0 + l) * hd + (c0 + c) * 16;
    // SAFETY: every (lane, chunk) addressed lies inside each query's `acc`.
    let mut a: [[[__m512; C]; L]; Q] = core::array::from_fn(|q| {
        core::array::from_fn(|l| {
            core::array::from_fn(|c| unsafe { _mm512_loadu_ps(acc[q].add(at(l, c))) })
        })
    });
    for g in 0..groups {
        for l in 0..L {
            let j = lanes * g + l0 + l;
            // SAFETY: row j < 16 * groups of every `w[q]` and of `v` (caller contract).
            unsafe {
                let wb: [__m512; Q] = core::array::from_fn(|q| _mm512_set1_ps(*w[q].add(j)));
                for c in 0..C {
                    let vv = load_h16(v.add(j * hd + (c0 + c) * 16));
                    for q in 0..Q {
                        a[q][l][c] = _mm512_fmadd_ps(wb[q], vv, a[q][l][c]);
                    }
                }
            }
        }
    }
    for q in 0..Q {
        for l in 0..L {
            for c in 0..C {
                // SAFETY: as above.
                unsafe { _mm512_storeu_ps(acc[q].add(at(l, c)), a[q][l][c]) };
            }
        }
    }
}

/// Whole groups of `lanes` rows for `Q` queries (1, 2, 4 or 8): the lanes in `keep`
/// (whole sixteens) and every chunk, in tiles of at most 16 accumulators.
///
/// # Safety
/// As [`groups_tile`], for lanes `keep` (inside `0..lanes`, multiples of 16 at both
/// ends) and `hd / 16` chunks.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn accumulate_groups<const Q: usize>(
    w: [*const f32; Q],
    v: *const f16,
    hd: usize,
    (lanes, groups): (usize, usize),
    keep: &core::ops::Range<usize>,
    acc: [*mut f32; Q],
) {
    if groups == 0 {
        return;
    }
    let chunks = hd / 16;
    // SAFETY (all arms): the tiles cover lanes `keep` (L divides 16) and chunks
    // 0..hd / 16 (C divides `chunks`), inside what the caller guarantees.
    macro_rules! tiles {
        ($l:literal, $c:literal) => {
            for l0 in keep.clone().step_by($l) {
                for c0 in (0..chunks).step_by($c) {
                    let shape = (lanes, groups);
                    unsafe { groups_tile::<Q, $l, $c>(w, v, hd, shape, (l0, c0), acc) };
                }
            }
        };
    }
    // More queries per tile means fewer value conversions per FMA (a conversion costs
    // about two FMA slots): 8 queries × 2 chunks reads each chunk of a row twice in
    // all, but converts it once per 8 queries instead of once per 2.
    match (Q, chunks % 4, chunks % 2) {
        (1, 0, _) => tiles!(4, 4),
        (1, _, 0) => tiles!(8, 2),
        (1, _, _) => tiles!(16, 1),
        (2, 0, _) => tiles!(2, 4),
        (2, _, 0) => tiles!(4, 2),
        (2, _, _) => tiles!(8, 1),
        (4, 0, _) => tiles!(1, 4),
        (4, _, 0) => tiles!(2, 2),
        (4, _, _) => tiles!(4, 1),
        (_, _, 0) => tiles!(1, 2),
        _ => tiles!(2, 1),
    }
}

/// Asks for every cache line of `x` to be brought into L2 (a hint: nothing is read
/// into registers, and lines already cached cost a few cycles).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
fn prefetch_l2<T>(x: &[T]) {
    let p = x.as_ptr().cast::<i8>();
    for off in (0..core::mem::size_of_val(x)).step_by(64) {
        // SAFETY: prefetching never faults; every address is inside `x` anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(p.add(off)) };
    }
}

/// Queries per shared pass over value rows, largest first: [`accumulate_groups`]'s
/// tile widths.
const SHARE: [usize; 3] = [8, 4, 2];

/// See `crate::attn::f16_accumulate`. The f16 rows are read in place and converted
/// as they are read, once per up to 8 queries that add them (the heads of a token
/// and consecutive tokens share all but their last few rows).
///
/// # Safety
/// As `crate::attn::f16_accumulate` checks, with AVX-512F available and `hd` a
/// multiple of 16.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
pub unsafe fn f16_accumulate_512(
    qw: &QueryWeights<'_>,
    vals: &[f16],
    hd: usize,
    first_slot: usize,
    (lanes, keep): (usize, core::ops::Range<usize>),
    acc: &mut [f32],
) {
    let rows = qw.rows;
    let lanes = (lanes, &keep);
    // The register tiles read every 16th row (2 KiB apart at head_dim 64), a pattern
    // the hardware prefetchers do not follow; a stored prefix's values are not in any
    // cache yet. One sequential pass of prefetches brings them into L2 first.
    let used = rows.iter().filter(|r| !r.is_empty());
    let lo = used.clone().map(|r| r.start).min().unwrap_or(0);
    let hi = used.map(|r| r.end).max().unwrap_or(0);
    prefetch_l2(&vals[lo * hd..hi * hd]);
    let mut i = 0;
    while i < rows.len() {
        // The widest run of queries from i whose rows overlap in at least a group;
        // each adds its own rows before the shared ones, then the shared ones with
        // the others, then its own after them: every query's rows stay in order.
        let run = SHARE.iter().find_map(|&k| {
            let qs = rows.get(i..i + k)?;
            let lo = qs.iter().map(|r| r.start).max()?;
            let hi = qs.iter().map(|r| r.end).min()?;
            (hi >= lo + lanes.0).then_some((k, lo..hi))
        });
        let Some((k, shared)) = run else {
            // SAFETY: query i's own rows (checked by `f16_accumulate`).
            unsafe { add_rows(qw, &[i], rows[i].clone(), vals, hd, first_slot, lanes, acc) };
            i += 1;
            continue;
        };
        // On the stack: this runs per run of queries, per task, per layer.
        let run_of: [usize; 8] = from_fn(|j| i + j);
        let qs = &run_of[..k];
        // SAFETY (all calls): the ranges lie inside each query's rows (checked by
        // `f16_accumulate`) and are added in increasing order per query.
        unsafe {
            for &q in qs {
                let before = rows[q].start..shared.start;
                add_rows(qw, &[q], before, vals, hd, first_slot, lanes, acc);
            }
            add_rows(qw, qs, shared.clone(), vals, hd, first_slot, lanes, acc);
            for &q in qs {
                let after = shared.end..rows[q].end;
                add_rows(qw, &[q], after, vals, hd, first_slot, lanes, acc);
            }
        }
        i += k;
    }
}

/// Value rows `r` into the accumulators of queries `qs` (1, 2, 4 or 8), only those
/// whose lane is in `lanes.1`: rows up to the next slot-0 boundary and after the last
/// whole group of `lanes.0` go row by row; the groups in between through register
/// tiles.
///
/// # Safety
/// As [`f16_accumulate_512`], with `r` inside the rows of every query in `qs`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn add_rows(
    qw: &QueryWeights<'_>,
    qs: &[usize],
    r: core::ops::Range<usize>,
    vals: &[f16],
    hd: usize,
    first_slot: usize,
    (lanes, keep): (usize, &core::ops::Range<usize>),
    acc: &mut [f32],
) {
    if r.is_empty() {
        return;
    }
    let (r0, n) = (r.start, r.len());
    let v = vals[r0 * hd..].as_ptr();
    let slot = (first_slot + r0) % lanes;
    let lead = ((lanes - slot) % lanes).min(n);
    let groups = (n - lead) / lanes;
    let mid = lead + lanes * groups;
    let w = |q: usize| &qw.w[q * qw.stride + r0..q * qw.stride + r.end];
    let acc_base = acc.as_mut_ptr();
    let a = |q: usize| acc_base.wrapping_add(q * lanes * hd);
    // SAFETY: rows [r0, r.end) of each query lie inside its weights, the value rows
    // and its lanes (caller contract); [0, lead), [lead, mid), [mid, n) partition
    // them and are added in that order.
    unsafe {
        for &q in qs {
            accumulate_rows(&w(q)[..lead], v, hd, slot, (lanes, keep), a(q));
        }
        let gv = v.add(lead * hd);
        let ws = |k: usize| w(qs[k]).as_ptr().add(lead);
        let g = (lanes, groups);
        match qs.len() {
            8 => accumulate_groups::<8>(from_fn(ws), gv, hd, g, keep, from_fn(|k| a(qs[k]))),
            4 => accumulate_groups::<4>(from_fn(ws), gv, hd, g, keep, from_fn(|k| a(qs[k]))),
            2 => accumulate_groups::<2>(from_fn(ws), gv, hd, g, keep, from_fn(|k| a(qs[k]))),
            _ => accumulate_groups::<1>([ws(0)], gv, hd, g, keep, [a(qs[0])]),
        }
        let tail = v.add(mid * hd);
        for &q in qs {
            let slot = (slot + mid) % lanes;
            accumulate_rows(&w(q)[mid..], tail, hd, slot, (lanes, keep), a(q));
        }
    }
}

/// [`crate::attn::ggml_expf`] on 16 lanes: [`expf8`]'s operations, one zmm wide.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
fn expf16(x: __m512) -> __m512 {
    let set = _mm512_set1_ps;
    let round = set(EXP_ROUND);
    let z = _mm512_fmadd_ps(x, set(EXP_LOG2E), round);
    let n = _mm512_sub_ps(z, round);
    let neg_n = _mm512_castsi512_ps(_mm512_xor_si512(
        _mm512_castps_si512(n),
        _mm512_set1_epi32(i32::MIN),
    ));
    let b = _mm512_fmadd_ps(
        neg_n,
        set(EXP_LN2_LO),
        _mm512_fmadd_ps(neg_n, set(EXP_LN2_HI), x),
    );
    let u = _mm512_mul_ps(b, b);
    let j = _mm512_fmadd_ps(
        _mm512_fmadd_ps(
            _mm512_fmadd_ps(set(EXP_C[0]), b, set(EXP_C[1])),
            u,
            _mm512_fmadd_ps(set(EXP_C[2]), b, set(EXP_C[3])),
        ),
        u,
        _mm512_fmadd_ps(set(EXP_C[4]), b, set(1.0)),
    );
    let ni = _mm512_cvttps_epi32(n);
    let a = _mm512_srai_epi32::<1>(_mm512_add_epi32(ni, _mm512_srli_epi32::<31>(ni)));
    let pow2 = |k: __m512i| {
        _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
            k,
            _mm512_set1_epi32(127),
        )))
    };
    let r = _mm512_mul_ps(_mm512_mul_ps(j, pow2(a)), pow2(_mm512_sub_epi32(ni, a)));
    let abs_n = _mm512_castsi512_ps(_mm512_and_si512(
        _mm512_castps_si512(n),
        _mm512_set1_epi32(i32::MAX),
    ));
    let big = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(abs_n, set(192.0));
    let pos = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(n, set(0.0));
    let sat = _mm512_maskz_mov_ps(pos, set(f32::INFINITY));
    _mm512_mask_blend_ps(big, r, sat)
}

/// See `crate::attn::softmax_slots`; with `round`, every probability is then rounded
/// to f16 as `crate::attn::round_f16_slice` does (one pass fewer over the row).
///
/// # Safety
/// AVX-512F, AVX2, FMA and F16C must be available.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
pub unsafe fn softmax_512(x: &mut [f32], first_slot: usize, round: bool) {
    let n = x.len();
    let p = x.as_mut_ptr();
    let tail = |i: usize| -> __mmask16 { ((1u32 << (n - i).min(16)) - 1) as __mmask16 };
    // The max is exact in any order (NaNs aside, which poison every output either way).
    let mut mv = _mm512_set1_ps(f32::NEG_INFINITY);
    for i in (0..n).step_by(16) {
        // SAFETY: the masked lanes are inside `x`.
        mv = _mm512_max_ps(mv, unsafe { _mm512_mask_loadu_ps(mv, tail(i), p.add(i)) });
    }
    let maxv = _mm512_set1_ps(_mm512_reduce_max_ps(mv));
    for i in (0..n).step_by(16) {
        // SAFETY: as above.
        unsafe {
            let e = expf16(_mm512_sub_ps(
                _mm512_maskz_loadu_ps(tail(i), p.add(i)),
                maxv,
            ));
            _mm512_mask_storeu_ps(p.add(i), tail(i), e);
        }
    }
    // ggml's grouping of the sum: per aligned group of 16 cache slots the f32
    // `_mm512_reduce_add_ps` (absent slots 0), then the groups in order in f64.
    let head = ((16 - first_slot % 16) % 16).min(n);
    let mut sum = 0.0f64;
    if head > 0 {
        sum += crate::attn::slot_sum(&x[..head], first_slot);
    }
    let mut i = head;
    while i + 64 <= n {
        // SAFETY: i + 64 <= n.
        let g = unsafe { core::array::from_fn(|k| _mm512_loadu_ps(p.add(i + 16 * k))) };
        let mut s4 = [0.0f32; 4];
        // SAFETY: 4 f32 of stack.
        unsafe { _mm_storeu_ps(s4.as_mut_ptr(), reduce512x4(g)) };
        for s in s4 {
            sum += f64::from(s);
        }
        i += 64;
    }
    while i + 16 <= n {
        // SAFETY: i + 16 <= n.
        sum += f64::from(reduce512(unsafe { _mm512_loadu_ps(p.add(i)) }));
        i += 16;
    }
    if i < n {
        sum += crate::attn::slot_sum(&x[i..], first_slot + i);
    }
    let invv = _mm512_set1_ps((1.0 / sum) as f32);
    for i in (0..n).step_by(16) {
        // SAFETY: the masked lanes are inside `x`.
        unsafe {
            let mut y = _mm512_mul_ps(_mm512_maskz_loadu_ps(tail(i), p.add(i)), invv);
            if round {
                y = _mm512_cvtph_ps(_mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(y));
            }
            _mm512_mask_storeu_ps(p.add(i), tail(i), y);
        }
    }
}
