//! x86-64 versions of `crate::attn`'s rounding, softmax, lane folding and SwiGLU, and
//! the helpers the score (`attn_scores`) and weighted-sum (`attn_wsum`) kernels
//! share: the same IEEE operations in the same order per lane as the scalar
//! reference, 8 lanes at a time with AVX2 + FMA + F16C (so results are
//! bit-identical), and 16 with AVX-512 where a long context makes it count.

use core::arch::x86_64::*;

use half::f16;

use super::attn_scores::reduce512x4;
use crate::attn::{EXP_C, EXP_LN2_HI, EXP_LN2_LO, EXP_LOG2E, EXP_ROUND, F16Sum};

/// 8 f16 at `p` → f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn load_h(p: *const f16) -> __m256 {
    // SAFETY: the caller guarantees 8 readable f16 at p.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p.cast()) })
}

/// `_mm512_reduce_add_ps` of lanes `lo` (0..8) and `hi` (8..16): folds 8, 4, 2, 1.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn reduce16(lo: __m256, hi: __m256) -> f32 {
    let t8 = _mm256_add_ps(lo, hi);
    let t4 = _mm_add_ps(_mm256_castps256_ps128(t8), _mm256_extractf128_ps(t8, 1));
    let t2 = _mm_add_ps(t4, _mm_movehl_ps(t4, t4));
    _mm_cvtss_f32(_mm_add_ss(t2, _mm_movehdup_ps(t2)))
}

/// `x` rounded to f16 and back, with round-to-nearest-even like `half`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn round_f16(x: f32) -> f32 {
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

// AVX-512: one 16-lane accumulator per zmm is tinyBLAS's own layout, and widening 16
// f16 per instruction halves the conversions. Same operations per lane as the 8-lane
// versions above, so the results are the same bit for bit.

/// 16 f16 at `p` → f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
pub(super) unsafe fn load_h16(p: *const f16) -> __m512 {
    // SAFETY: the caller guarantees 16 readable f16 at p.
    _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(p.cast()) })
}

/// `_mm512_reduce_add_ps` in ggml's order: halves folded 8, 4, 2, 1.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
pub(super) fn reduce512(a: __m512) -> f32 {
    let lo = _mm512_castps512_ps256(a);
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(a)));
    reduce16(lo, hi)
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
