//! F32, F16 and BF16 rows. Activations for F16/BF16 weights are rounded to the weight's
//! type first (as ggml does for its `vec_dot_type`), then products are summed in f32.

/// Little-endian f32 bytes → f32.
pub fn dequantize_f32(src: &[u8], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    }
}

pub fn dequantize_f16(src: &[u8], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *d = half::f16::from_bits(u16::from_le_bytes([s[0], s[1]])).to_f32();
    }
}

pub fn dequantize_bf16(src: &[u8], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *d = half::bf16::from_bits(u16::from_le_bytes([s[0], s[1]])).to_f32();
    }
}

/// Activation "quantizer" for F32 weights: a plain byte copy.
pub fn quantize_f32(x: &[f32], dst: &mut [u8]) {
    for (d, v) in dst.chunks_exact_mut(4).zip(x) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}

/// Rounds to f16, nearest-even (ggml's FP32_TO_FP16).
pub fn quantize_f16(x: &[f32], dst: &mut [u8]) {
    for (d, v) in dst.chunks_exact_mut(2).zip(x) {
        d.copy_from_slice(&half::f16::from_f32(*v).to_bits().to_le_bytes());
    }
}

/// Rounds to bf16, nearest-even (ggml's FP32_TO_BF16).
pub fn quantize_bf16(x: &[f32], dst: &mut [u8]) {
    for (d, v) in dst.chunks_exact_mut(2).zip(x) {
        d.copy_from_slice(&half::bf16::from_f32(*v).to_bits().to_le_bytes());
    }
}

pub fn dot_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in w[..n * 4].chunks_exact(4).zip(a.chunks_exact(4)) {
        sum += f32::from_le_bytes([x[0], x[1], x[2], x[3]])
            * f32::from_le_bytes([y[0], y[1], y[2], y[3]]);
    }
    sum
}

pub fn dot_f16(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in w[..n * 2].chunks_exact(2).zip(a.chunks_exact(2)) {
        let x = half::f16::from_bits(u16::from_le_bytes([x[0], x[1]])).to_f32();
        let y = half::f16::from_bits(u16::from_le_bytes([y[0], y[1]])).to_f32();
        sum += x * y;
    }
    sum
}

pub fn dot_bf16(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in w[..n * 2].chunks_exact(2).zip(a.chunks_exact(2)) {
        let x = half::bf16::from_bits(u16::from_le_bytes([x[0], x[1]])).to_f32();
        let y = half::bf16::from_bits(u16::from_le_bytes([y[0], y[1]])).to_f32();
        sum += x * y;
    }
    sum
}
