//! AVX-512 tiles on Q4_1 and Q8_0 matrices interleaved by 16 rows (see
//! `crate::interleave`): 16 rows × T tokens, one row per 32-bit lane.
//!
//! Each row's result is the 256-bit kernels' to the bit: lane r of `acc[k]` follows
//! lane k of the row's 256-bit accumulator (the 4 products of quants 4k..4k + 4 summed
//! exactly, scaled by the f32 product `d_w · d_y`, added with one FMA per block), and
//! the final sum adds the 8 accumulators in `hsum_f32`'s tree. Q4_1's min term is
//! summed per block (`m_w · s_y`, multiply then add) and added last; Q8_0's quants are
//! stored as `w + 128` (unsigned, as `vpdpbusd` wants) and each 4-quant sum starts from
//! `-128 · Σy`, so the integer sums are exact.

use core::arch::x86_64::*;

use super::gemv512::f16_bcast;
use crate::interleave::ROWS;
use crate::reference::q4::Q4_1_BYTES;
use crate::reference::q8::{Q8_0_BYTES, Q8_1_BYTES};

/// Bytes of one block of an interleaved Q4_1 group.
const Q4_1_GROUP_BLOCK: usize = ROWS * Q4_1_BYTES;
/// Bytes of one block of an interleaved Q8_0 group.
const Q8_0_GROUP_BLOCK: usize = ROWS * Q8_0_BYTES;

/// Tokens per prefill tile (8 accumulators per token).
pub(crate) const TOKENS: usize = 4;

/// f16 at `p` as f32 in all 16 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn f16_splat(p: *const u8) -> __m512 {
    // SAFETY: the caller guarantees 2 readable bytes at p.
    _mm512_broadcastss_ps(_mm256_castps256_ps128(unsafe { f16_bcast(p) }))
}

/// `nb` blocks of one interleaved group at `w` times T Q8_1 activation rows (`as_`
/// bytes apart); writes token t's 16 row results to `out[t]`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q4_1_rows16<const T: usize>(
    nb: usize,
    w: *const u8,
    a: *const u8,
    as_: usize,
    out: &mut [[f32; ROWS]; T],
) {
    let mut acc = [[_mm512_setzero_ps(); 8]; T];
    let mut accm = [_mm512_setzero_ps(); T];
    let low = _mm512_set1_epi8(0x0f);
    for b in 0..nb {
        // SAFETY: block b of the group lies inside `w` (checked by the entry wrapper).
        let x = unsafe { w.add(b * Q4_1_GROUP_BLOCK) };
        // SAFETY: as above: 32 bytes of d, 32 of m, 4 × 64 of quants.
        let (d, m) = unsafe {
            (
                _mm512_cvtph_ps(_mm256_loadu_si256(x.cast())),
                _mm512_cvtph_ps(_mm256_loadu_si256(x.add(32).cast())),
            )
        };
        let mut q = [_mm512_setzero_si512(); 8];
        for g in 0..4 {
            // SAFETY: as above.
            let v = unsafe { _mm512_loadu_si512(x.add(64 + 64 * g).cast()) };
            q[g] = _mm512_and_si512(v, low);
            q[g + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
        }
        for t in 0..T {
            // SAFETY: block b of activation row t (checked by the entry wrapper).
            let y = unsafe { a.add(t * as_ + b * Q8_1_BYTES) };
            // SAFETY: its f16 scale and f16 sum lead the block.
            let (dy, sy) = unsafe { (f16_splat(y), f16_splat(y.add(2))) };
            accm[t] = _mm512_add_ps(accm[t], _mm512_mul_ps(m, sy));
            let sc = _mm512_mul_ps(d, dy);
            for (k, qk) in q.iter().enumerate() {
                // SAFETY: quants 4k..4k + 4 of the block.
                let yk = unsafe { y.add(4 + 4 * k).cast::<i32>().read_unaligned() };
                let s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), *qk, _mm512_set1_epi32(yk));
                acc[t][k] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(s), acc[t][k]);
            }
        }
    }
    for t in 0..T {
        let s = _mm512_add_ps(lane_tree(&acc[t]), accm[t]);
        // SAFETY: out[t] is 16 writable f32.
        unsafe { _mm512_storeu_ps(out[t].as_mut_ptr(), s) };
    }
}

/// The 8 per-lane accumulators added in `hsum_f32`'s tree: (0 + 4) + (2 + 6), then
/// (1 + 5) + (3 + 7), then the two.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn lane_tree(a: &[__m512; 8]) -> __m512 {
    _mm512_add_ps(
        _mm512_add_ps(_mm512_add_ps(a[0], a[4]), _mm512_add_ps(a[2], a[6])),
        _mm512_add_ps(_mm512_add_ps(a[1], a[5]), _mm512_add_ps(a[3], a[7])),
    )
}

/// Q8_0 × Q8_0: `nb` blocks of one interleaved group at `w` times T activation rows
/// (`as_` bytes apart); writes token t's 16 row results to `out[t]`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q8_0_rows16<const T: usize>(
    nb: usize,
    w: *const u8,
    a: *const u8,
    as_: usize,
    out: &mut [[f32; ROWS]; T],
) {
    let mut acc = [[_mm512_setzero_ps(); 8]; T];
    let c128 = _mm256_set1_epi8(-128);
    for b in 0..nb {
        // SAFETY: block b of the group lies inside `w` (checked by the entry wrapper):
        // 32 bytes of d, then 8 × 64 of quants.
        let x = unsafe { w.add(b * Q8_0_GROUP_BLOCK) };
        // SAFETY: as above.
        let d = _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(x.cast()) });
        // SAFETY: as above.
        let q: [__m512i; 8] =
            core::array::from_fn(|g| unsafe { _mm512_loadu_si512(x.add(32 + 64 * g).cast()) });
        for (t, acc_t) in acc.iter_mut().enumerate() {
            // SAFETY: block b of activation row t (checked by the entry wrapper): its
            // f16 scale, then 32 quants.
            let (y, dy, ys) = unsafe {
                let y = a.add(t * as_ + b * Q8_0_BYTES);
                (y, f16_splat(y), _mm256_loadu_si256(y.add(2).cast()))
            };
            let sc = _mm512_mul_ps(d, dy);
            // -128 · (the sum of each 4 quants), lane k for quants 4k..4k + 4.
            let off = _mm256_sub_epi32(
                _mm256_setzero_si256(),
                _mm256_dpbusd_epi32(_mm256_setzero_si256(), c128, ys),
            );
            let off = _mm512_castsi256_si512(off);
            for (k, qk) in q.iter().enumerate() {
                let base = _mm512_permutexvar_epi32(_mm512_set1_epi32(k as i32), off);
                // SAFETY: quants 4k..4k + 4 of the block.
                let yk = unsafe { y.add(2 + 4 * k).cast::<i32>().read_unaligned() };
                let s = _mm512_dpbusd_epi32(base, *qk, _mm512_set1_epi32(yk));
                acc_t[k] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(s), acc_t[k]);
            }
        }
    }
    for (o, a) in out.iter_mut().zip(&acc) {
        // SAFETY: o is 16 writable f32.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), lane_tree(a)) };
    }
}

fn check(cols: usize, w: &[u8], wb: usize, a: &[u8], ab: usize, tokens: usize, out: &[f32]) {
    let nb = cols / 32;
    assert!(
        cols.is_multiple_of(32)
            && w.len() >= nb * ROWS * wb
            && a.len() >= tokens * nb * ab
            && out.len() >= ROWS * tokens,
        "16-row interleaved tile operands too short for {cols} columns"
    );
}

/// Writes the T × 16 results as the tile contract wants: `out[i * T + j]`.
fn store<const T: usize>(o: &[[f32; ROWS]; T], out: &mut [f32]) {
    for (j, ot) in o.iter().enumerate() {
        for (i, &v) in ot.iter().enumerate() {
            out[i * T + j] = v;
        }
    }
}

macro_rules! x16_entry {
    ($name:ident, $t:expr, $wbytes:expr, $abytes:expr, $kern:ident) => {
        /// `out[i * T + j] = dot(row i of the interleaved group w, activation row j)`.
        pub(crate) fn $name(cols: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
            check(cols, w, $wbytes, a, $abytes, $t, out);
            let nb = cols / 32;
            let mut o = [[0.0f32; ROWS]; $t];
            // SAFETY: the AVX-512 set is only built after its features were detected;
            // the lengths were checked above.
            unsafe { $kern::<{ $t }>(nb, w.as_ptr(), a.as_ptr(), nb * $abytes, &mut o) };
            store(&o, out);
        }
    };
}
x16_entry!(gemv_q4_1x16_q8_1, 1, Q4_1_BYTES, Q8_1_BYTES, q4_1_rows16);
x16_entry!(
    gemm_q4_1x16_q8_1,
    TOKENS,
    Q4_1_BYTES,
    Q8_1_BYTES,
    q4_1_rows16
);
x16_entry!(gemv_q8_0x16_q8_0, 1, Q8_0_BYTES, Q8_0_BYTES, q8_0_rows16);
x16_entry!(
    gemm_q8_0x16_q8_0,
    TOKENS,
    Q8_0_BYTES,
    Q8_0_BYTES,
    q8_0_rows16
);
