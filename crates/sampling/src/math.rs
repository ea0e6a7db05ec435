//! Platform-independent `exp`. libm's `exp` may differ by an ulp between platforms, which
//! would occasionally change which token a seeded draw picks. This one uses only +, -, *, /
//! and rounding (exact IEEE operations; Rust never fuses them into FMAs), so its bits are the
//! same everywhere.

// fdlibm's split of ln 2: LN2_HI has its low 32 bits zero, so k * LN2_HI is exact.
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
const INV_LN2: f64 = std::f64::consts::LOG2_E;

/// Taylor coefficients 1/n! for n = 0..=12, evaluated at compile time.
const COEFFS: [f64; 13] = {
    let mut c = [1.0f64; 13];
    let mut n = 1;
    while n < 13 {
        c[n] = c[n - 1] / n as f64;
        n += 1;
    }
    c
};

/// `e^x` to within a few ulp, bit-identical on every platform. NaN → 0 (callers use it for
/// weights, where NaN must never win).
pub(crate) fn det_exp(x: f64) -> f64 {
    if x.is_nan() || x < -745.2 {
        return 0.0;
    }
    if x > 709.7 {
        return f64::INFINITY;
    }
    // x = k ln2 + r with |r| <= ln2/2; e^r by degree-12 Taylor (error < 0.35^13/13! ≈ 2e-16).
    // Round to nearest by adding and removing 1.5 * 2^52 (exact for |y| < 2^51; Rust never
    // reassociates floats). `f64::round` would be a libm call without SSE4.1.
    const SHIFTER: f64 = 6_755_399_441_055_744.0;
    let k = (x * INV_LN2 + SHIFTER) - SHIFTER;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    // Estrin's scheme: a shallow tree instead of Horner's 12-deep chain, so the latency of one
    // call is a fraction of Horner's and a loop over the vocabulary runs ~3x faster.
    let c = &COEFFS;
    let r2 = r * r;
    let r4 = r2 * r2;
    let r8 = r4 * r4;
    let q0 = (c[0] + c[1] * r) + (c[2] + c[3] * r) * r2;
    let q1 = (c[4] + c[5] * r) + (c[6] + c[7] * r) * r2;
    let q2 = (c[8] + c[9] * r) + (c[10] + c[11] * r) * r2;
    let p = (q0 + q1 * r4) + (q2 + c[12] * r4) * r8;
    let k = k as i32;
    if k >= -1022 {
        p * f64::from_bits(((k + 1023) as u64) << 52)
    } else {
        // Result is subnormal: scale in two normal steps.
        p * f64::from_bits(((k + 1023 + 600) as u64) << 52) * f64::from_bits((1023 - 600) << 52)
    }
}

#[cfg(test)]
mod tests {
    use super::det_exp;

    #[test]
    fn matches_std_exp() {
        let mut x = -740.0f64;
        while x < 700.0 {
            let (a, b) = (det_exp(x), x.exp());
            let rel = ((a - b) / b).abs();
            assert!(rel < 1e-14, "x={x} det={a} std={b} rel={rel}");
            x += 0.0137;
        }
        assert_eq!(det_exp(0.0), 1.0);
        assert_eq!(det_exp(f64::NEG_INFINITY), 0.0);
        assert_eq!(det_exp(f64::NAN), 0.0);
        assert_eq!(det_exp(800.0), f64::INFINITY);
    }

    #[test]
    fn monotone_near_zero() {
        // The sampler relies on larger logits never getting smaller weights.
        let mut prev = 0.0;
        let mut x = -30.0f64;
        while x <= 0.0 {
            let y = det_exp(x);
            assert!(y >= prev, "not monotone at {x}");
            prev = y;
            x += 1e-3;
        }
    }
}
