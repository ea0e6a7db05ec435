//! Scalar reference kernels: the spec every SIMD variant is tested against.
//!
//! Every function works on raw little-endian bytes in ggml's block layouts (weights come
//! straight from a memory-mapped GGUF, so there is no alignment to rely on). Dot products
//! follow ggml's generic CPU code: the same per-block integer sums and the same order of
//! float operations, so results track llama.cpp's.

pub mod float;
pub mod kquants;
pub mod q4;
pub mod q5;
pub mod q8;

/// An f16 stored little-endian at `b[off..off + 2]`, widened to f32.
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], off: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[off], b[off + 1]])).to_f32()
}

/// Writes `v` rounded to f16 (nearest, ties to even, like ggml's FP32_TO_FP16).
#[inline(always)]
pub(crate) fn put_f16(b: &mut [u8], off: usize, v: f32) {
    b[off..off + 2].copy_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes());
}

/// An f32 stored little-endian at `b[off..off + 4]`.
#[inline(always)]
pub(crate) fn f32_at(b: &[u8], off: usize) -> f32 {
    f32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// ggml's `nearest_int`: round half to even via the 1.5 * 2^23 trick (valid for
/// |v| < 2^22, always the case for values scaled to ±127).
#[inline(always)]
pub(crate) fn nearest_int(v: f32) -> i32 {
    let bits = (v + 12_582_912.0f32).to_bits() as i32;
    (bits & 0x007f_ffff) - 0x0040_0000
}
