//! Quantized CPU kernels: block formats, matrix × vector / matrix × matrix products,
//! and the thread pool they run on. The scalar code in `reference` is the spec;
//! SIMD variants are chosen once at run time from CPU features (override with
//! `THAW_KERNELS=scalar|avx2|avx512`).
//!
//! Products follow ggml's CPU backend: activations are first quantized to the weight
//! type's companion format (Q8_0, Q8_1, Q8_K, F16, BF16 or F32) with ggml's reference
//! rounding, then dotted block by block with exact integer sums, so thaw's numbers track
//! llama.cpp's.
//!
//! Entry points: [`matmul`] (one matrix) and [`matmul_many`] (several matrices sharing
//! one input, e.g. Q/K/V or gate/up: one activation quantization, one pool dispatch).
//! Single tokens use R-row `gemv` tiles and prompts use R-row × T-token `gemm` tiles
//! where a kernel set has them (Q4_1, Q5_0, Q8_0 on AVX2/AVX-512), per-row dots
//! elsewhere; on AVX-512, prompts of 16+ tokens run Q5_0, Q8_0, Q4_K and Q6_K through
//! packed tiles on weights repacked per call (same bits as the gemm tiles).
//! [`dot_f32`] and [`axpy_f32`] are dispatched f32 helpers for attention.

pub use thaw_gguf::GgmlType;

pub mod attn;
mod dispatch;
pub mod interleave;
mod matmul;
mod pool;
pub mod reference;
mod vec;
#[cfg(target_arch = "x86_64")]
mod x86_64;

pub use dispatch::{
    ActPrep, DotFn, GemmFn, GemmTile, KernelSet, PackedFn, PackedGemm, QuantizeFn, TileOut,
    TypeKernels, available_kernel_sets, kernel_set, reads_interleaved,
    rerun_tests_in_other_kernel_sets, select_kernels,
};
pub use matmul::{matmul_many_with, matmul_with};
pub use pool::ThreadPool;
pub use vec::{axpy_f32, dot_f32};

/// Errors from kernel set-up.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "tensor type {0} is not supported by thaw's kernels (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)"
    )]
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

impl QMatrix<'_> {
    /// Bytes of one row, or `None` if `cols` is not a whole number of blocks.
    pub fn row_bytes(&self) -> Option<usize> {
        self.ty.row_bytes(self.cols)
    }

    /// The stored bytes of row `r` (panics if out of range).
    pub fn row(&self, r: usize) -> &[u8] {
        let rb = self.row_bytes().expect("QMatrix cols must be whole blocks");
        &self.data[r * rb..][..rb]
    }
}

/// `out[t * w.rows + r] = dot(w.row(r), x[t * w.cols ..][.. w.cols])` for each of the
/// `n` input rows `t`. Uses every thread of `pool`. Activations are quantized the way
/// ggml does for the weight type (Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1, Q8_K for
/// K-quants, F16 for F16) so results track llama.cpp's.
///
/// # Panics
/// On an unsupported type or inconsistent shapes (`w.data.len() != rows * row_bytes`,
/// `x.len() != n * cols`, `out.len() != n * rows`): these are programming errors. Use
/// [`try_matmul`] to get them as [`KernelError`]s instead.
pub fn matmul(pool: &ThreadPool, w: &QMatrix<'_>, x: &[f32], n: usize, out: &mut [f32]) {
    if let Err(e) = try_matmul(pool, w, x, n, out) {
        panic!("thaw_kernels::matmul: {e}");
    }
}

/// [`matmul`] that reports unsupported types and shape mismatches as errors.
pub fn try_matmul(
    pool: &ThreadPool,
    w: &QMatrix<'_>,
    x: &[f32],
    n: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    matmul_with(dispatch::active(), pool, w, x, n, out)
}

/// Several matrices applied to the same activations, e.g. Q/K/V or gate/up:
/// `outs[i][t * ws[i].rows + r] = dot(ws[i].row(r), x[t * cols ..][.. cols])`.
/// Equivalent to (and bit-identical with) one [`matmul`] per matrix, but the
/// activations are quantized once per distinct activation format and all matrices
/// share ONE pool dispatch with balanced chunks. All matrices must have the same `cols`.
///
/// # Panics
/// Like [`matmul`]; see [`try_matmul_many`].
pub fn matmul_many(
    pool: &ThreadPool,
    ws: &[&QMatrix<'_>],
    x: &[f32],
    n: usize,
    outs: &mut [&mut [f32]],
) {
    if let Err(e) = try_matmul_many(pool, ws, x, n, outs) {
        panic!("thaw_kernels::matmul_many: {e}");
    }
}

/// [`matmul_many`] that reports unsupported types and shape mismatches as errors.
pub fn try_matmul_many(
    pool: &ThreadPool,
    ws: &[&QMatrix<'_>],
    x: &[f32],
    n: usize,
    outs: &mut [&mut [f32]],
) -> Result<(), KernelError> {
    matmul_many_with(dispatch::active(), pool, ws, x, n, outs)
}

/// Dequantize one row (`dst.len()` elements) of type `ty` from `src`.
///
/// # Panics
/// If `ty` is unsupported or `src` does not hold exactly `dst.len()` values; see
/// [`try_dequantize_row`].
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    if let Err(e) = try_dequantize_row(ty, src, dst) {
        panic!("thaw_kernels::dequantize_row: {e}");
    }
}

/// [`dequantize_row`] returning errors instead of panicking.
pub fn try_dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), KernelError> {
    use reference::{float, kquants, q4, q5, q8};
    if !is_supported(ty) {
        return Err(KernelError::Unsupported(ty));
    }
    let need = ty.row_bytes(dst.len()).ok_or_else(|| {
        KernelError::Shape(format!(
            "{} values are not a whole number of {ty} blocks",
            dst.len()
        ))
    })?;
    if src.len() != need {
        return Err(KernelError::Shape(format!(
            "{} {ty} values need {need} bytes, got {}",
            dst.len(),
            src.len()
        )));
    }
    let f: fn(&[u8], &mut [f32]) = match ty {
        GgmlType::F32 => float::dequantize_f32,
        GgmlType::F16 => float::dequantize_f16,
        GgmlType::BF16 => float::dequantize_bf16,
        GgmlType::Q4_0 => q4::dequantize_q4_0,
        GgmlType::Q4_1 => q4::dequantize_q4_1,
        GgmlType::Q5_0 => q5::dequantize_q5_0,
        GgmlType::Q5_1 => q5::dequantize_q5_1,
        GgmlType::Q8_0 => q8::dequantize_q8_0,
        GgmlType::Q4K => kquants::dequantize_q4_k,
        GgmlType::Q5K => kquants::dequantize_q5_k,
        GgmlType::Q6K => kquants::dequantize_q6_k,
        other => return Err(KernelError::Unsupported(other)),
    };
    f(src, dst);
    Ok(())
}

/// Whether `ty` is supported by [`matmul`] and [`dequantize_row`]. The interleaved
/// types are the exception to both: rows are read with [`interleave::plain_row`], and
/// only kernel sets with [`reads_interleaved`] multiply them.
pub fn is_supported(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q4_1x16
            | GgmlType::Q8_0x16
            | GgmlType::F32
            | GgmlType::F16
            | GgmlType::BF16
            | GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::Q4K
            | GgmlType::Q5K
            | GgmlType::Q6K
    )
}

/// The name of the kernel set in use ("scalar", "avx2", "avx512"). Falls back to the
/// best available set if `THAW_KERNELS` names an unknown one (see [`select_kernels`]).
pub fn kernel_set_name() -> &'static str {
    dispatch::active().name()
}
