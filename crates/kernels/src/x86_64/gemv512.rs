//! 512-bit tiles of 8 weight rows × T tokens, two rows per zmm register: decode (T = 1)
//! and prefill (T = 4) for the 32-value block types.
//!
//! The 256-bit kernels spend ~10 vector ops per (row, block) on a single token; a decode
//! matvec is then bound by issue, not by memory. Here each 512-bit op serves a block of
//! two rows: the low 256 bits hold row 2p, the high 256 bits row 2p + 1, each lane doing
//! exactly what the same lane of the 256-bit kernels does for that row (same integer
//! sums, same scale products, same FMA sequence, same final `hsum_f32`). Results are
//! therefore bit-identical to the 256-bit tiles (gemm, and Q4_1's gemv) and, for Q8_0
//! and Q5_0, to the per-row dot, which is what llama.cpp's `vec_dot` computes. Weight
//! blocks are unpacked once per call and reused for the T tokens.

use core::arch::x86_64::*;

use super::avx512::hsum_f32;
use crate::dispatch::TileOut;
use crate::reference::q4::Q4_1_BYTES;
use crate::reference::q5::Q5_0_BYTES;
use crate::reference::q8::{Q8_0_BYTES, Q8_1_BYTES};

/// Rows per tile.
pub(crate) const ROWS: usize = 8;
/// Tokens per prefill tile (16 accumulators of the 32 registers).
pub(crate) const TOKENS: usize = 4;

/// 16-bit shift counts of 4 (the high nibbles' chunks).
const NIB_HI: i64 = 0x0004_0004_0004_0004;

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

/// The f16 at `p` as f32, in all 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn f16_bcast(p: *const u8) -> __m256 {
    // SAFETY: the caller guarantees 2 readable bytes at p.
    let bits = unsafe { p.cast::<u16>().read_unaligned() };
    _mm256_set1_ps(_mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(
        bits,
    )))))
}

/// Rows (a, a, b, b) of 16 bytes each, shifted by (0, 4, 0, 4) and masked: each 256-bit
/// half is one row's (low nibbles, high nibbles), as the 256-bit `nibbles` lays them out.
/// The broadcasts are loads, which spares the shuffle port.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn nibble_pair(pa: *const u8, pb: *const u8) -> __m512i {
    // SAFETY: the caller guarantees 16 readable bytes at pa and at pb.
    let (qa, qb) = unsafe { (_mm_loadu_si128(pa.cast()), _mm_loadu_si128(pb.cast())) };
    let both = _mm512_mask_broadcast_i32x4(_mm512_broadcast_i32x4(qa), 0xff00, qb);
    let shifts = _mm512_setr_epi64(0, 0, NIB_HI, NIB_HI, 0, 0, NIB_HI, NIB_HI);
    _mm512_and_si512(_mm512_srlv_epi16(both, shifts), _mm512_set1_epi8(0x0f))
}

/// 32 activation quants at `p`, in both halves.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn act_pair(p: *const u8) -> __m512i {
    // SAFETY: the caller guarantees 32 readable bytes at p.
    _mm512_broadcast_i64x4(unsafe { _mm256_loadu_si256(p.cast()) })
}

/// Writes row (2p, 2p + 1) × token t sums (+ `extra`) to `out[row * T + t]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn store_pairs<const T: usize>(
    acc: &[[__m512; T]; ROWS / 2],
    extra: impl Fn(usize, usize) -> f32,
    out: &mut [f32],
) {
    for (p, accp) in acc.iter().enumerate() {
        for (t, a) in accp.iter().enumerate() {
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(*a), 1));
            out[2 * p * T + t] = hsum_f32(_mm512_castps512_ps256(*a)) + extra(2 * p, t);
            out[(2 * p + 1) * T + t] = hsum_f32(hi) + extra(2 * p + 1, t);
        }
    }
}

/// The f16 scale `d` that starts each of the 8 rows' blocks at `x` (rows `ws` bytes
/// apart), spread over the register pairs: lanes 0..8 of pair p hold row 2p's, lanes
/// 8..16 row 2p + 1's. Once per block; `offset_block` multiplies them by each token's
/// scale (the same product the 256-bit tiles form).
///
/// # Safety
/// 4 readable bytes at `x + i * ws`, i < 8.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn pair_scales(x: *const u8, ws: usize, idx: &[__m512i; ROWS / 2]) -> [__m512; ROWS / 2] {
    // Low half of each word (the high half is the block's next two bytes).
    // SAFETY: caller contract.
    let dw = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(unsafe { words8(x, ws) }));
    core::array::from_fn(|p| _mm512_permutexvar_ps(idx[p], _mm512_castps256_ps512(dw)))
}

/// Adds one block of T Q8_0 activation rows (`y` rows `as_` bytes apart) times the
/// unsigned weight bytes `wq`, which stand for `w + off` (offset binary for Q8_0, the
/// 5-bit quants for Q5_0): each dot starts from `-off · Σy`, so the integer sums are
/// exact, then scaled by `dws[p] · d_y` and added with one FMA, as the 256-bit tiles do.
///
/// # Safety
/// `y + t * as_` points to a whole Q8_0 block for every t < T.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn offset_block<const T: usize>(
    acc: &mut [[__m512; T]; ROWS / 2],
    wq: &[__m512i; ROWS / 2],
    dws: &[__m512; ROWS / 2],
    y: *const u8,
    as_: usize,
    off: __m512i,
) {
    for t in 0..T {
        // SAFETY: block of token t (caller contract).
        let y = unsafe { y.add(t * as_) };
        let dy = _mm512_broadcastss_ps(_mm256_castps256_ps128(unsafe { f16_bcast(y) }));
        let qy = unsafe { act_pair(y.add(2)) };
        let base = _mm512_sub_epi32(
            _mm512_setzero_si512(),
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), off, qy),
        );
        for (p, accp) in acc.iter_mut().enumerate() {
            let s = _mm512_dpbusd_epi32(base, wq[p], qy);
            let sc = _mm512_mul_ps(dws[p], dy);
            accp[t] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(s), accp[t]);
        }
    }
}

/// Q8_0 × Q8_0, 8 rows × T tokens: `out[i * T + j] = dot(w row i, a row j)`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q8_0_rows8<const T: usize>(
    nb: usize,
    w: *const u8,
    ws: usize,
    a: *const u8,
    as_: usize,
    out: &mut [f32],
) {
    let mut acc = [[_mm512_setzero_ps(); T]; ROWS / 2];
    let idx: [__m512i; ROWS / 2] = core::array::from_fn(|p| pair_index(p, 1));
    let bias = _mm512_set1_epi8(-128);
    for b in 0..nb {
        // SAFETY: block b of the 8 rows and of the T activation rows are inside the
        // slices (checked by the entry wrapper).
        let x = unsafe { w.add(b * Q8_0_BYTES) };
        // SAFETY: the scale words of block b of the 8 rows.
        let dws = unsafe { pair_scales(x, ws, &idx) };
        // Rows 2p | 2p + 1, as w + 128 in unsigned bytes (128 * Σy is subtracted below).
        let wq: [__m512i; ROWS / 2] = core::array::from_fn(|p| {
            // SAFETY: as above, rows 2p and 2p + 1.
            let (w0, w1) = unsafe {
                (
                    _mm256_loadu_si256(x.add(2 * p * ws + 2).cast()),
                    _mm256_loadu_si256(x.add((2 * p + 1) * ws + 2).cast()),
                )
            };
            _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(w0), w1, 1), bias)
        });
        // SAFETY: block b of the T activation rows (checked by the entry wrapper).
        unsafe { offset_block(&mut acc, &wq, &dws, a.add(b * Q8_0_BYTES), as_, bias) };
    }
    store_pairs(&acc, |_, _| 0.0, out);
}

/// Q4_1 × Q8_1, 8 rows × T tokens, in the 256-bit tiles' order (one accumulator; the
/// min term summed per block in a lane of its own).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q4_1_rows8<const T: usize>(
    nb: usize,
    w: *const u8,
    ws: usize,
    a: *const u8,
    as_: usize,
    out: &mut [f32],
) {
    let mut acc = [[_mm512_setzero_ps(); T]; ROWS / 2];
    // Lane 2i + 1 of accm[t] sums m_w(i) * s_a(t) (even lanes unused).
    let mut accm = [_mm512_setzero_ps(); T];
    let idx: [__m512i; ROWS / 2] = core::array::from_fn(|p| pair_index(p, 2));
    for b in 0..nb {
        // SAFETY: as in q8_0_rows8.
        let x = unsafe { w.add(b * Q4_1_BYTES) };
        // (d, m) of each row → lanes (2i, 2i + 1).
        let dm = _mm512_cvtph_ps(unsafe { words8(x, ws) });
        let dms: [__m512; ROWS / 2] = core::array::from_fn(|p| _mm512_permutexvar_ps(idx[p], dm));
        let wq: [__m512i; ROWS / 2] = core::array::from_fn(|p| {
            // SAFETY: as above, the 16 quant bytes of rows 2p and 2p + 1.
            unsafe { nibble_pair(x.add(2 * p * ws + 4), x.add((2 * p + 1) * ws + 4)) }
        });
        for t in 0..T {
            let y = unsafe { a.add(t * as_ + b * Q8_1_BYTES) };
            let ys = unsafe { y.cast::<i32>().read_unaligned() };
            let dsy = _mm512_cvtph_ps(_mm256_set1_epi32(ys));
            let prod = _mm512_mul_ps(dm, dsy);
            let dy = _mm512_permutexvar_ps(_mm512_setzero_si512(), dsy);
            accm[t] = _mm512_add_ps(accm[t], prod);
            let qy = unsafe { act_pair(y.add(4)) };
            for p in 0..ROWS / 2 {
                let s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wq[p], qy);
                let sc = _mm512_mul_ps(dms[p], dy);
                acc[p][t] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(s), acc[p][t]);
            }
        }
    }
    let mut m = [[0.0f32; 16]; T];
    for (mt, a) in m.iter_mut().zip(&accm) {
        // SAFETY: `mt` is 16 writable f32.
        unsafe { _mm512_storeu_ps(mt.as_mut_ptr(), *a) };
    }
    store_pairs(&acc, |row, t| m[t][2 * row + 1], out);
}

/// Q5_0 × Q8_0, 8 rows × T tokens. The 5-bit quants stay unsigned (the fifth bit comes
/// from a mask register) and the -16 offset is applied once per block as -16 * Σy: the
/// same exact integer sums as the per-row dot.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q5_0_rows8<const T: usize>(
    nb: usize,
    w: *const u8,
    ws: usize,
    a: *const u8,
    as_: usize,
    out: &mut [f32],
) {
    let mut acc = [[_mm512_setzero_ps(); T]; ROWS / 2];
    let idx: [__m512i; ROWS / 2] = core::array::from_fn(|p| pair_index(p, 1));
    let sixteen = _mm512_set1_epi8(16);
    for b in 0..nb {
        // SAFETY: as in q8_0_rows8.
        let x = unsafe { w.add(b * Q5_0_BYTES) };
        // SAFETY: the scale words of block b of the 8 rows.
        let dws = unsafe { pair_scales(x, ws, &idx) };
        let wq: [__m512i; ROWS / 2] = core::array::from_fn(|p| {
            let (ra, rb) = (2 * p * ws, (2 * p + 1) * ws);
            // SAFETY: as above, the high bits and 16 quant bytes of rows 2p, 2p + 1.
            let (q, ha, hb) = unsafe {
                (
                    nibble_pair(x.add(ra + 6), x.add(rb + 6)),
                    x.add(ra + 2).cast::<u32>().read_unaligned(),
                    x.add(rb + 2).cast::<u32>().read_unaligned(),
                )
            };
            // Bit i of a row's qh is the fifth bit of its byte i.
            let hi = u64::from(ha) | (u64::from(hb) << 32);
            _mm512_mask_add_epi8(q, hi, q, sixteen)
        });
        // SAFETY: block b of the T activation rows (checked by the entry wrapper).
        unsafe { offset_block(&mut acc, &wq, &dws, a.add(b * Q8_0_BYTES), as_, sixteen) };
    }
    store_pairs(&acc, |_, _| 0.0, out);
}

macro_rules! rows8_entry {
    ($name:ident, $t:expr, $wbytes:expr, $abytes:expr, $kern:ident) => {
        pub(crate) fn $name(cols: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
            let nb = cols / 32;
            let (ws, as_) = (nb * $wbytes, nb * $abytes);
            assert!(
                cols.is_multiple_of(32)
                    && w.len() >= ROWS * ws
                    && a.len() >= $t * as_
                    && out.len() >= ROWS * $t,
                "8-row tile operands too short for {cols} columns"
            );
            // SAFETY: the AVX-512 set is only built after its features were detected;
            // the lengths were checked above.
            unsafe { $kern::<{ $t }>(nb, w.as_ptr(), ws, a.as_ptr(), as_, out) }
        }
    };
}
rows8_entry!(gemv_q8_0_q8_0, 1, Q8_0_BYTES, Q8_0_BYTES, q8_0_rows8);
rows8_entry!(gemv_q4_1_q8_1, 1, Q4_1_BYTES, Q8_1_BYTES, q4_1_rows8);
rows8_entry!(gemv_q5_0_q8_0, 1, Q5_0_BYTES, Q8_0_BYTES, q5_0_rows8);
rows8_entry!(gemm_q8_0_q8_0, TOKENS, Q8_0_BYTES, Q8_0_BYTES, q8_0_rows8);
rows8_entry!(gemm_q4_1_q8_1, TOKENS, Q4_1_BYTES, Q8_1_BYTES, q4_1_rows8);
rows8_entry!(gemm_q5_0_q8_0, TOKENS, Q5_0_BYTES, Q8_0_BYTES, q5_0_rows8);

/// Packed Q5_0 / Q8_0 group of 8 rows, per block: the 4 pair registers of unsigned
/// quants (`q5_0_rows8`'s 5-bit values, `q8_0_rows8`'s w + 128), then the 4 pairs'
/// spread f32 scales.
const PACKED_BLOCK: usize = 8 * 64;
/// Prepared Q8_0 activation block: -off · the 8 lane sums of 4 quants (i32; off = 16
/// for Q5_0 weights, 128 for Q8_0), the 32 quants, the scale as f32, padding to 96
/// bytes (so no 32-byte load crosses a cache line).
const Q8_0_PREP: usize = 96;

/// Packed bytes of a group of 8 Q5_0 or Q8_0 rows of `cols` values.
pub(crate) fn rows8_group_bytes(cols: usize) -> usize {
    cols / 32 * PACKED_BLOCK
}

/// Prepared bytes of one Q8_0 activation row of `cols` values.
pub(crate) fn q8_0_prep_bytes(cols: usize) -> usize {
    cols / 32 * Q8_0_PREP
}

/// Packs `k` (≤ 8) consecutive rows of `wbytes`-byte blocks with `f(nb, w, ws, dst)`
/// (8 whole rows); missing rows are zero.
fn pack_rows8(
    cols: usize,
    w: &[u8],
    k: usize,
    dst: &mut [u8],
    wbytes: usize,
    f: unsafe fn(usize, *const u8, usize, &mut [u8]),
) {
    let nb = cols / 32;
    let ws = nb * wbytes;
    assert!(k <= ROWS && w.len() >= k * ws && dst.len() >= nb * PACKED_BLOCK);
    if k < ROWS {
        let mut full = vec![0u8; ROWS * ws];
        full[..k * ws].copy_from_slice(&w[..k * ws]);
        return pack_rows8(cols, &full, ROWS, dst, wbytes, f);
    }
    // SAFETY: the AVX-512 set is only built after its features were detected; the
    // lengths were checked above.
    unsafe { f(nb, w.as_ptr(), ws, dst) }
}

/// Packs `k` (≤ 8) consecutive Q5_0 rows: the weight side of `q5_0_rows8`, done once
/// per prefill chunk instead of once per 4 tokens.
pub(crate) fn pack_q5_0(cols: usize, w: &[u8], k: usize, dst: &mut [u8]) {
    pack_rows8(cols, w, k, dst, Q5_0_BYTES, pack_q5_0_rows8);
}

/// Packs `k` (≤ 8) consecutive Q8_0 rows: the weight side of `q8_0_rows8`.
pub(crate) fn pack_q8_0(cols: usize, w: &[u8], k: usize, dst: &mut [u8]) {
    pack_rows8(cols, w, k, dst, Q8_0_BYTES, pack_q8_0_rows8);
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn pack_q5_0_rows8(nb: usize, w: *const u8, ws: usize, dst: &mut [u8]) {
    let idx: [__m512i; ROWS / 2] = core::array::from_fn(|p| pair_index(p, 1));
    let sixteen = _mm512_set1_epi8(16);
    for (b, o) in dst.chunks_exact_mut(PACKED_BLOCK).take(nb).enumerate() {
        // SAFETY: block b of the 8 rows (caller contract).
        let x = unsafe { w.add(b * Q5_0_BYTES) };
        let dws = unsafe { pair_scales(x, ws, &idx) };
        for (p, dw) in dws.iter().enumerate() {
            let (ra, rb) = (2 * p * ws, (2 * p + 1) * ws);
            // SAFETY: as above, the high bits and 16 quant bytes of rows 2p, 2p + 1.
            let (q, ha, hb) = unsafe {
                (
                    nibble_pair(x.add(ra + 6), x.add(rb + 6)),
                    x.add(ra + 2).cast::<u32>().read_unaligned(),
                    x.add(rb + 2).cast::<u32>().read_unaligned(),
                )
            };
            let hi = u64::from(ha) | (u64::from(hb) << 32);
            let wq = _mm512_mask_add_epi8(q, hi, q, sixteen);
            // SAFETY: `o` is 512 writable bytes: pair p's quants, then its scales.
            unsafe {
                _mm512_storeu_si512(o.as_mut_ptr().add(64 * p).cast(), wq);
                _mm512_storeu_ps(o.as_mut_ptr().add(256 + 64 * p).cast(), *dw);
            }
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn pack_q8_0_rows8(nb: usize, w: *const u8, ws: usize, dst: &mut [u8]) {
    let idx: [__m512i; ROWS / 2] = core::array::from_fn(|p| pair_index(p, 1));
    let bias = _mm512_set1_epi8(-128);
    for (b, o) in dst.chunks_exact_mut(PACKED_BLOCK).take(nb).enumerate() {
        // SAFETY: block b of the 8 rows (caller contract).
        let x = unsafe { w.add(b * Q8_0_BYTES) };
        let dws = unsafe { pair_scales(x, ws, &idx) };
        for (p, dw) in dws.iter().enumerate() {
            // SAFETY: as above, the 32 quants of rows 2p and 2p + 1.
            let (w0, w1) = unsafe {
                (
                    _mm256_loadu_si256(x.add(2 * p * ws + 2).cast()),
                    _mm256_loadu_si256(x.add((2 * p + 1) * ws + 2).cast()),
                )
            };
            let wq = _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(w0), w1, 1), bias);
            // SAFETY: `o` is 512 writable bytes: pair p's quants, then its scales.
            unsafe {
                _mm512_storeu_si512(o.as_mut_ptr().add(64 * p).cast(), wq);
                _mm512_storeu_ps(o.as_mut_ptr().add(256 + 64 * p).cast(), *dw);
            }
        }
    }
}

/// Prepares one Q8_0 activation row for the packed Q5_0 tile: the scale widened and
/// the `-16 · Σy` lane offsets formed once per call instead of once per 8 rows.
pub(crate) fn prep_q8_0_for_q5_0(cols: usize, a: &[u8], dst: &mut [u8]) {
    prep_q8_0(cols, a, dst, 16);
}

/// The same for the packed Q8_0 tile (`-128 · Σy`).
pub(crate) fn prep_q8_0_for_q8_0(cols: usize, a: &[u8], dst: &mut [u8]) {
    prep_q8_0(cols, a, dst, -128);
}

fn prep_q8_0(cols: usize, a: &[u8], dst: &mut [u8], off: i8) {
    let nb = cols / 32;
    assert!(a.len() >= nb * Q8_0_BYTES && dst.len() >= nb * Q8_0_PREP);
    // SAFETY: as in pack_rows8; lengths checked above.
    unsafe { prep_q8_0_row(nb, a.as_ptr(), dst, off) }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn prep_q8_0_row(nb: usize, a: *const u8, dst: &mut [u8], off: i8) {
    // `off` as an unsigned byte: 16, or 128 (the bit pattern of -128).
    let off = _mm256_set1_epi8(off);
    for (b, o) in dst.chunks_exact_mut(Q8_0_PREP).take(nb).enumerate() {
        // SAFETY: block b of the row (caller contract); `o` is 96 writable bytes.
        unsafe {
            let y = a.add(b * Q8_0_BYTES);
            let qy = _mm256_loadu_si256(y.add(2).cast());
            let base = _mm256_sub_epi32(
                _mm256_setzero_si256(),
                _mm256_dpbusd_epi32(_mm256_setzero_si256(), off, qy),
            );
            let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(
                y.cast::<u16>().read_unaligned(),
            ))));
            _mm256_storeu_si256(o.as_mut_ptr().cast(), base);
            _mm256_storeu_si256(o.as_mut_ptr().add(32).cast(), qy);
            _mm256_storeu_si256(o.as_mut_ptr().add(64).cast(), _mm256_setzero_si256());
            o.as_mut_ptr().add(64).cast::<f32>().write_unaligned(d);
        }
    }
}

/// `q5_0_rows8` / `q8_0_rows8` on a packed group and prepared activations: per (pair, token, block)
/// only the `vpdpbusd`, the scale product, the conversion and the FMA remain, in the
/// same order, so the results are the same bits.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn offset_packed_rows8<const T: usize>(
    nb: usize,
    p: *const u8,
    a: *const u8,
    as_: usize,
    out: TileOut,
) {
    let mut acc = [[_mm512_setzero_ps(); T]; ROWS / 2];
    for b in 0..nb {
        // SAFETY (whole loop body): block b of the packed group and of the T prepared
        // activation rows are inside the slices (checked by the entry wrapper).
        let pb = unsafe { p.add(b * PACKED_BLOCK) };
        let wq: [__m512i; ROWS / 2] =
            core::array::from_fn(|q| unsafe { _mm512_loadu_si512(pb.add(64 * q).cast()) });
        for t in 0..T {
            let y = unsafe { a.add(t * as_ + b * Q8_0_PREP) };
            let base = unsafe { _mm512_broadcast_i64x4(_mm256_loadu_si256(y.cast())) };
            let qy = unsafe { act_pair(y.add(32)) };
            let dy = _mm512_set1_ps(unsafe { y.add(64).cast::<f32>().read_unaligned() });
            for (q, accq) in acc.iter_mut().enumerate() {
                let s = _mm512_dpbusd_epi32(base, wq[q], qy);
                let dw = unsafe { _mm512_loadu_ps(pb.add(256 + 64 * q).cast()) };
                accq[t] = _mm512_fmadd_ps(_mm512_mul_ps(dw, dy), _mm512_cvtepi32_ps(s), accq[t]);
            }
        }
    }
    let mut tile = [0.0f32; ROWS * TOKENS];
    store_pairs(&acc, |_, _| 0.0, &mut tile);
    const { assert!(T <= TOKENS) };
    for i in 0..out.rows {
        for t in 0..T {
            // SAFETY: row i < out.rows, token t < T (caller contract).
            unsafe { *out.at(i, t) = tile[i * T + t] };
        }
    }
}

/// 8 packed Q5_0 or Q8_0 rows (`pack_q5_0` / `pack_q8_0` give both the same offset
/// layout) × TOKENS prepared activation rows → `out.at(i, j)`, i < out.rows.
///
/// # Safety
/// `out` is valid for TOKENS tokens and `out.rows` (≤ 8) rows.
pub(crate) unsafe fn gemm_offset_packed(cols: usize, p: &[u8], a: &[u8], out: TileOut) {
    let nb = cols / 32;
    let as_ = nb * Q8_0_PREP;
    assert!(
        cols.is_multiple_of(32)
            && p.len() >= nb * PACKED_BLOCK
            && a.len() >= TOKENS * as_
            && out.rows <= ROWS,
        "packed tile operands too short for {cols} columns"
    );
    // SAFETY: the AVX-512 set is only built after its features were detected; the
    // lengths were checked above.
    // (`out` per the caller contract.)
    unsafe { offset_packed_rows8::<TOKENS>(nb, p.as_ptr(), a.as_ptr(), as_, out) }
}
