//! Q4_0 (`d: f16, qs: [u8; 16]`, 18 bytes / 32 values, value = (nibble - 8) * d) and
//! Q4_1 (`d: f16, m: f16, qs: [u8; 16]`, 20 bytes, value = nibble * d + m).
//! Byte `j` holds element `j` in its low nibble and element `j + 16` in its high nibble.

use super::f16_at;

pub const Q4_0_BYTES: usize = 18;
pub const Q4_1_BYTES: usize = 20;

pub fn dequantize_q4_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(Q4_0_BYTES).zip(dst.chunks_exact_mut(32)) {
        let d = f16_at(b, 0);
        for j in 0..16 {
            let q = b[2 + j];
            y[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
            y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

pub fn dequantize_q4_1(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(Q4_1_BYTES).zip(dst.chunks_exact_mut(32)) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        for j in 0..16 {
            let q = b[4 + j];
            y[j] = (q & 0x0f) as f32 * d + m;
            y[j + 16] = (q >> 4) as f32 * d + m;
        }
    }
}

/// Q4_0 weights · Q8_0 activations (ggml_vec_dot_q4_0_q8_0).
pub fn dot_q4_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for ib in 0..n / 32 {
        let x = &w[ib * Q4_0_BYTES..][..Q4_0_BYTES];
        let y = &a[ib * super::q8::Q8_0_BYTES..][..super::q8::Q8_0_BYTES];
        let (mut s0, mut s1) = (0i32, 0i32);
        for j in 0..16 {
            let v0 = (x[2 + j] & 0x0f) as i32 - 8;
            let v1 = (x[2 + j] >> 4) as i32 - 8;
            s0 += v0 * y[2 + j] as i8 as i32;
            s1 += v1 * y[2 + j + 16] as i8 as i32;
        }
        // ggml: sumi * d_x * d_y, evaluated left to right.
        sumf += (s0 + s1) as f32 * f16_at(x, 0) * f16_at(y, 0);
    }
    sumf
}

/// Q4_1 weights · Q8_1 activations (ggml_vec_dot_q4_1_q8_1): the min term uses the
/// activation block's precomputed `s = d * sum(q)`.
pub fn dot_q4_1_q8_1(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for ib in 0..n / 32 {
        let x = &w[ib * Q4_1_BYTES..][..Q4_1_BYTES];
        let y = &a[ib * super::q8::Q8_1_BYTES..][..super::q8::Q8_1_BYTES];
        let (mut s0, mut s1) = (0i32, 0i32);
        for j in 0..16 {
            s0 += (x[4 + j] & 0x0f) as i32 * y[4 + j] as i8 as i32;
            s1 += (x[4 + j] >> 4) as i32 * y[4 + j + 16] as i8 as i32;
        }
        sumf += (f16_at(x, 0) * f16_at(y, 0)) * (s0 + s1) as f32 + f16_at(x, 2) * f16_at(y, 2);
    }
    sumf
}
