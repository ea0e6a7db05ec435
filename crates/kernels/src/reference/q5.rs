//! Q5_0 (`d: f16, qh: [u8; 4], qs: [u8; 16]`, 22 bytes / 32 values, value = (q - 16) * d)
//! and Q5_1 (`d: f16, m: f16, qh: [u8; 4], qs: [u8; 16]`, 24 bytes, value = q * d + m).
//! The 5th bit of element `j` is bit `j` of the little-endian u32 `qh`; the low 4 bits
//! are nibbles laid out as in Q4_0.

use super::f16_at;

pub const Q5_0_BYTES: usize = 22;
pub const Q5_1_BYTES: usize = 24;

/// The 32 unsigned 5-bit values of one block, given the offset of `qh`.
#[inline(always)]
fn values(b: &[u8], qh_off: usize) -> [u8; 32] {
    let qh = u32::from_le_bytes([b[qh_off], b[qh_off + 1], b[qh_off + 2], b[qh_off + 3]]);
    let qs = &b[qh_off + 4..qh_off + 20];
    let mut v = [0u8; 32];
    for j in 0..16 {
        let h0 = (((qh >> j) << 4) & 0x10) as u8;
        let h1 = ((qh >> (j + 12)) & 0x10) as u8;
        v[j] = (qs[j] & 0x0f) | h0;
        v[j + 16] = (qs[j] >> 4) | h1;
    }
    v
}

pub fn dequantize_q5_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(Q5_0_BYTES).zip(dst.chunks_exact_mut(32)) {
        let d = f16_at(b, 0);
        for (o, q) in y.iter_mut().zip(values(b, 2)) {
            *o = (q as i32 - 16) as f32 * d;
        }
    }
}

pub fn dequantize_q5_1(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(Q5_1_BYTES).zip(dst.chunks_exact_mut(32)) {
        let (d, m) = (f16_at(b, 0), f16_at(b, 2));
        for (o, q) in y.iter_mut().zip(values(b, 4)) {
            *o = q as f32 * d + m;
        }
    }
}

/// Q5_0 weights · Q8_0 activations (ggml_vec_dot_q5_0_q8_0).
pub fn dot_q5_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for ib in 0..n / 32 {
        let x = &w[ib * Q5_0_BYTES..][..Q5_0_BYTES];
        let y = &a[ib * super::q8::Q8_0_BYTES..][..super::q8::Q8_0_BYTES];
        let v = values(x, 2);
        let mut sumi = 0i32;
        for j in 0..32 {
            sumi += (v[j] as i32 - 16) * y[2 + j] as i8 as i32;
        }
        sumf += (f16_at(x, 0) * f16_at(y, 0)) * sumi as f32;
    }
    sumf
}

/// Q5_1 weights · Q8_1 activations (ggml_vec_dot_q5_1_q8_1).
pub fn dot_q5_1_q8_1(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for ib in 0..n / 32 {
        let x = &w[ib * Q5_1_BYTES..][..Q5_1_BYTES];
        let y = &a[ib * super::q8::Q8_1_BYTES..][..super::q8::Q8_1_BYTES];
        let v = values(x, 4);
        let mut sumi = 0i32;
        for j in 0..32 {
            sumi += v[j] as i32 * y[4 + j] as i8 as i32;
        }
        sumf += (f16_at(x, 0) * f16_at(y, 0)) * sumi as f32 + f16_at(x, 2) * f16_at(y, 2);
    }
    sumf
}
