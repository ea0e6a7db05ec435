//! AVX2 + FMA + F16C kernels (Haswell and later).

/// u8 × i8 products, summed in fours, added to `acc`: maddubs (pairs → i16, never
/// saturating for the ≤ 5-bit or |x| ≤ 128 × |y| ≤ 127 operands used here) then madd.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn acc_dot_u8i8(
    acc: core::arch::x86_64::__m256i,
    u: core::arch::x86_64::__m256i,
    s: core::arch::x86_64::__m256i,
) -> core::arch::x86_64::__m256i {
    use core::arch::x86_64::*;
    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
    _mm256_add_epi32(acc, p)
}

super::simd_kernels!("avx2,fma,f16c", acc_dot_u8i8);
// 16 vector registers: 4 rows x 2 tokens keeps 8 accumulators live.
super::simd_gemm!("avx2,fma,f16c", acc_dot_u8i8, false, 4, 2);
