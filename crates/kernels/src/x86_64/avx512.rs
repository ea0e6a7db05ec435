//! AVX-512 (F, BW, VL) with VNNI: the AVX2 kernels with `vpdpbusd` doing the u8 × i8
//! multiply-accumulate in one instruction, on 256-bit registers (which keeps clocks
//! high on CPUs that throttle for 512-bit work and keeps results identical to AVX2).

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn acc_dot_u8i8(
    acc: core::arch::x86_64::__m256i,
    u: core::arch::x86_64::__m256i,
    s: core::arch::x86_64::__m256i,
) -> core::arch::x86_64::__m256i {
    core::arch::x86_64::_mm256_dpbusd_epi32(acc, u, s)
}

super::simd_kernels!(
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    acc_dot_u8i8
);
// 32 vector registers (AVX-512VL): 4 rows x 4 tokens keeps 16 accumulators live.
super::simd_gemm!(
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    acc_dot_u8i8,
    true,
    4,
    4
);
