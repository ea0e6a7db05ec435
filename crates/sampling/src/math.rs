//! Platform-independent `exp`. libm's `exp` may differ by an ulp between platforms, which
//! would occasionally change which token a seeded draw picks. This one uses only +, -, *, /
//! and rounding (exact IEEE operations; Rust never fuses them into FMAs), so its bits are the
//! same everywhere.

const LN2_HI: f64 = 6.931_471_803_691_238_164_90e-1; // low 32 bits zero: k * LN2_HI is exact
const LN2_LO: f64 = 1.908_214_929_270_587_700_02e-10;
const INV_LN2: f64 = std::f64::consts::LOG2_E;

/// Taylor coefficients 1/n! for n = 0..=13, evaluated at compile time.
const COEFFS: [f64; 14] = {
    let mut c = [1.0f64; 14];
    let mut n = 1;
    while n < 14 {
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
    // x = k ln2 + r with |r| <= ln2/2; e^r by degree-13 Taylor (error < 0.35^14/14! ≈ 4e-18).
    let k = (x * INV_LN2).round();
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let mut p = COEFFS[13];
    for &c in COEFFS[..13].iter().rev() {
        p = p * r + c;
    }
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
