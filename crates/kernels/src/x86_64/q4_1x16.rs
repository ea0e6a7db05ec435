//! AVX-512 tiles on Q4_1 matrices interleaved by 16 rows (see `crate::interleave`):
//! 16 rows × T tokens, one row per 32-bit lane.
//!
//! Each row's result is the 256-bit kernels' to the bit: lane r of `acc[k]` follows
//! lane k of the row's 256-bit accumulator (the 4 products of quants 4k..4k + 4 summed
//! exactly, scaled by the f32 product `d_w · d_y`, added with one FMA per block), the
//! final sum adds the 8 accumulators in `hsum_f32`'s tree, and the min term is summed
//! per block (`m_w · s_y`, multiply then add) and added last.

use core::arch::x86_64::*;

use crate::interleave::{GROUP_BLOCK, ROWS};
use crate::reference::q8::Q8_1_BYTES;

/// Tokens per prefill tile (8 accumulators per token).
pub(crate) const TOKENS: usize = 4;

/// f16 at `p` as f32 in all 16 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn f16_splat(p: *const u8) -> __m512 {
    // SAFETY: the caller guarantees 2 readable bytes at p.
    let bits = unsafe { p.cast::<u16>().read_unaligned() };
    _mm512_set1_ps(_mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(
        bits,
    )))))
}

/// `nb` blocks of one interleaved group at `w` times T Q8_1 activation rows (`as_`
/// bytes apart); writes token t's 16 row results to `out[t]`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows16<const T: usize>(
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
        let x = unsafe { w.add(b * GROUP_BLOCK) };
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
        let a = &acc[t];
        let s = _mm512_add_ps(
            _mm512_add_ps(_mm512_add_ps(a[0], a[4]), _mm512_add_ps(a[2], a[6])),
            _mm512_add_ps(_mm512_add_ps(a[1], a[5]), _mm512_add_ps(a[3], a[7])),
        );
        // SAFETY: out[t] is 16 writable f32.
        unsafe { _mm512_storeu_ps(out[t].as_mut_ptr(), _mm512_add_ps(s, accm[t])) };
    }
}

fn check(cols: usize, w: &[u8], a: &[u8], tokens: usize, out: &[f32]) -> usize {
    let nb = cols / 32;
    assert!(
        cols.is_multiple_of(32)
            && w.len() >= nb * GROUP_BLOCK
            && a.len() >= tokens * nb * Q8_1_BYTES
            && out.len() >= ROWS * tokens,
        "Q4_1x16 tile operands too short for {cols} columns"
    );
    nb
}

/// One token: `out[i] = dot(row i of the group w, a)`.
pub(crate) fn gemv_q4_1x16_q8_1(cols: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    let nb = check(cols, w, a, 1, out);
    let mut o = [[0.0f32; ROWS]; 1];
    // SAFETY: the AVX-512 set is only built after its features were detected; the
    // lengths were checked above.
    unsafe { rows16::<1>(nb, w.as_ptr(), a.as_ptr(), nb * Q8_1_BYTES, &mut o) };
    out[..ROWS].copy_from_slice(&o[0]);
}

/// [`TOKENS`] tokens: `out[i * TOKENS + j] = dot(row i, a row j)`.
pub(crate) fn gemm_q4_1x16_q8_1(cols: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    let nb = check(cols, w, a, TOKENS, out);
    let mut o = [[0.0f32; ROWS]; TOKENS];
    // SAFETY: as in `gemv_q4_1x16_q8_1`.
    unsafe { rows16::<TOKENS>(nb, w.as_ptr(), a.as_ptr(), nb * Q8_1_BYTES, &mut o) };
    for (j, ot) in o.iter().enumerate() {
        for (i, &v) in ot.iter().enumerate() {
            out[i * TOKENS + j] = v;
        }
    }
}
