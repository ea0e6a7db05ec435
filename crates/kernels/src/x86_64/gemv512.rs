//! 512-bit decode (one token) tiles: 8 weight rows per call, two rows per zmm register.
//!
//! The 256-bit kernels spend ~10 vector ops per (row, block); a decode matvec is then
//! bound by issue, not by memory. Here each 512-bit op serves a block of two rows: the
//! low 256 bits hold row 2p, the high 256 bits row 2p + 1, each lane doing exactly what
//! the same lane of the 256-bit tile does for that row (same integer sums, same scale
//! products, same FMA sequence, same final `hsum_f32`). Results are therefore
//! bit-identical to the 256-bit gemv tile (Q4_1) and to the per-row dot (Q8_0, Q5_0),
//! which is what llama.cpp's `vec_dot` computes.

use core::arch::x86_64::*;

use crate::reference::q4::Q4_1_BYTES;
use crate::reference::q5::Q5_0_BYTES;
use crate::reference::q8::{Q8_0_BYTES, Q8_1_BYTES};

/// Rows per tile.
pub(crate) const ROWS: usize = 8;

/// 16-bit shift counts of 4 (the high nibbles' chunks).
const NIB_HI: i64 = 0x0004_0004_0004_0004;

/// `hsum_f32` of the 256-bit kernels: halves, then pairs, in the same order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn hsum_f32(x: __m256) -> f32 {
    let mut r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    _mm_cvtss_f32(r)
}

/// The 4-byte words at `p + i * stride`, i < 8 (the f16 scale pairs of 8 rows' blocks).
/// Built in registers: a store then a wide load would miss store-to-load forwarding.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn words8(p: *const u8, stride: usize) -> __m256i {
    // SAFETY: the caller guarantees 4 readable bytes at each of the 8 offsets.
    let w = |i: usize| unsafe { p.add(i * stride).cast::<i32>().read_unaligned() };
    _mm256_setr_epi32(w(0), w(1), w(2), w(3), w(4), w(5), w(6), w(7))
}

/// Lane indices that spread row scales over a register pair: for pair `p`, lanes
/// 0..8 take element `2p * step` and lanes 8..16 element `(2p + 1) * step`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn pair_index(p: usize, step: i32) -> __m512i {
    let (a, b) = (2 * p as i32 * step, (2 * p as i32 + 1) * step);
    _mm512_setr_epi32(a, a, a, a, a, a, a, a, b, b, b, b, b, b, b, b)
}

/// Q8_0 × Q8_0, 8 rows × 1 token: `out[i] = dot(w row i, a)`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q8_0_rows8(nb: usize, w: *const u8, ws: usize, a: *const u8, out: &mut [f32]) {
    let mut acc = [_mm512_setzero_ps(); ROWS / 2];
    let idx: [__m512i; ROWS / 2] = core::array::from_fn(|p| pair_index(p, 1));
    let bias = _mm512_set1_epi8(-128);
    for b in 0..nb {
        // SAFETY: block b of the 8 rows and of the activation row are inside the
        // slices (checked by the entry wrapper).
        let y = unsafe { a.add(b * Q8_0_BYTES) };
        let x = unsafe { w.add(b * Q8_0_BYTES) };
        // d of each row (low half of each word; the high half is the first 2 quants).
        let dw = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(unsafe { words8(x, ws) }));
        let dy = _mm256_set1_ps(_mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(unsafe {
            y.cast::<u16>().read_unaligned()
        }
            as i32))));
        let d = _mm512_castps256_ps512(_mm256_mul_ps(dw, dy));
        let qy = _mm512_broadcast_i64x4(unsafe { _mm256_loadu_si256(y.add(2).cast()) });
        // w + 128 as unsigned bytes; the excess 128 * Σy is subtracted up front.
        let base = _mm512_sub_epi32(
            _mm512_setzero_si512(),
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), bias, qy),
        );
        for (p, acc) in acc.iter_mut().enumerate() {
            // SAFETY: as above, rows 2p and 2p + 1.
            let (w0, w1) = unsafe {
                (
                    _mm256_loadu_si256(x.add(2 * p * ws + 2).cast()),
                    _mm256_loadu_si256(x.add((2 * p + 1) * ws + 2).cast()),
                )
            };
            let wz = _mm512_inserti64x4(_mm512_castsi256_si512(w0), w1, 1);
            let s = _mm512_dpbusd_epi32(base, _mm512_xor_si512(wz, bias), qy);
            let sc = _mm512_permutexvar_ps(idx[p], d);
            *acc = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(s), *acc);
        }
    }
    for (p, acc) in acc.iter().enumerate() {
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(*acc), 1));
        out[2 * p] = hsum_f32(_mm512_castps512_ps256(*acc));
        out[2 * p + 1] = hsum_f32(hi);
    }
}

/// Q4_1 × Q8_1, 8 rows × 1 token: `out[i] = dot(w row i, a)` in the 256-bit gemv
/// tile's order (one accumulator; the min term summed per block in a lane of its own).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q4_1_rows8(nb: usize, w: *const u8, ws: usize, a: *const u8, out: &mut [f32]) {
    let mut acc = [_mm512_setzero_ps(); ROWS / 2];
    // Lane 2i + 1 sums m_w(i) * s_a (even lanes unused), as the 256-bit tile does.
    let mut accm = _mm512_setzero_ps();
    let idx: [__m512i; ROWS / 2] = core::array::from_fn(|p| pair_index(p, 2));
    let low4 = _mm512_set1_epi8(0x0f);
    let shifts = _mm512_setr_epi64(
        0,
        0,
        0x0004_0004_0004_0004,
        0x0004_0004_0004_0004,
        0,
        0,
        0x0004_0004_0004_0004,
        0x0004_0004_0004_0004,
    );
    for b in 0..nb {
        // SAFETY: as in q8_0_rows8.
        let y = unsafe { a.add(b * Q8_1_BYTES) };
        let x = unsafe { w.add(b * Q4_1_BYTES) };
        // (d, m) of each row → lanes (2i, 2i + 1); times the activation's (d, s).
        let dm = _mm512_cvtph_ps(unsafe { words8(x, ws) });
        let ys = unsafe { y.cast::<i32>().read_unaligned() };
        let dsy = _mm512_cvtph_ps(_mm256_set1_epi32(ys));
        let prod = _mm512_mul_ps(dm, dsy);
        accm = _mm512_add_ps(accm, prod);
        let qy = _mm512_broadcast_i64x4(unsafe { _mm256_loadu_si256(y.add(4).cast()) });
        for (p, acc) in acc.iter_mut().enumerate() {
            // Chunks (a, a, b, b) of rows a = 2p, b = 2p + 1 (the broadcasts are
            // loads, sparing the shuffle port), then shifted by (0, 4, 0, 4): each
            // half is a row's (low nibbles, high nibbles), as in the 256-bit tile.
            // SAFETY: as above, 16 quant bytes of rows 2p and 2p + 1.
            let (qa, qb) = unsafe {
                (
                    _mm_loadu_si128(x.add(2 * p * ws + 4).cast()),
                    _mm_loadu_si128(x.add((2 * p + 1) * ws + 4).cast()),
                )
            };
            let both = _mm512_mask_broadcast_i32x4(_mm512_broadcast_i32x4(qa), 0xff00, qb);
            let q = _mm512_and_si512(_mm512_srlv_epi16(both, shifts), low4);
            let s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, qy);
            let sc = _mm512_permutexvar_ps(idx[p], prod);
            *acc = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(s), *acc);
        }
    }
    let mut m = [0.0f32; 16];
    // SAFETY: `m` is 16 writable f32.
    unsafe { _mm512_storeu_ps(m.as_mut_ptr(), accm) };
    for (p, acc) in acc.iter().enumerate() {
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(*acc), 1));
        out[2 * p] = hsum_f32(_mm512_castps512_ps256(*acc)) + m[4 * p + 1];
        out[2 * p + 1] = hsum_f32(hi) + m[4 * p + 3];
    }
}
/// Q5_0 × Q8_0, 8 rows × 1 token: `out[i] = dot(w row i, a)`. The 5-bit quants stay
/// unsigned (the fifth bit comes from a mask register) and the -16 offset is applied
/// once per block as -16 * Σy: the same exact integer sums as the per-row dot.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q5_0_rows8(nb: usize, w: *const u8, ws: usize, a: *const u8, out: &mut [f32]) {
    let mut acc = [_mm512_setzero_ps(); ROWS / 2];
    let idx: [__m512i; ROWS / 2] = core::array::from_fn(|p| pair_index(p, 1));
    let (low4, sixteen) = (_mm512_set1_epi8(0x0f), _mm512_set1_epi8(16));
    let shifts = _mm512_setr_epi64(0, 0, NIB_HI, NIB_HI, 0, 0, NIB_HI, NIB_HI);
    for b in 0..nb {
        // SAFETY: as in q8_0_rows8.
        let y = unsafe { a.add(b * Q8_0_BYTES) };
        let x = unsafe { w.add(b * Q5_0_BYTES) };
        let dw = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(unsafe { words8(x, ws) }));
        let dy = _mm256_set1_ps(_mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(unsafe {
            y.cast::<u16>().read_unaligned()
        }
            as i32))));
        let d = _mm512_castps256_ps512(_mm256_mul_ps(dw, dy));
        let qy = _mm512_broadcast_i64x4(unsafe { _mm256_loadu_si256(y.add(2).cast()) });
        let base = _mm512_sub_epi32(
            _mm512_setzero_si512(),
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), sixteen, qy),
        );
        for (p, acc) in acc.iter_mut().enumerate() {
            let (ra, rb) = (2 * p * ws, (2 * p + 1) * ws);
            // SAFETY: as above, the high bits and 16 quant bytes of rows 2p, 2p + 1.
            let (qa, qb, ha, hb) = unsafe {
                (
                    _mm_loadu_si128(x.add(ra + 6).cast()),
                    _mm_loadu_si128(x.add(rb + 6).cast()),
                    x.add(ra + 2).cast::<u32>().read_unaligned(),
                    x.add(rb + 2).cast::<u32>().read_unaligned(),
                )
            };
            let both = _mm512_mask_broadcast_i32x4(_mm512_broadcast_i32x4(qa), 0xff00, qb);
            let q = _mm512_and_si512(_mm512_srlv_epi16(both, shifts), low4);
            // Bit i of a row's qh is the fifth bit of its byte i.
            let hi = u64::from(ha) | (u64::from(hb) << 32);
            let q = _mm512_mask_add_epi8(q, hi, q, sixteen);
            let s = _mm512_dpbusd_epi32(base, q, qy);
            let sc = _mm512_permutexvar_ps(idx[p], d);
            *acc = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(s), *acc);
        }
    }
    for (p, acc) in acc.iter().enumerate() {
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(*acc), 1));
        out[2 * p] = hsum_f32(_mm512_castps512_ps256(*acc));
        out[2 * p + 1] = hsum_f32(hi);
    }
}

macro_rules! rows8_entry {
    ($name:ident, $wbytes:expr, $abytes:expr, $kern:ident) => {
        pub(crate) fn $name(cols: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
            let nb = cols / 32;
            let ws = nb * $wbytes;
            assert!(
                cols.is_multiple_of(32)
                    && w.len() >= ROWS * ws
                    && a.len() >= nb * $abytes
                    && out.len() >= ROWS,
                "gemv tile operands too short for {cols} columns"
            );
            // SAFETY: the AVX-512 set is only built after its features were detected;
            // the lengths were checked above.
            unsafe { $kern(nb, w.as_ptr(), ws, a.as_ptr(), out) }
        }
    };
}
rows8_entry!(gemv_q8_0_q8_0, Q8_0_BYTES, Q8_0_BYTES, q8_0_rows8);
rows8_entry!(gemv_q4_1_q8_1, Q4_1_BYTES, Q8_1_BYTES, q4_1_rows8);
rows8_entry!(gemv_q5_0_q8_0, Q5_0_BYTES, Q8_0_BYTES, q5_0_rows8);
