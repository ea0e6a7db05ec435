//! Quantized CPU kernels: block formats, matrix × vector / matrix × matrix products,
//! and the thread pool they run on. The scalar code in `reference` is the spec;
//! SIMD variants are chosen once at run time from CPU features (override with
//! `THAW_KERNELS=scalar|avx2|avx512`).
//!
//! API SKELETON: bodies are filled in by the kernels work; signatures are the contract
//! other crates code against.

pub use thaw_gguf::GgmlType;

mod pool;
pub use pool::ThreadPool;

/// Errors from kernel set-up.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("tensor type {0} is not supported by thaw's kernels (supported: F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K)")]
    Unsupported(GgmlType),
    #[error("THAW_KERNELS={0}: unknown or unavailable on this CPU (choose scalar, avx2 or avx512)")]
    BadOverride(String),
    #[error("shape mismatch: {0}")]
    Shape(String),
}

/// A row-major weight matrix in its stored (possibly quantized) format:
/// `rows` rows of `cols` elements each, each row `ty.row_bytes(cols)` bytes.
#[derive(Clone, Copy)]
pub struct QMatrix<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

/// `out[t * w.rows + r] = dot(w.row(r), x[t * w.cols ..][.. w.cols])` for each of the
/// `n` input rows `t`. Uses every thread of `pool`. Activations are quantized the way
/// ggml does for the weight type (Q8_0 for Q4_0/Q8_0, Q8_1 for Q4_1, Q8_K for K-quants,
/// F16 for F16) so results track llama.cpp's.
pub fn matmul(pool: &ThreadPool, w: &QMatrix<'_>, x: &[f32], n: usize, out: &mut [f32]) {
    let _ = (pool, w, x, n, out);
    todo!()
}

/// Dequantize one row (`dst.len()` elements) of type `ty` from `src`.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    let _ = (ty, src, dst);
    todo!()
}

/// Whether `ty` is supported by [`matmul`] and [`dequantize_row`].
pub fn is_supported(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q4_0 | GgmlType::Q4_1
            | GgmlType::Q8_0 | GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K
    )
}

/// The name of the kernel set in use ("scalar", "avx2", "avx512").
pub fn kernel_set_name() -> &'static str {
    todo!()
}
