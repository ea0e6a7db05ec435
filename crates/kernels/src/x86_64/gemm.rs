//! GEMM tile kernels for prefill (n > 1 tokens): R weight rows × T tokens per call.
//! Each weight block is unpacked once and reused for all T activation blocks, each
//! activation block is loaded once for all R rows, and the per-block f32 scale products
//! are formed R at a time, so a (row, token) pair costs ~4 vector ops per block instead
//! of the ~20 of a standalone dot.
//!
//! The integer block sums are exact and equal the dot kernels'; the results differ from
//! the per-row dots only in f32 summation order (same tolerance as the dots).

/// Expands to the tile kernels inside a kernel-set module that already has
/// `simd_kernels!` expanded (it uses `nibbles`, `hsum_f32`, `$acc_dot`).
/// `$vnni`: `$acc_dot` accepts any u8 (VNNI) rather than maddubs' saturating range,
/// which lets Q8_0 weights be offset to unsigned instead of sign-transferred per pair.
macro_rules! simd_gemm {
    ($feat:literal, $acc_dot:ident, $vnni:expr, $R:literal, $T:literal) => {
        /// Rows per tile in this set (a register budget choice: 16 vs 32 vector regs).
        pub(crate) const GEMM_ROWS: usize = $R;
        /// Tokens per tile in this set.
        pub(crate) const GEMM_TOKENS: usize = $T;

        /// The f16 pairs (4 bytes) at `p + i * stride` for i < R, widened: lanes
        /// (2i, 2i + 1) = the two halves of row i's pair.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn f16_pairs(p: *const u8, stride: usize) -> __m256 {
            let mut u = [0u32; 4];
            for (i, v) in u.iter_mut().enumerate().take($R) {
                // SAFETY: the caller guarantees 4 readable bytes at each row's offset.
                *v = unsafe { p.add(i * stride).cast::<u32>().read_unaligned() };
            }
            // SAFETY: `u` is 16 readable bytes.
            _mm256_cvtph_ps(unsafe { _mm_loadu_si128(u.as_ptr().cast()) })
        }

        /// One f16 pair at `p`, repeated in all four lane pairs.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn f16_pair_bcast(p: *const u8) -> __m256 {
            // SAFETY: the caller guarantees 4 readable bytes at p.
            let v = unsafe { p.cast::<u32>().read_unaligned() };
            _mm256_cvtph_ps(_mm_set1_epi32(v as i32))
        }

        /// Q4_1 × Q8_1 tile: `out[i * T + j] = dot(w row i, a row j)`.
        #[target_feature(enable = $feat)]
        unsafe fn q4_1_q8_1_tile<const T: usize>(
            nb: usize,
            w: *const u8,
            ws: usize,
            a: *const u8,
            as_: usize,
            out: &mut [f32],
        ) {
            let mut acc = [[_mm256_setzero_ps(); T]; $R];
            // Lane 2i + 1 of accm[j] sums m_w(i) * s_a(j) (even lanes are unused).
            let mut accm = [_mm256_setzero_ps(); T];
            let mut sc = [0.0f32; 8];
            for b in 0..nb {
                // SAFETY: block b of rows i < R and tokens j < T are inside the slices
                // (checked by the entry wrapper).
                let dm = unsafe { f16_pairs(w.add(b * Q4_1_BYTES), ws) };
                let mut qw = [_mm256_setzero_si256(); $R];
                for (i, q) in qw.iter_mut().enumerate() {
                    *q = unsafe { nibbles(w.add(i * ws + b * Q4_1_BYTES + 4)) };
                }
                for j in 0..T {
                    let y = unsafe { a.add(j * as_ + b * Q8_1_BYTES) };
                    let p = _mm256_mul_ps(dm, unsafe { f16_pair_bcast(y) });
                    accm[j] = _mm256_add_ps(accm[j], p);
                    unsafe { _mm256_storeu_ps(sc.as_mut_ptr(), p) };
                    let qy = unsafe { _mm256_loadu_si256(y.add(4).cast()) };
                    for i in 0..$R {
                        let s = $acc_dot(_mm256_setzero_si256(), qw[i], qy);
                        acc[i][j] = _mm256_fmadd_ps(
                            _mm256_set1_ps(sc[2 * i]),
                            _mm256_cvtepi32_ps(s),
                            acc[i][j],
                        );
                    }
                }
            }
            for j in 0..T {
                let mut m = [0.0f32; 8];
                unsafe { _mm256_storeu_ps(m.as_mut_ptr(), accm[j]) };
                for i in 0..$R {
                    out[i * T + j] = hsum_f32(acc[i][j]) + m[2 * i + 1];
                }
            }
        }

        /// Q8_0 × Q8_0 tile: `out[i * T + j] = dot(w row i, a row j)`.
        #[target_feature(enable = $feat)]
        unsafe fn q8_0_q8_0_tile<const T: usize>(
            nb: usize,
            w: *const u8,
            ws: usize,
            a: *const u8,
            as_: usize,
            out: &mut [f32],
        ) {
            let mut acc = [[_mm256_setzero_ps(); T]; $R];
            let mut sc = [0.0f32; 8];
            let bias = _mm256_set1_epi8(-128);
            for b in 0..nb {
                // SAFETY: as in q4_1_q8_1_tile. Only lanes 2i of `dw` are used: the
                // pairs are (d, first two quants) and the quants' f16 view is ignored.
                let dw = unsafe { f16_pairs(w.add(b * Q8_0_BYTES), ws) };
                let mut qw = [_mm256_setzero_si256(); $R];
                for (i, q) in qw.iter_mut().enumerate() {
                    let v =
                        unsafe { _mm256_loadu_si256(w.add(i * ws + b * Q8_0_BYTES + 2).cast()) };
                    // VNNI: w + 128 as u8 (the 128 * Σy excess is subtracted below);
                    // otherwise |w| with the sign moved onto y per pair.
                    *q = if $vnni { _mm256_xor_si256(v, bias) } else { v };
                }
                for j in 0..T {
                    let y = unsafe { a.add(j * as_ + b * Q8_0_BYTES) };
                    let p = _mm256_mul_ps(dw, unsafe { f16_pair_bcast(y) });
                    unsafe { _mm256_storeu_ps(sc.as_mut_ptr(), p) };
                    let qy = unsafe { _mm256_loadu_si256(y.add(2).cast()) };
                    let base = if $vnni {
                        _mm256_sub_epi32(
                            _mm256_setzero_si256(),
                            $acc_dot(_mm256_setzero_si256(), bias, qy),
                        )
                    } else {
                        _mm256_setzero_si256()
                    };
                    for i in 0..$R {
                        let s = if $vnni {
                            $acc_dot(base, qw[i], qy)
                        } else {
                            acc_dot_i8(base, qw[i], qy)
                        };
                        acc[i][j] = _mm256_fmadd_ps(
                            _mm256_set1_ps(sc[2 * i]),
                            _mm256_cvtepi32_ps(s),
                            acc[i][j],
                        );
                    }
                }
            }
            for j in 0..T {
                for i in 0..$R {
                    out[i * T + j] = hsum_f32(acc[i][j]);
                }
            }
        }

        /// Q5_0 × Q8_0 tile: `out[i * T + j] = dot(w row i, a row j)`. The 5-bit
        /// quants stay unsigned (0..32, inside maddubs' exact range) and the -16 offset
        /// is applied once per activation block as -16 * Σy.
        #[target_feature(enable = $feat)]
        unsafe fn q5_0_q8_0_tile<const T: usize>(
            nb: usize,
            w: *const u8,
            ws: usize,
            a: *const u8,
            as_: usize,
            out: &mut [f32],
        ) {
            let mut acc = [[_mm256_setzero_ps(); T]; $R];
            let mut sc = [0.0f32; 8];
            let sixteen = _mm256_set1_epi8(16);
            for b in 0..nb {
                // SAFETY: as in q4_1_q8_1_tile; lanes 2i of `dw` hold the row scales.
                let dw = unsafe { f16_pairs(w.add(b * Q5_0_BYTES), ws) };
                let mut qw = [_mm256_setzero_si256(); $R];
                for (i, q) in qw.iter_mut().enumerate() {
                    let x = unsafe { w.add(i * ws + b * Q5_0_BYTES) };
                    let hi = _mm256_and_si256(unsafe { bits_to_bytes(x.add(2)) }, sixteen);
                    *q = _mm256_or_si256(unsafe { nibbles(x.add(6)) }, hi);
                }
                for j in 0..T {
                    let y = unsafe { a.add(j * as_ + b * Q8_0_BYTES) };
                    let p = _mm256_mul_ps(dw, unsafe { f16_pair_bcast(y) });
                    unsafe { _mm256_storeu_ps(sc.as_mut_ptr(), p) };
                    let qy = unsafe { _mm256_loadu_si256(y.add(2).cast()) };
                    let base = _mm256_sub_epi32(
                        _mm256_setzero_si256(),
                        $acc_dot(_mm256_setzero_si256(), sixteen, qy),
                    );
                    for i in 0..$R {
                        let s = $acc_dot(base, qw[i], qy);
                        acc[i][j] = _mm256_fmadd_ps(
                            _mm256_set1_ps(sc[2 * i]),
                            _mm256_cvtepi32_ps(s),
                            acc[i][j],
                        );
                    }
                }
            }
            for j in 0..T {
                for i in 0..$R {
                    out[i * T + j] = hsum_f32(acc[i][j]);
                }
            }
        }

        /// Safe tile entry points: check that R rows and T activation rows are present.
        macro_rules! tile_entry {
            ($name:ident, $t:expr, $wbytes:expr, $abytes:expr, $kern:ident) => {
                pub(crate) fn $name(cols: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
                    let nb = cols / 32;
                    let (ws, as_) = (nb * $wbytes, nb * $abytes);
                    assert!(
                        cols.is_multiple_of(32)
                            && w.len() >= $R * ws
                            && a.len() >= $t * as_
                            && out.len() >= $R * $t,
                        "GEMM tile operands too short for {cols} columns"
                    );
                    // SAFETY: this set's table is only built after its features were
                    // detected; the lengths were checked above.
                    unsafe { $kern::<{ $t }>(nb, w.as_ptr(), ws, a.as_ptr(), as_, out) }
                }
            };
        }
        tile_entry!(gemm_q4_1_q8_1, $T, Q4_1_BYTES, Q8_1_BYTES, q4_1_q8_1_tile);
        tile_entry!(gemm_q8_0_q8_0, $T, Q8_0_BYTES, Q8_0_BYTES, q8_0_q8_0_tile);
        // R rows × 1 token (decode): the activation block and its scale are loaded once
        // for R rows and the weight scales are converted R at a time.
        tile_entry!(gemv_q4_1_q8_1, 1, Q4_1_BYTES, Q8_1_BYTES, q4_1_q8_1_tile);
        tile_entry!(gemm_q5_0_q8_0, $T, Q5_0_BYTES, Q8_0_BYTES, q5_0_q8_0_tile);
        tile_entry!(gemv_q5_0_q8_0, 1, Q5_0_BYTES, Q8_0_BYTES, q5_0_q8_0_tile);
    };
}
pub(crate) use simd_gemm;
