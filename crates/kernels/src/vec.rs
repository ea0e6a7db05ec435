//! f32 vector helpers for the parts of a forward pass that stay in f32 (attention
//! scores and the weighted sum of values), dispatched like the matrix kernels: the
//! crate's callers are compiled for baseline x86-64 (SSE2, no FMA), so their own loops
//! get 128-bit vectors at best and `f32::mul_add` becomes a libm call.

/// Σ a[i] * b[i] over the common length. Summation order differs from a sequential
/// loop (several accumulators), as with any SIMD dot.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    // SAFETY: any initialized f32 slice is a valid byte slice of 4x its length
    // (u8 has no alignment or validity requirements).
    let (ab, bb) = unsafe {
        (
            std::slice::from_raw_parts(a.as_ptr().cast::<u8>(), 4 * n),
            std::slice::from_raw_parts(b.as_ptr().cast::<u8>(), 4 * n),
        )
    };
    let k = crate::dispatch::active()
        .for_type(crate::GgmlType::F32)
        .expect("F32 is always supported");
    (k.dot)(n, ab, bb)
}

/// `y[i] += a * x[i]` over the common length (one rounding per element, like a
/// sequential `y + a * x`; fused where the CPU has FMA).
pub fn axpy_f32(y: &mut [f32], a: f32, x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::dispatch::active().name() != "scalar" {
            // SAFETY: the avx2/avx512 sets are only active after AVX2+FMA were detected.
            unsafe { axpy_fma(y, a, x) };
            return;
        }
    }
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// The auto-vectorized loop compiled with AVX2 + FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_fma(y: &mut [f32], a: f32, x: &[f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi = a.mul_add(*xi, *yi);
    }
}
