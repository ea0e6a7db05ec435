//! Q8_0 (`d: f16, qs: [i8; 32]`, 34 bytes) weights and activations, and Q8_1
//! (`d: f16, s: f16, qs: [i8; 32]`, 36 bytes, `s = d * sum(qs)`) activations.

use super::{f16_at, put_f16};

pub const Q8_0_BYTES: usize = 34;
pub const Q8_1_BYTES: usize = 36;

pub fn dequantize_q8_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(Q8_0_BYTES).zip(dst.chunks_exact_mut(32)) {
        let d = f16_at(b, 0);
        for (o, q) in y.iter_mut().zip(&b[2..]) {
            *o = *q as i8 as f32 * d;
        }
    }
}

/// Scale of one 32-value block as ggml's reference quantizers compute it.
#[inline(always)]
fn block_scale(x: &[f32]) -> (f32, f32) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    (d, id)
}

/// `v.round() as i8` (half away from zero, like C's roundf) without the libm call that
/// baseline x86-64 makes for `round`: truncate, then step away from zero if the
/// dropped fraction is at least one half. Exact for |v| < 2^23 (the fraction is then
/// computed without rounding); quantizer inputs are within ±127.5.
#[inline(always)]
fn round_i8(v: f32) -> i8 {
    let t = v as i32;
    let frac = v - t as f32;
    let r = if frac >= 0.5 {
        t + 1
    } else if frac <= -0.5 {
        t - 1
    } else {
        t
    };
    // `as i8` on a float saturates; keep that.
    r.clamp(-128, 127) as i8
}

/// quantize_row_q8_0_ref: d = amax / 127, q = round(x / d) (ties away from zero).
pub fn quantize_q8_0(x: &[f32], dst: &mut [u8]) {
    for (xb, b) in x.chunks_exact(32).zip(dst.chunks_exact_mut(Q8_0_BYTES)) {
        let (d, id) = block_scale(xb);
        put_f16(b, 0, d);
        for (o, v) in b[2..].iter_mut().zip(xb) {
            *o = round_i8(v * id) as u8;
        }
    }
}

/// quantize_row_q8_1_ref: as Q8_0, plus `s = f16(sum(q) * d)` with the unrounded `d`.
pub fn quantize_q8_1(x: &[f32], dst: &mut [u8]) {
    for (xb, b) in x.chunks_exact(32).zip(dst.chunks_exact_mut(Q8_1_BYTES)) {
        let (d, id) = block_scale(xb);
        put_f16(b, 0, d);
        let mut sum = 0i32;
        for (o, v) in b[4..].iter_mut().zip(xb) {
            let q = round_i8(v * id);
            sum += q as i32;
            *o = q as u8;
        }
        put_f16(b, 2, sum as f32 * d);
    }
}

/// Q8_0 weights · Q8_0 activations (ggml_vec_dot_q8_0_q8_0).
pub fn dot_q8_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for ib in 0..n / 32 {
        let x = &w[ib * Q8_0_BYTES..][..Q8_0_BYTES];
        let y = &a[ib * Q8_0_BYTES..][..Q8_0_BYTES];
        let mut sumi = 0i32;
        for j in 0..32 {
            sumi += x[2 + j] as i8 as i32 * y[2 + j] as i8 as i32;
        }
        sumf += sumi as f32 * (f16_at(x, 0) * f16_at(y, 0));
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::round_i8;

    #[test]
    fn round_i8_is_roundf() {
        // Every f32 in [-128, 128] with a step fine enough to hit ties and their
        // neighbours, plus the exact half-integers.
        let mut v = -128.0f32;
        while v <= 128.0 {
            assert_eq!(round_i8(v), v.round() as i8, "{v}");
            for h in [v + 0.5, (v + 0.5).next_up(), (v + 0.5).next_down()] {
                if h.abs() <= 127.5 {
                    assert_eq!(round_i8(h), h.round() as i8, "{h}");
                }
            }
            v += 1.0 / 1024.0;
        }
    }
}
