//! x86-64 SIMD kernels. Each set is compiled with `#[target_feature]` (never
//! `-C target-cpu`), so one binary runs everywhere; `dispatch` calls these only after
//! `is_x86_feature_detected!` confirmed every feature of the set.
//!
//! The integer work is exact, so each kernel equals the scalar reference except for the
//! order in which per-block f32 terms are summed (and `d_x * d_y` being formed before
//! multiplying the integer sum). The tests allow a relative error of 1e-5 of the sum of
//! |terms|: each reordered f32 addition contributes at most 2^-24 of a partial sum and a
//! row has at most a few thousand blocks.

pub mod attn;
pub mod attn_scores;
pub mod attn_wsum;
pub mod avx2;
pub mod avx512;
mod gemm;
pub(crate) mod gemv512;
pub(crate) mod packed;
pub(crate) mod x16;
pub(crate) use gemm::simd_gemm;

/// Expands to the full set of SIMD dot kernels, compiled for the target features `$feat`.
/// `$acc_dot(acc, u, s)` adds the products of unsigned bytes `u` and signed bytes `s`,
/// summed in groups of four, to the i32 lanes of `acc` (maddubs+madd on AVX2, one
/// `vpdpbusd` with AVX-512 VNNI); both are exact for the value ranges used here.
macro_rules! simd_kernels {
    ($feat:literal, $acc_dot:ident) => {
        use core::arch::x86_64::*;

        use crate::reference::kquants::{
            scales_mins, Q4_K_BYTES, Q5_K_BYTES, Q6_K_BYTES, Q8_K_BSUMS, Q8_K_BYTES, Q8_K_QS,
        };
        use crate::reference::q4::{Q4_0_BYTES, Q4_1_BYTES};
        use crate::reference::q5::Q5_0_BYTES;
        use crate::reference::q8::{Q8_0_BYTES, Q8_1_BYTES};

        /// Sum of 8 lanes: halves, then pairs (the order every kernel's final sum uses).
        #[inline]
        #[target_feature(enable = $feat)]
        pub(crate) fn hsum_f32(x: __m256) -> f32 {
            let mut r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
            r = _mm_add_ps(r, _mm_movehl_ps(r, r));
            r = _mm_add_ss(r, _mm_movehdup_ps(r));
            _mm_cvtss_f32(r)
        }

        /// f16 at `p` (unaligned) → f32 with F16C.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn f16_at(p: *const u8) -> f32 {
            // SAFETY: the caller guarantees 2 readable bytes at p.
            let bits = unsafe { p.cast::<u16>().read_unaligned() };
            _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
        }

        /// 16 bytes of packed nibbles → 32 bytes: low nibbles in bytes 0..16, high
        /// nibbles in bytes 16..32 (ggml's element order for 32-value blocks).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn nibbles(p: *const u8) -> __m256i {
            // SAFETY: the caller guarantees 16 readable bytes at p.
            let t = unsafe { _mm_loadu_si128(p.cast()) };
            let both = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
            _mm256_and_si256(both, _mm256_set1_epi8(0x0f))
        }

        /// 32 bits at `p` → 32 bytes, 0xFF where the corresponding bit is set.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn bits_to_bytes(p: *const u8) -> __m256i {
            // SAFETY: the caller guarantees 4 readable bytes at p.
            let x = unsafe { p.cast::<u32>().read_unaligned() };
            let shuf = _mm256_set_epi64x(
                0x0303_0303_0303_0303,
                0x0202_0202_0202_0202,
                0x0101_0101_0101_0101,
                0,
            );
            let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x as i32), shuf);
            let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe));
            _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
        }

        /// Signed × signed bytes via |x| and sign-transfer (exact: no operand is -128
        /// with a -128 partner, since activations are clamped to ±127).
        #[inline]
        #[target_feature(enable = $feat)]
        fn acc_dot_i8(acc: __m256i, x: __m256i, y: __m256i) -> __m256i {
            $acc_dot(acc, _mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
        }

        #[target_feature(enable = $feat)]
        unsafe fn q4_0_q8_0(nb: usize, w: *const u8, a: *const u8) -> f32 {
            let mut acc = _mm256_setzero_ps();
            for i in 0..nb {
                // SAFETY: block i lies inside both rows (checked by the wrapper).
                let (x, y) = unsafe { (w.add(i * Q4_0_BYTES), a.add(i * Q8_0_BYTES)) };
                let d = unsafe { f16_at(x) * f16_at(y) };
                let qx = _mm256_sub_epi8(unsafe { nibbles(x.add(2)) }, _mm256_set1_epi8(8));
                let qy = unsafe { _mm256_loadu_si256(y.add(2).cast()) };
                let s = acc_dot_i8(_mm256_setzero_si256(), qx, qy);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s), acc);
            }
            hsum_f32(acc)
        }

        #[target_feature(enable = $feat)]
        unsafe fn q4_1_q8_1(nb: usize, w: *const u8, a: *const u8) -> f32 {
            let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let mut summs = 0.0f32;
            let block = |i: usize, acc: __m256, summs: &mut f32| -> __m256 {
                // SAFETY: block i lies inside both rows (checked by the wrapper).
                let (x, y) = unsafe { (w.add(i * Q4_1_BYTES), a.add(i * Q8_1_BYTES)) };
                let (d, ms) = unsafe { (f16_at(x) * f16_at(y), f16_at(x.add(2)) * f16_at(y.add(2))) };
                *summs += ms;
                let qx = unsafe { nibbles(x.add(4)) };
                let qy = unsafe { _mm256_loadu_si256(y.add(4).cast()) };
                let s = $acc_dot(_mm256_setzero_si256(), qx, qy);
                _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s), acc)
            };
            let mut i = 0;
            while i + 1 < nb {
                acc0 = block(i, acc0, &mut summs);
                acc1 = block(i + 1, acc1, &mut summs);
                i += 2;
            }
            if i < nb {
                acc0 = block(i, acc0, &mut summs);
            }
            hsum_f32(_mm256_add_ps(acc0, acc1)) + summs
        }

        #[target_feature(enable = $feat)]
        unsafe fn q5_0_q8_0(nb: usize, w: *const u8, a: *const u8) -> f32 {
            let mut acc = _mm256_setzero_ps();
            for i in 0..nb {
                // SAFETY: block i lies inside both rows (checked by the wrapper).
                let (x, y) = unsafe { (w.add(i * Q5_0_BYTES), a.add(i * Q8_0_BYTES)) };
                let d = unsafe { f16_at(x) * f16_at(y) };
                let hi = _mm256_and_si256(unsafe { bits_to_bytes(x.add(2)) }, _mm256_set1_epi8(0x10));
                let qx = _mm256_or_si256(unsafe { nibbles(x.add(6)) }, hi);
                let qx = _mm256_sub_epi8(qx, _mm256_set1_epi8(16));
                let qy = unsafe { _mm256_loadu_si256(y.add(2).cast()) };
                let s = acc_dot_i8(_mm256_setzero_si256(), qx, qy);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s), acc);
            }
            hsum_f32(acc)
        }

        #[target_feature(enable = $feat)]
        unsafe fn q8_0_q8_0(nb: usize, w: *const u8, a: *const u8) -> f32 {
            // One accumulator, as ggml's vec_dot_q8_0_q8_0 (and tinyBLAS) sum blocks:
            // two interleaved ones would move logits in the last bits.
            let mut acc = _mm256_setzero_ps();
            for i in 0..nb {
                // SAFETY: block i lies inside both rows (checked by the wrapper).
                let (x, y) = unsafe { (w.add(i * Q8_0_BYTES), a.add(i * Q8_0_BYTES)) };
                let d = unsafe { f16_at(x) * f16_at(y) };
                let qx = unsafe { _mm256_loadu_si256(x.add(2).cast()) };
                let qy = unsafe { _mm256_loadu_si256(y.add(2).cast()) };
                let s = acc_dot_i8(_mm256_setzero_si256(), qx, qy);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s), acc);
            }
            hsum_f32(acc)
        }

        /// Σ bsums[j] * mins[j / 2] of a Q8_K block (the Q4_K/Q5_K min term).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn mins_term(y: *const u8, mins: &[u8; 8]) -> i32 {
            // SAFETY: 32 bytes of bsums inside the Q8_K block.
            let bs = unsafe { _mm256_loadu_si256(y.add(Q8_K_BSUMS).cast()) };
            let m = _mm_cvtsi64_si128(i64::from_le_bytes(*mins));
            // [m0, m0, m1, m1, ...] as i16 to pair with bsums 0..16.
            let m16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, m));
            let p = _mm256_madd_epi16(bs, m16);
            let s = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
            let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01));
            _mm_cvtsi128_si32(s)
        }

        /// Q4_K (`five_bit == false`) or Q5_K weights · Q8_K.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn q45_k_q8_k(nb: usize, w: *const u8, a: *const u8, five_bit: bool) -> f32 {
            let bytes = if five_bit { Q5_K_BYTES } else { Q4_K_BYTES };
            let qs_off = if five_bit { 48 } else { 16 };
            let m4 = _mm256_set1_epi8(0x0f);
            let one = _mm256_set1_epi8(1);
            let mut acc = _mm256_setzero_ps();
            let mut acc_m = 0.0f32;
            for i in 0..nb {
                // SAFETY: block i lies inside both rows (checked by the wrapper).
                let (x, y) = unsafe { (w.add(i * bytes), a.add(i * Q8_K_BYTES)) };
                let yd = unsafe { y.cast::<f32>().read_unaligned() };
                let (d, dmin) = unsafe { (f16_at(x) * yd, f16_at(x.add(2)) * yd) };
                // SAFETY: the 12 scale bytes of block i.
                let (sc, mins) = scales_mins(unsafe { std::slice::from_raw_parts(x.add(4), 12) });
                acc_m += dmin * unsafe { mins_term(y, &mins) } as f32;
                let mut hb = if five_bit {
                    unsafe { _mm256_loadu_si256(x.add(16).cast()) }
                } else {
                    _mm256_setzero_si256()
                };
                let mut sumi = _mm256_setzero_si256();
                for j in 0..4 {
                    let q = unsafe { _mm256_loadu_si256(x.add(qs_off + 32 * j).cast()) };
                    let mut lo = _mm256_and_si256(q, m4);
                    let mut hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                    if five_bit {
                        lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(hb, one), 4));
                        let h1 = _mm256_and_si256(_mm256_srli_epi16(hb, 1), one);
                        hi = _mm256_or_si256(hi, _mm256_slli_epi16(h1, 4));
                        hb = _mm256_srli_epi16(hb, 2);
                    }
                    let y0 = unsafe { _mm256_loadu_si256(y.add(Q8_K_QS + 64 * j).cast()) };
                    let y1 = unsafe { _mm256_loadu_si256(y.add(Q8_K_QS + 64 * j + 32).cast()) };
                    let p0 = _mm256_madd_epi16(
                        _mm256_maddubs_epi16(lo, y0),
                        _mm256_set1_epi16(sc[2 * j] as i16),
                    );
                    let p1 = _mm256_madd_epi16(
                        _mm256_maddubs_epi16(hi, y1),
                        _mm256_set1_epi16(sc[2 * j + 1] as i16),
                    );
                    sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
                }
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
            }
            hsum_f32(acc) - acc_m
        }

        /// Q4_K weights · Q8_K in the repacked gemv order of `reference::kquants`: exact
        /// integer sums, folded with one FMA each for scales and mins per super-block.
        #[target_feature(enable = $feat)]
        unsafe fn q4_k_q8_k(nb: usize, w: *const u8, a: *const u8) -> f32 {
            let m4 = _mm256_set1_epi8(0x0f);
            let hsum_i32 = |v: __m256i| {
                let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
                let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
                _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01)))
            };
            let (mut acc, mut acc_min) = (0.0f32, 0.0f32);
            for i in 0..nb {
                // SAFETY: block i lies inside both rows (checked by the wrapper).
                let (x, y) = unsafe { (w.add(i * Q4_K_BYTES), a.add(i * Q8_K_BYTES)) };
                let yd = unsafe { y.cast::<f32>().read_unaligned() };
                let (d, dmin) = unsafe { (f16_at(x) * yd, f16_at(x.add(2)) * yd) };
                // SAFETY: the 12 scale bytes and the 32 bytes of bsums of block i.
                let (sc, mins) = scales_mins(unsafe { std::slice::from_raw_parts(x.add(4), 12) });
                let bs: [i16; 16] = unsafe { y.add(Q8_K_BSUMS).cast::<[i16; 16]>().read_unaligned() };
                let mut sumi = _mm256_setzero_si256();
                let mut imin = 0i32;
                for j in 0..4 {
                    let q = unsafe { _mm256_loadu_si256(x.add(16 + 32 * j).cast()) };
                    let lo = _mm256_and_si256(q, m4);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                    let y0 = unsafe { _mm256_loadu_si256(y.add(Q8_K_QS + 64 * j).cast()) };
                    let y1 = unsafe { _mm256_loadu_si256(y.add(Q8_K_QS + 64 * j + 32).cast()) };
                    let p0 = _mm256_madd_epi16(
                        _mm256_maddubs_epi16(lo, y0),
                        _mm256_set1_epi16(sc[2 * j] as i16),
                    );
                    let p1 = _mm256_madd_epi16(
                        _mm256_maddubs_epi16(hi, y1),
                        _mm256_set1_epi16(sc[2 * j + 1] as i16),
                    );
                    sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
                    let b = |k: usize| i32::from(i16::from_le(bs[k]));
                    imin += i32::from(mins[2 * j]) * (b(4 * j) + b(4 * j + 1))
                        + i32::from(mins[2 * j + 1]) * (b(4 * j + 2) + b(4 * j + 3));
                }
                acc = (hsum_i32(sumi) as f32).mul_add(d, acc);
                acc_min = (imin as f32).mul_add(dmin, acc_min);
            }
            acc - acc_min
        }

        /// Q4_K · Q8_K for 4 tokens (`a` rows `as_` bytes apart) in the 4-token gemm
        /// order of `reference::kquants::dot_q4_k_q8_k_gemm` (one FMA per 64 values): each block's weights and scales are
        /// unpacked once for the 4 tokens, and each token's four 64-value integer sums
        /// come out of one horizontal-add tree instead of four reductions. The integer
        /// sums are exact and the FMA chain per token is the same, so every result
        /// equals that reference bit for bit.
        #[target_feature(enable = $feat)]
        unsafe fn q4_k_q8_k_x4(nb: usize, w: *const u8, a: *const u8, as_: usize, out: &mut [f32]) {
            let m4 = _mm256_set1_epi8(0x0f);
            let (mut acc, mut acc_min) = ([0.0f32; 4], [0.0f32; 4]);
            for i in 0..nb {
                // SAFETY: block i of the row and of the 4 activation rows are inside the
                // slices (checked by the wrapper).
                let x = unsafe { w.add(i * Q4_K_BYTES) };
                let (dx, dmx) = unsafe { (f16_at(x), f16_at(x.add(2))) };
                // SAFETY: the 12 scale bytes of block i.
                let (sc, mins) = scales_mins(unsafe { std::slice::from_raw_parts(x.add(4), 12) });
                let mut lo = [_mm256_setzero_si256(); 4];
                let mut hi = [_mm256_setzero_si256(); 4];
                for j in 0..4 {
                    let q = unsafe { _mm256_loadu_si256(x.add(16 + 32 * j).cast()) };
                    lo[j] = _mm256_and_si256(q, m4);
                    hi[j] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                }
                // [m0, m0, m1, m1, ...] as i16, to pair with the 16 bsums.
                let m = _mm_cvtsi64_si128(i64::from_le_bytes(mins));
                let mpat = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, m));
                for t in 0..4 {
                    let y = unsafe { a.add(t * as_ + i * Q8_K_BYTES) };
                    let yd = unsafe { y.cast::<f32>().read_unaligned() };
                    let (d, dmin) = (dx * yd, dmx * yd);
                    let s: [__m256i; 4] = core::array::from_fn(|j| {
                        // SAFETY: the 64 quants of pair j of this activation block.
                        let (y0, y1) = unsafe {
                            (
                                _mm256_loadu_si256(y.add(Q8_K_QS + 64 * j).cast()),
                                _mm256_loadu_si256(y.add(Q8_K_QS + 64 * j + 32).cast()),
                            )
                        };
                        let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo[j], y0), _mm256_set1_epi16(sc[2 * j] as i16));
                        let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi[j], y1), _mm256_set1_epi16(sc[2 * j + 1] as i16));
                        _mm256_add_epi32(p0, p1)
                    });
                    // [Σ s0, Σ s1, Σ s2, Σ s3].
                    let h = _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]));
                    let isum = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
                    // Lane k of mm = m_k · (bsum 2k + bsum 2k+1); pair j's min term is
                    // lanes 2j + 2j+1.
                    let bs = unsafe { _mm256_loadu_si256(y.add(Q8_K_BSUMS).cast()) };
                    let hm = _mm256_hadd_epi32(_mm256_madd_epi16(bs, mpat), _mm256_setzero_si256());
                    let imin = _mm_unpacklo_epi64(_mm256_castsi256_si128(hm), _mm256_extracti128_si256(hm, 1));
                    let (mut fi, mut fm) = ([0.0f32; 4], [0.0f32; 4]);
                    // SAFETY: 4 writable f32 each.
                    unsafe {
                        _mm_storeu_ps(fi.as_mut_ptr(), _mm_cvtepi32_ps(isum));
                        _mm_storeu_ps(fm.as_mut_ptr(), _mm_cvtepi32_ps(imin));
                    }
                    for j in 0..4 {
                        acc[t] = fi[j].mul_add(d, acc[t]);
                        acc_min[t] = fm[j].mul_add(dmin, acc_min[t]);
                    }
                }
            }
            for t in 0..4 {
                out[t] = acc[t] - acc_min[t];
            }
        }

        /// GEMM tile (1 row × 4 tokens) in the 4-token repacked Q4_K order.
        pub(crate) fn gemm_q4_k_q8_k(cols: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
            let nb = cols / 256;
            let ar = nb * Q8_K_BYTES;
            assert!(
                cols.is_multiple_of(256) && w.len() >= nb * Q4_K_BYTES && a.len() >= 4 * ar && out.len() >= 4,
                "Q4_K tile operands too short for {cols} columns"
            );
            // SAFETY: this set's table is only built after its features were detected;
            // the lengths were checked above.
            unsafe { q4_k_q8_k_x4(nb, w.as_ptr(), a.as_ptr(), ar, out) }
        }

        /// The eight i32 lanes of ggml's AVX2 `vec_dot_q6_K_q8_K` for one super-block:
        /// `Σ sc·q·q8` with q unsigned, lane i over values 4i..4i+4 of each 32-value
        /// chunk, minus `32·(sc[2i]·bsum[2i] + sc[2i+1]·bsum[2i+1])` from the Q8_K sums.
        ///
        /// # Safety
        /// `x` and `y` point to a whole Q6_K and Q8_K block.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn q6_k_lanes(x: *const u8, y: *const u8) -> __m256i {
            let m4 = _mm256_set1_epi8(0x0f);
            let m3 = _mm256_set1_epi8(3);
            let mut sumi = _mm256_setzero_si256();
            for h in 0..2 {
                // SAFETY: all offsets lie inside the blocks (caller contract).
                let ql0 = unsafe { _mm256_loadu_si256(x.add(64 * h).cast()) };
                let ql1 = unsafe { _mm256_loadu_si256(x.add(64 * h + 32).cast()) };
                let qh = unsafe { _mm256_loadu_si256(x.add(128 + 32 * h).cast()) };
                let high = |s: i32| {
                    let v = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(s));
                    _mm256_slli_epi16(_mm256_and_si256(v, m3), 4)
                };
                let q = [
                    _mm256_or_si256(_mm256_and_si256(ql0, m4), high(0)),
                    _mm256_or_si256(_mm256_and_si256(ql1, m4), high(2)),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), high(4)),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4), high(6)),
                ];
                for (k, qk) in q.into_iter().enumerate() {
                    // SAFETY: as above.
                    let yk = unsafe { _mm256_loadu_si256(y.add(Q8_K_QS + 128 * h + 32 * k).cast()) };
                    let p = _mm256_maddubs_epi16(qk, yk);
                    let s0 = unsafe { *x.add(192 + 8 * h + 2 * k) } as i8 as i16;
                    let s1 = unsafe { *x.add(192 + 8 * h + 2 * k + 1) } as i8 as i16;
                    let sc = _mm256_set_m128i(_mm_set1_epi16(s1), _mm_set1_epi16(s0));
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, sc));
                }
            }
            // SAFETY: 16 scale bytes at 192 and 16 i16 block sums in the Q8_K block.
            let (sc, bs) = unsafe {
                (
                    _mm256_cvtepi8_epi16(_mm_loadu_si128(x.add(192).cast())),
                    _mm256_loadu_si256(y.add(Q8_K_BSUMS).cast()),
                )
            };
            _mm256_sub_epi32(sumi, _mm256_slli_epi32(_mm256_madd_epi16(sc, bs), 5))
        }

        #[target_feature(enable = $feat)]
        unsafe fn q6_k_q8_k(nb: usize, w: *const u8, a: *const u8) -> f32 {
            let mut acc = _mm256_setzero_ps();
            for i in 0..nb {
                // SAFETY: block i lies inside both rows (checked by the wrapper).
                let (x, y) = unsafe { (w.add(i * Q6_K_BYTES), a.add(i * Q8_K_BYTES)) };
                let d = unsafe { f16_at(x.add(208)) * y.cast::<f32>().read_unaligned() };
                let lanes = unsafe { q6_k_lanes(x, y) };
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes), acc);
            }
            hsum_f32(acc)
        }

        /// The batch order (`reference::kquants::dot_q6_k_q8_k_batch`): the exact
        /// super-block sum, one scalar FMA per super-block.
        #[target_feature(enable = $feat)]
        unsafe fn q6_k_q8_k_batch(nb: usize, w: *const u8, a: *const u8) -> f32 {
            let mut acc = 0.0f32;
            for i in 0..nb {
                // SAFETY: block i lies inside both rows (checked by the wrapper).
                let (x, y) = unsafe { (w.add(i * Q6_K_BYTES), a.add(i * Q8_K_BYTES)) };
                let lanes = unsafe { q6_k_lanes(x, y) };
                let s = _mm_add_epi32(_mm256_castsi256_si128(lanes), _mm256_extracti128_si256(lanes, 1));
                let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
                let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
                let (dw, da) = unsafe { (f16_at(x.add(208)), y.cast::<f32>().read_unaligned()) };
                acc = (_mm_cvtsi128_si32(s) as f32 * dw).mul_add(da, acc);
            }
            acc
        }

        /// GEMM tile (1 row × 1 token) in the Q6_K batch order.
        pub(crate) fn gemm_q6_k_q8_k(cols: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
            out[0] = dot_q6_k_q8_k_batch(cols, w, a);
        }

        #[target_feature(enable = $feat)]
        unsafe fn f32_f32(n: usize, w: *const u8, a: *const u8) -> f32 {
            let (w, a) = (w.cast::<f32>(), a.cast::<f32>());
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i + 32 <= n {
                for (k, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: i + 32 <= n elements in both rows.
                    let (x, y) = unsafe { (_mm256_loadu_ps(w.add(i + 8 * k)), _mm256_loadu_ps(a.add(i + 8 * k))) };
                    *acc = _mm256_fmadd_ps(x, y, *acc);
                }
                i += 32;
            }
            let mut sum = hsum_f32(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
            while i < n {
                // SAFETY: i < n.
                sum += unsafe { w.add(i).read_unaligned() * a.add(i).read_unaligned() };
                i += 1;
            }
            sum
        }

        /// F16 (`bf16 == false`) or BF16 weights · activations of the same type.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn half_half(n: usize, w: *const u8, a: *const u8, bf16: bool) -> f32 {
            let widen = |p: *const u8| -> __m256 {
                // SAFETY: the loop below only passes pointers with 16 readable bytes.
                let h = unsafe { _mm_loadu_si128(p.cast()) };
                if bf16 {
                    _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
                } else {
                    _mm256_cvtph_ps(h)
                }
            };
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i + 32 <= n {
                for (k, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: i + 32 <= n elements (2 bytes each) in both rows.
                    let off = 2 * (i + 8 * k);
                    *acc = _mm256_fmadd_ps(widen(unsafe { w.add(off) }), widen(unsafe { a.add(off) }), *acc);
                }
                i += 32;
            }
            let mut sum = hsum_f32(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
            // SAFETY: the remaining i..n elements are inside both rows.
            let (wt, at) = unsafe {
                (
                    std::slice::from_raw_parts(w.add(2 * i), 2 * (n - i)),
                    std::slice::from_raw_parts(a.add(2 * i), 2 * (n - i)),
                )
            };
            sum += if bf16 {
                crate::reference::float::dot_bf16(n - i, wt, at)
            } else {
                crate::reference::float::dot_f16(n - i, wt, at)
            };
            sum
        }

        /// Safe entry points for the dispatch table. Each checks that both rows hold `n`
        /// values, so the unchecked loads above stay in bounds.
        macro_rules! entry {
            ($name:ident, $block:expr, $wbytes:expr, $abytes:expr, |$nb:ident, $w:ident, $a:ident| $call:expr) => {
                pub(crate) fn $name(n: usize, w: &[u8], a: &[u8]) -> f32 {
                    let $nb = n / $block;
                    assert!(
                        n.is_multiple_of($block) && w.len() >= $nb * $wbytes && a.len() >= $nb * $abytes,
                        "row too short for {} values",
                        n
                    );
                    let ($w, $a) = (w.as_ptr(), a.as_ptr());
                    // SAFETY: this set's table is only built after every feature in its
                    // target_feature list was detected at run time, and the lengths were
                    // checked above.
                    unsafe { $call }
                }
            };
        }

        entry!(dot_q4_0_q8_0, 32, Q4_0_BYTES, Q8_0_BYTES, |nb, w, a| q4_0_q8_0(nb, w, a));
        entry!(dot_q4_1_q8_1, 32, Q4_1_BYTES, Q8_1_BYTES, |nb, w, a| q4_1_q8_1(nb, w, a));
        entry!(dot_q5_0_q8_0, 32, Q5_0_BYTES, Q8_0_BYTES, |nb, w, a| q5_0_q8_0(nb, w, a));
        entry!(dot_q8_0_q8_0, 32, Q8_0_BYTES, Q8_0_BYTES, |nb, w, a| q8_0_q8_0(nb, w, a));
        entry!(dot_q4_k_q8_k, 256, Q4_K_BYTES, Q8_K_BYTES, |nb, w, a| q4_k_q8_k(nb, w, a));
        entry!(dot_q5_k_q8_k, 256, Q5_K_BYTES, Q8_K_BYTES, |nb, w, a| q45_k_q8_k(nb, w, a, true));
        entry!(dot_q6_k_q8_k, 256, Q6_K_BYTES, Q8_K_BYTES, |nb, w, a| q6_k_q8_k(nb, w, a));
        entry!(dot_q6_k_q8_k_batch, 256, Q6_K_BYTES, Q8_K_BYTES, |nb, w, a| q6_k_q8_k_batch(nb, w, a));
        entry!(dot_f32, 1, 4, 4, |nb, w, a| f32_f32(nb, w, a));
        entry!(dot_f16, 1, 2, 2, |nb, w, a| half_half(nb, w, a, false));
        entry!(dot_bf16, 1, 2, 2, |nb, w, a| half_half(nb, w, a, true));
    };
}
pub(crate) use simd_kernels;
