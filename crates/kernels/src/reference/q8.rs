//! Q8_0 (`d: f16, qs: [i8; 32]`, 34 bytes) weights and activations, and Q8_1
//! (`d: f16, s: f16, qs: [i8; 32]`, 36 bytes, `s = d * sum(qs)`) activations.

use super::{f16_at, nearest_int, put_f16};

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

/// Scale and inverse scale of one 32-value block, as ggml's x86 (AVX/AVX2) quantizer
/// computes them: `d = amax / 127`, `id = 127 / amax`. This is the quantizer llama.cpp
/// runs on x86; `quantize_row_q8_0_ref`'s `id = 1 / d` differs from it in the last bit
/// for some `amax`, which flips the rounding of values near a half.
#[inline(always)]
fn block_scale(x: &[f32]) -> (f32, f32) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    (d, id)
}

/// `v` rounded to nearest, ties to even (ggml's x86 `_mm256_round_ps(_MM_ROUND_NEAREST)`),
/// saturated to i8 like its `packs` instructions. The product `x * id` is rounded to f32
/// before this, as in ggml (no fused multiply-add).
#[inline(always)]
fn round_i8(v: f32) -> i8 {
    if !v.is_finite() {
        return 0;
    }
    // nearest_int is exact for |v| < 2^22; quantizer inputs are within ±127 (+ rounding).
    nearest_int(v.clamp(-128.0, 127.0)) as i8
}

/// ggml's x86 quantize_row_q8_0: d = amax / 127, q = round_even(x * (127 / amax)).
pub fn quantize_q8_0(x: &[f32], dst: &mut [u8]) {
    for (xb, b) in x.chunks_exact(32).zip(dst.chunks_exact_mut(Q8_0_BYTES)) {
        let (d, id) = block_scale(xb);
        put_f16(b, 0, d);
        for (o, v) in b[2..].iter_mut().zip(xb) {
            *o = round_i8(v * id) as u8;
        }
    }
}

/// ggml's x86 quantize_row_q8_1: as Q8_0, plus `s = f16(d * sum(q))` (the rounded
/// integers times the unrounded `d`).
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
        put_f16(b, 2, d * sum as f32);
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
    use super::*;

    #[test]
    fn round_i8_is_ties_even() {
        let mut v = -128.0f32;
        while v <= 127.0 {
            assert_eq!(round_i8(v) as f32, v.round_ties_even(), "{v}");
            for h in [v + 0.5, (v + 0.5).next_up(), (v + 0.5).next_down()] {
                if h <= 127.0 {
                    assert_eq!(round_i8(h) as f32, h.round_ties_even(), "{h}");
                }
            }
            v += 1.0 / 1024.0;
        }
        assert_eq!(
            (round_i8(127.6), round_i8(-130.0), round_i8(f32::NAN)),
            (127, -128, 0)
        );
    }

    /// A block whose largest magnitude is 127 has id = 1, so x = k + 0.5 are exact ties.
    #[test]
    fn quantizers_round_ties_to_even() {
        let mut x = [0.0f32; 32];
        x[0] = -127.0;
        x[1..6].copy_from_slice(&[2.5, 3.5, -2.5, -3.5, 0.5]);
        let (mut q0, mut q1) = ([0u8; Q8_0_BYTES], [0u8; Q8_1_BYTES]);
        quantize_q8_0(&x, &mut q0);
        quantize_q8_1(&x, &mut q1);
        let want = [-127i8, 2, 4, -2, -4, 0];
        for (i, &w) in want.iter().enumerate() {
            assert_eq!(q0[2 + i] as i8, w, "q8_0[{i}]");
            assert_eq!(q1[4 + i] as i8, w, "q8_1[{i}]");
        }
        assert_eq!(f16_at(&q0, 0), half::f16::from_f32(1.0).to_f32());
        // s = d * sum(q) = -127 + 2 + 4 - 2 - 4 + 0.
        assert_eq!(f16_at(&q1, 2), -127.0);
    }

    /// The inverse scale is 127 / amax, not 1 / (amax / 127): find an amax where the two
    /// differ and check that the quantizer follows the former.
    #[test]
    fn inverse_scale_is_127_over_amax() {
        let mut amax = 1.0f32;
        while 127.0 / amax == 1.0 / (amax / 127.0) {
            amax = amax.next_up();
        }
        let id = 127.0 / amax;
        // A value whose scaled product lands on a tie with id (it is then even-rounded),
        // searched among small multiples of a step.
        let mut x = [0.0f32; 32];
        x[0] = amax;
        let mut found = false;
        let mut k = 1.0f32;
        while k < 126.0 && !found {
            let v = (k + 0.5) / id;
            for c in [v.next_down(), v, v.next_up()] {
                let (a, b) = (c * id, c * (1.0 / (amax / 127.0)));
                if a.round_ties_even() != b.round_ties_even() {
                    x[1] = c;
                    found = true;
                    break;
                }
            }
            k += 1.0;
        }
        assert!(found, "no distinguishing value for amax {amax}");
        let mut q = [0u8; Q8_0_BYTES];
        quantize_q8_0(&x, &mut q);
        assert_eq!(q[3] as i8 as f32, (x[1] * id).round_ties_even());
        assert_eq!(q[2] as i8, 127);
    }
}
