//! Attention scores (`crate::attn::f16_scores`, `f16_scores_many`): Q·K dots in
//! ggml's two summation orders, bit-identical to the scalar reference. AVX2 on 8
//! lanes (two registers per 16-lane tinyBLAS accumulator), AVX-512 on 16 (one zmm
//! per accumulator); for several queries, key blocks are widened to f32 once and
//! scored in register tiles of queries × keys.

use core::arch::x86_64::*;

use half::f16;

use super::attn::{load_h, load_h16, reduce16, reduce512};
use crate::attn::F16Sum;

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

/// See `crate::attn::f16_scores_many`, tinyBLAS order, on 8-wide registers: key
/// blocks are widened once (the conversion costs as much as the FMA it feeds) and
/// scored against every query, 2 queries × 2 keys per tile.
///
/// # Safety
/// AVX2, FMA and F16C must be available; `hd` is a multiple of 16 with
/// `2 * hd <= 8192`, `q` and `keys` hold whole rows of `hd`, and `out` holds row `i`
/// (one score per key) at `i * stride` for each query.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f16_scores_many_256(
    q: &[f32],
    keys: &[f16],
    hd: usize,
    scale: f32,
    out: &mut [f32],
    stride: usize,
) {
    let (m, n) = (q.len() / hd, keys.len() / hd);
    let per_block = (BLOCK_F32 / hd) & !1;
    let mut block = Block([0.0; BLOCK_F32]);
    let buf = block.0.as_mut_ptr();
    let (qp, o) = (q.as_ptr(), out.as_mut_ptr());
    for j0 in (0..n).step_by(per_block) {
        let nb = per_block.min(n - j0);
        // SAFETY: rows j0..j0 + nb are inside `keys`, nb * hd <= BLOCK_F32, and every
        // query row and score written is inside `q` and `out` (caller contract).
        unsafe {
            let src = keys.as_ptr().add(j0 * hd);
            for e in (0..nb * hd).step_by(8) {
                _mm256_storeu_ps(buf.add(e), load_h(src.add(e)));
            }
            let k = buf.cast_const();
            let whole = nb & !1;
            let mut i = 0;
            while i < m {
                let (qi, oi) = (qp.add(i * hd), o.add(i * stride + j0));
                let pair = m - i >= 2;
                for j in (0..whole).step_by(2) {
                    if pair {
                        scores_tile_256::<2>(qi, k.add(j * hd), hd, scale, oi.add(j), stride);
                    } else {
                        scores_tile_256::<1>(qi, k.add(j * hd), hd, scale, oi.add(j), stride);
                    }
                }
                for r in 0..if pair { 2 } else { 1 } {
                    for j in whole..nb {
                        let (qr, kj) = (qi.add(r * hd), k.add(j * hd));
                        let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                        for c in (0..hd).step_by(16) {
                            let (qc, kc) = (qr.add(c), kj.add(c));
                            lo = _mm256_fmadd_ps(_mm256_loadu_ps(qc), _mm256_loadu_ps(kc), lo);
                            hi = _mm256_fmadd_ps(
                                _mm256_loadu_ps(qc.add(8)),
                                _mm256_loadu_ps(kc.add(8)),
                                hi,
                            );
                        }
                        *oi.add(r * stride + j) = reduce16(lo, hi) * scale;
                    }
                }
                i += if pair { 2 } else { 1 };
            }
        }
    }
}

/// Scores of `Q` (1 or 2) queries at `q` against 2 widened keys at `k`, tinyBLAS
/// order, written at `out + i * stride + r`: lanes 0..8 and 8..16 of each sum in two
/// registers, the four sums then reduced together as [`reduce16`] reduces one.
///
/// # Safety
/// `q` holds `Q` rows and `k` 2 rows of `hd` (a multiple of 16) f32, `out` room for
/// 2 values in each of `Q` rows of `stride`; AVX2, FMA and F16C available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scores_tile_256<const Q: usize>(
    q: *const f32,
    k: *const f32,
    hd: usize,
    scale: f32,
    out: *mut f32,
    stride: usize,
) {
    let mut lo = [[_mm256_setzero_ps(); 2]; Q];
    let mut hi = [[_mm256_setzero_ps(); 2]; Q];
    for c in (0..hd).step_by(16) {
        for i in 0..Q {
            // SAFETY: c + 16 <= hd inside query row i and key rows 0 and 1.
            unsafe {
                let q0 = _mm256_loadu_ps(q.add(i * hd + c));
                let q1 = _mm256_loadu_ps(q.add(i * hd + c + 8));
                for r in 0..2 {
                    let kr = k.add(r * hd + c);
                    lo[i][r] = _mm256_fmadd_ps(q0, _mm256_loadu_ps(kr), lo[i][r]);
                    hi[i][r] = _mm256_fmadd_ps(q1, _mm256_loadu_ps(kr.add(8)), hi[i][r]);
                }
            }
        }
    }
    // 8: lanes i + (i + 8) of each sum. 4: one register per query, key 0's four
    // partial sums in the low 128 bits and key 1's in the high. 2 and 1 within each
    // 128-bit half, both queries at once: (t0 + t2) + (t1 + t3).
    let t = |i: usize, r: usize| _mm256_add_ps(lo[i][r], hi[i][r]);
    let half = |i: usize| {
        let (a, b) = (t(i, 0), t(i, 1));
        _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(a, b),
            _mm256_permute2f128_ps::<0x31>(a, b),
        )
    };
    let c = half(0);
    let d = if Q == 2 { half(1) } else { c };
    let g = _mm256_add_ps(
        _mm256_shuffle_ps::<0x44>(c, d),
        _mm256_shuffle_ps::<0xEE>(c, d),
    );
    let h = _mm256_add_ps(
        _mm256_shuffle_ps::<0x88>(g, g),
        _mm256_shuffle_ps::<0xDD>(g, g),
    );
    // Element 0 of each 128-bit half: query 0; element 1: query 1; low half key 0.
    let r = _mm256_mul_ps(h, _mm256_set1_ps(scale));
    let v = _mm_unpacklo_ps(_mm256_castps256_ps128(r), _mm256_extractf128_ps::<1>(r));
    // SAFETY: 2 values of rows 0..Q fit in `out` (caller contract).
    unsafe {
        _mm_storel_pd(out.cast(), _mm_castps_pd(v));
        if Q == 2 {
            _mm_storeh_pd(out.add(stride).cast(), _mm_castps_pd(v));
        }
    }
}

// AVX-512: one zmm per 16-lane accumulator.

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
pub(super) fn reduce512x4(a: [__m512; 4]) -> __m128 {
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
