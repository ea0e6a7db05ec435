//! Prefill tiles for the K-quants on a row-interleaved copy of the weights: 16 rows ×
//! 4 tokens per call, one row per 32-bit lane.
//!
//! GGUF's K-quant layout keeps each row's 256-value super-block contiguous, so a kernel
//! on it sums each (row, token) across the lanes of a register and then reduces them
//! horizontally. Here the matmul driver first packs a chunk's rows (per prefill call, in
//! a scratch buffer: nothing is stored and the model file is read as is) into groups of
//! 16 rows in which every 64-byte vector holds the same 4 values of the 16 rows, already
//! unpacked to bytes, with the scales converted once. One `vpdpbusd` with the 4
//! activation bytes broadcast then adds 4 products to each row's lane, and the f32
//! folds (`fma` per 64 values for Q4_K, per super-block for Q6_K) run 16 rows at a
//! time, with no horizontal sums at all.
//!
//! Each lane computes exactly what the scalar reference computes for its row: the same
//! exact integer sums, the same f32 products and FMA chain. Q4_K's per-pair sum
//! `sc0·lo + sc1·hi` and min term `m0·(b0+b1) + m1·(b2+b3)` are formed in f32, where
//! every operand and result is an integer below 2^24 (|lo| ≤ 32·15·128, sc ≤ 63; |b| ≤
//! 16·128, m ≤ 63), so they equal the reference's i32 sums converted. Results are
//! therefore bit-identical to `reference::kquants::dot_q4_k_q8_k_gemm` (Q4_K) and
//! `dot_q6_k_q8_k_batch` (Q6_K).

use core::arch::x86_64::*;

use crate::dispatch::TileOut;
use crate::reference::f16_at;
use crate::reference::kquants::{
    Q4_K_BYTES, Q6_K_BYTES, Q8_K_BSUMS, Q8_K_BYTES, Q8_K_QS, scales_mins,
};

/// Rows per packed group (the 16 i32 lanes of a zmm register).
pub(crate) const ROWS: usize = 16;
/// Tokens per call (4 × 2 accumulators of 16 rows stay in registers).
pub(crate) const TOKENS: usize = 4;

/// One 64-byte vector per 4 values: 16 rows × 4 bytes.
const VEC: usize = 64;

// Packed Q4_K super-block of a group: 8 sub-blocks × 8 groups of 4 values (u8 0..15),
// then f32 scales [8][16], f32 mins [8][16], f32 d [16], f32 dmin [16].
const Q4K_SC: usize = 64 * VEC;
const Q4K_M: usize = Q4K_SC + 8 * VEC;
const Q4K_D: usize = Q4K_M + 8 * VEC;
const Q4K_DMIN: usize = Q4K_D + VEC;
const Q4K_PACKED: usize = Q4K_DMIN + VEC;

// Packed Q6_K super-block of a group: 16 sub-blocks × 4 groups of 4 values (unsigned q,
// 0..63), then i32 scales [16][16], f32 d [16].
const Q6K_SC: usize = 64 * VEC;
const Q6K_D: usize = Q6K_SC + 16 * VEC;
const Q6K_PACKED: usize = Q6K_D + VEC;

/// Packed bytes of a group of 16 Q4_K rows of `cols` values.
pub(crate) fn q4_k_group_bytes(cols: usize) -> usize {
    cols / 256 * Q4K_PACKED
}

/// Packed bytes of a group of 16 Q6_K rows of `cols` values.
pub(crate) fn q6_k_group_bytes(cols: usize) -> usize {
    cols / 256 * Q6K_PACKED
}

fn put_u32(dst: &mut [u8], off: usize, v: u32) {
    dst[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn get_u32(src: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([src[off], src[off + 1], src[off + 2], src[off + 3]])
}

/// Packs `k` (≤ 16) consecutive Q4_K rows of `cols` values from `w` into `dst`
/// (`q4_k_group_bytes(cols)` bytes); lanes of missing rows are zero.
pub(crate) fn pack_q4_k(cols: usize, w: &[u8], k: usize, dst: &mut [u8]) {
    let nb = cols / 256;
    assert!(k <= ROWS && w.len() >= k * nb * Q4_K_BYTES && dst.len() >= nb * Q4K_PACKED);
    if k < ROWS {
        // Lanes of missing rows (all other bytes are written below).
        dst[..nb * Q4K_PACKED].fill(0);
    }
    for r in 0..k {
        for sb in 0..nb {
            let x = &w[(r * nb + sb) * Q4_K_BYTES..][..Q4_K_BYTES];
            let o = &mut dst[sb * Q4K_PACKED..][..Q4K_PACKED];
            let (sc, m) = scales_mins(&x[4..16]);
            for s in 0..8 {
                put_u32(o, Q4K_SC + s * VEC + 4 * r, (sc[s] as f32).to_bits());
                put_u32(o, Q4K_M + s * VEC + 4 * r, (m[s] as f32).to_bits());
            }
            put_u32(o, Q4K_D + 4 * r, f16_at(x, 0).to_bits());
            put_u32(o, Q4K_DMIN + 4 * r, f16_at(x, 2).to_bits());
            for j in 0..4 {
                for g in 0..8 {
                    let q = get_u32(x, 16 + 32 * j + 4 * g);
                    put_u32(o, ((2 * j) * 8 + g) * VEC + 4 * r, q & 0x0f0f_0f0f);
                    put_u32(
                        o,
                        ((2 * j + 1) * 8 + g) * VEC + 4 * r,
                        (q >> 4) & 0x0f0f_0f0f,
                    );
                }
            }
        }
    }
}

/// Packs `k` (≤ 16) consecutive Q6_K rows, as [`pack_q4_k`].
pub(crate) fn pack_q6_k(cols: usize, w: &[u8], k: usize, dst: &mut [u8]) {
    let nb = cols / 256;
    assert!(k <= ROWS && w.len() >= k * nb * Q6_K_BYTES && dst.len() >= nb * Q6K_PACKED);
    if k < ROWS {
        // Lanes of missing rows (all other bytes are written below).
        dst[..nb * Q6K_PACKED].fill(0);
    }
    const LO: u32 = 0x0f0f_0f0f;
    const HI2: u32 = 0x0303_0303;
    for r in 0..k {
        for sb in 0..nb {
            let x = &w[(r * nb + sb) * Q6_K_BYTES..][..Q6_K_BYTES];
            let o = &mut dst[sb * Q6K_PACKED..][..Q6K_PACKED];
            for s in 0..16 {
                put_u32(
                    o,
                    Q6K_SC + s * VEC + 4 * r,
                    i32::from(x[192 + s] as i8) as u32,
                );
            }
            put_u32(o, Q6K_D + 4 * r, f16_at(x, 208).to_bits());
            // Element e of the super-block goes to group e / 4 (sub-block e / 16).
            let mut put = |e: usize, v: u32| put_u32(o, (e / 4) * VEC + 4 * r, v);
            for h in 0..2 {
                for l in (0..32).step_by(4) {
                    let l0 = get_u32(x, 64 * h + l);
                    let l1 = get_u32(x, 64 * h + 32 + l);
                    let qh = get_u32(x, 128 + 32 * h + l);
                    let e = 128 * h + l;
                    put(e, (l0 & LO) | ((qh & HI2) << 4));
                    put(e + 32, (l1 & LO) | (((qh >> 2) & HI2) << 4));
                    put(e + 64, ((l0 >> 4) & LO) | (((qh >> 4) & HI2) << 4));
                    put(e + 96, ((l1 >> 4) & LO) | (((qh >> 6) & HI2) << 4));
                }
            }
        }
    }
}

/// The 4 activation bytes at `p` in every lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn bcast4(p: *const u8) -> __m512i {
    // SAFETY: the caller guarantees 4 readable bytes at p.
    _mm512_set1_epi32(unsafe { p.cast::<i32>().read_unaligned() })
}

/// 16 packed Q4_K rows × T tokens (`a` rows `as_` bytes apart) in the 4-token gemm order.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q4_k_tile<const T: usize>(
    nb: usize,
    p: *const u8,
    a: *const u8,
    as_: usize,
    out: TileOut,
) {
    let mut acc = [_mm512_setzero_ps(); T];
    let mut accm = [_mm512_setzero_ps(); T];
    let ones = _mm256_set1_epi16(1);
    for sb in 0..nb {
        // SAFETY (whole loop body): super-block sb of the packed group and of the T
        // activation rows lie inside the slices (checked by the entry wrapper).
        let pb = unsafe { p.add(sb * Q4K_PACKED) };
        let ld = |off: usize| unsafe { _mm512_loadu_ps(pb.add(off).cast()) };
        let (dx, dmx) = (ld(Q4K_D), ld(Q4K_DMIN));
        let ys: [*const u8; T] =
            core::array::from_fn(|t| unsafe { a.add(t * as_ + sb * Q8_K_BYTES) });
        let mut d = [_mm512_setzero_ps(); T];
        let mut dm = [_mm512_setzero_ps(); T];
        // Per token, the 8 sums of adjacent Q8_K block sums (b0 + b1, b2 + b3, ...).
        let mut bb = [[0.0f32; 8]; T];
        for t in 0..T {
            let yd = _mm512_set1_ps(unsafe { ys[t].cast::<f32>().read_unaligned() });
            d[t] = _mm512_mul_ps(dx, yd);
            dm[t] = _mm512_mul_ps(dmx, yd);
            let bs = unsafe { _mm256_loadu_si256(ys[t].add(Q8_K_BSUMS).cast()) };
            let pairs = _mm256_cvtepi32_ps(_mm256_madd_epi16(bs, ones));
            // SAFETY: `bb[t]` is 8 writable f32.
            unsafe { _mm256_storeu_ps(bb[t].as_mut_ptr(), pairs) };
        }
        for j in 0..4 {
            let mut lo = [_mm512_setzero_si512(); T];
            let mut hi = [_mm512_setzero_si512(); T];
            for g in 0..8 {
                let w = unsafe { _mm512_loadu_si512(pb.add((2 * j * 8 + g) * VEC).cast()) };
                for t in 0..T {
                    let y = unsafe { bcast4(ys[t].add(Q8_K_QS + 64 * j + 4 * g)) };
                    lo[t] = _mm512_dpbusd_epi32(lo[t], w, y);
                }
            }
            for g in 0..8 {
                let w = unsafe { _mm512_loadu_si512(pb.add(((2 * j + 1) * 8 + g) * VEC).cast()) };
                for t in 0..T {
                    let y = unsafe { bcast4(ys[t].add(Q8_K_QS + 64 * j + 32 + 4 * g)) };
                    hi[t] = _mm512_dpbusd_epi32(hi[t], w, y);
                }
            }
            let (sc0, sc1) = (ld(Q4K_SC + 2 * j * VEC), ld(Q4K_SC + (2 * j + 1) * VEC));
            let (m0, m1) = (ld(Q4K_M + 2 * j * VEC), ld(Q4K_M + (2 * j + 1) * VEC));
            for t in 0..T {
                // sc0·lo + sc1·hi, exact (see the module comment).
                let isum = _mm512_fmadd_ps(
                    _mm512_cvtepi32_ps(hi[t]),
                    sc1,
                    _mm512_mul_ps(_mm512_cvtepi32_ps(lo[t]), sc0),
                );
                acc[t] = _mm512_fmadd_ps(isum, d[t], acc[t]);
                let imin = _mm512_fmadd_ps(
                    m1,
                    _mm512_set1_ps(bb[t][2 * j + 1]),
                    _mm512_mul_ps(m0, _mm512_set1_ps(bb[t][2 * j])),
                );
                accm[t] = _mm512_fmadd_ps(imin, dm[t], accm[t]);
            }
        }
    }
    // SAFETY: caller contract of the entry point.
    unsafe {
        store_rows::<T>(
            core::array::from_fn(|t| _mm512_sub_ps(acc[t], accm[t])),
            out,
        )
    };
}

/// 16 packed Q6_K rows × T tokens in the batch order (one FMA per super-block).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q6_k_tile<const T: usize>(
    nb: usize,
    p: *const u8,
    a: *const u8,
    as_: usize,
    out: TileOut,
) {
    let mut acc = [_mm512_setzero_ps(); T];
    for sb in 0..nb {
        // SAFETY (whole loop body): as in q4_k_tile.
        let pb = unsafe { p.add(sb * Q6K_PACKED) };
        let ys: [*const u8; T] =
            core::array::from_fn(|t| unsafe { a.add(t * as_ + sb * Q8_K_BYTES) });
        // Per token, -32 · bsum[j]: the q - 32 offset of sub-block j.
        let mut off = [[0i32; 16]; T];
        for t in 0..T {
            let bs = unsafe { _mm256_loadu_si256(ys[t].add(Q8_K_BSUMS).cast()) };
            let v = _mm512_sub_epi32(
                _mm512_setzero_si512(),
                _mm512_slli_epi32(_mm512_cvtepi16_epi32(bs), 5),
            );
            // SAFETY: `off[t]` is 16 writable i32.
            unsafe { _mm512_storeu_si512(off[t].as_mut_ptr().cast(), v) };
        }
        let mut isum = [_mm512_setzero_si512(); T];
        // `j` also places the weight and activation loads, not only `off`.
        #[allow(clippy::needless_range_loop)]
        for j in 0..16 {
            let mut s: [__m512i; T] = core::array::from_fn(|t| _mm512_set1_epi32(off[t][j]));
            for g in 0..4 {
                let w = unsafe { _mm512_loadu_si512(pb.add((4 * j + g) * VEC).cast()) };
                for t in 0..T {
                    let y = unsafe { bcast4(ys[t].add(Q8_K_QS + 16 * j + 4 * g)) };
                    s[t] = _mm512_dpbusd_epi32(s[t], w, y);
                }
            }
            let sc = unsafe { _mm512_loadu_si512(pb.add(Q6K_SC + j * VEC).cast()) };
            for t in 0..T {
                isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(s[t], sc));
            }
        }
        let dw = unsafe { _mm512_loadu_ps(pb.add(Q6K_D).cast()) };
        for t in 0..T {
            let d8 = _mm512_set1_ps(unsafe { ys[t].cast::<f32>().read_unaligned() });
            acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(isum[t]), dw), d8, acc[t]);
        }
    }
    // SAFETY: caller contract of the entry point.
    unsafe { store_rows(acc, out) };
}

/// Writes lanes i < `out.rows` of `v[t]` to `out.at(i, t)`.
///
/// # Safety
/// `out` is valid for T tokens and `out.rows` rows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn store_rows<const T: usize>(v: [__m512; T], out: TileOut) {
    let mask = if out.rows >= ROWS {
        u16::MAX
    } else {
        (1u16 << out.rows) - 1
    };
    for (t, x) in v.into_iter().enumerate() {
        // SAFETY: rows i < out.rows of token t (caller contract); masked lanes are
        // neither read nor written.
        unsafe { _mm512_mask_storeu_ps(out.at(0, t), mask, x) };
    }
}

macro_rules! packed_entry {
    ($name:ident, $bytes:ident, $kern:ident) => {
        /// Row i of the packed group · activation row j → `out.at(i, j)`, i < out.rows.
        ///
        /// # Safety
        /// `out` is valid for TOKENS tokens and `out.rows` (≤ 16) rows.
        pub(crate) unsafe fn $name(cols: usize, p: &[u8], a: &[u8], out: TileOut) {
            let nb = cols / 256;
            let as_ = nb * Q8_K_BYTES;
            assert!(
                cols.is_multiple_of(256)
                    && p.len() >= $bytes(cols)
                    && a.len() >= TOKENS * as_
                    && out.rows <= ROWS,
                "packed tile operands too short for {cols} columns"
            );
            // SAFETY: the AVX-512 set is only built after its features were detected;
            // the lengths were checked above.
            unsafe { $kern::<TOKENS>(nb, p.as_ptr(), a.as_ptr(), as_, out) }
        }
    };
}
packed_entry!(gemm_q4_k_packed, q4_k_group_bytes, q4_k_tile);
packed_entry!(gemm_q6_k_packed, q6_k_group_bytes, q6_k_tile);

/// `reference::kquants::quantize_q8_k`, 16 values per instruction: the same largest
/// magnitude (first one on ties), the same `iscale` and `nearest_int(iscale · x)` (the
/// same 1.5·2^23 trick), the same block sums, so the same bytes. Blocks whose largest
/// magnitude is not finite go through the reference (its integer conversion of NaN
/// products is a bit trick, not an instruction's).
pub(crate) fn quantize_q8_k(x: &[f32], dst: &mut [u8]) {
    let nb = x.len() / 256;
    assert!(dst.len() >= nb * Q8_K_BYTES);
    for (xb, b) in x.chunks_exact(256).zip(dst.chunks_exact_mut(Q8_K_BYTES)) {
        // SAFETY: the AVX-512 set is only built after its features were detected; `xb`
        // is 256 values and `b` one whole Q8_K block.
        if !unsafe { quantize_q8_k_block(xb, b) } {
            crate::reference::kquants::quantize_q8_k(xb, b);
        }
    }
}

/// One block; false (nothing written) if its largest magnitude is not finite.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn quantize_q8_k_block(xb: &[f32], b: &mut [u8]) -> bool {
    let xs = xb.as_ptr();
    // SAFETY (loads): 16 vectors of 16 inside the 256 values of `xb`.
    let v: [__m512; 16] = core::array::from_fn(|j| unsafe { _mm512_loadu_ps(xs.add(16 * j)) });
    // max(|v|, acc) keeps acc when |v| is NaN, as the reference's `>` skips NaN.
    let mut m = _mm512_setzero_ps();
    for vj in &v {
        m = _mm512_max_ps(_mm512_abs_ps(*vj), m);
    }
    let amax = _mm512_reduce_max_ps(m);
    if !amax.is_finite() {
        return false;
    }
    if amax == 0.0 {
        b.fill(0);
        return true;
    }
    // The first value of largest magnitude.
    let a = _mm512_set1_ps(amax);
    let (j, mask) = v
        .iter()
        .enumerate()
        .map(|(j, vj)| (j, _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(_mm512_abs_ps(*vj), a)))
        .find(|&(_, k)| k != 0)
        .expect("the largest magnitude is one of the values");
    let max = xb[16 * j + mask.trailing_zeros() as usize];
    let iscale = -127.0f32 / max;
    let is = _mm512_set1_ps(iscale);
    let magic = _mm512_set1_ps(12_582_912.0);
    let (lo, half) = (
        _mm512_set1_epi32(0x007f_ffff),
        _mm512_set1_epi32(0x0040_0000),
    );
    let mut sums = [0i16; 16];
    for (j, vj) in v.iter().enumerate() {
        // nearest_int(iscale * v), capped at 127, truncated to i8 like `as i8`.
        let bits = _mm512_castps_si512(_mm512_add_ps(_mm512_mul_ps(is, *vj), magic));
        let q = _mm512_sub_epi32(_mm512_and_si512(bits, lo), half);
        let q = _mm512_min_epi32(q, _mm512_set1_epi32(127));
        sums[j] = _mm512_reduce_add_epi32(q) as i16;
        // SAFETY: the 16 quant bytes of group j inside the block.
        unsafe {
            _mm_storeu_si128(
                b.as_mut_ptr().add(Q8_K_QS + 16 * j).cast(),
                _mm512_cvtepi32_epi8(q),
            )
        };
    }
    for (j, s) in sums.iter().enumerate() {
        b[Q8_K_BSUMS + 2 * j..][..2].copy_from_slice(&s.to_le_bytes());
    }
    b[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    true
}
