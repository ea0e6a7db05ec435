//! Dequantization round trips: test-only quantizers (written from the block layouts,
//! independent of the crate's code) encode random data; `dequantize_row` must give it
//! back within the format's step size. Sub-blocks get very different ranges so that a
//! mix-up of per-sub-block scales or a wrong bit position shows up as a large error.

mod common;

use common::Rng;
use thaw_kernels::{GgmlType, dequantize_row, try_dequantize_row};

fn f16r(v: f32) -> f32 {
    half::f16::from_f32(v).to_f32()
}
fn put_f16(b: &mut Vec<u8>, v: f32) {
    b.extend_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes());
}

/// Random data whose 16-value groups have ranges varying by up to 20x.
fn data(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut x = Vec::with_capacity(n);
    for _ in 0..n / 16 {
        let s = rng.range(0.05, 1.0);
        let off = rng.range(-0.3, 0.3) * s;
        x.extend((0..16).map(|_| rng.f32() * s + off));
    }
    x
}

/// Quantizes `x` to `ty` and returns (bytes, allowed error per element).
fn quantize(ty: GgmlType, x: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let mut out = Vec::new();
    let mut tol = Vec::new();
    match ty {
        GgmlType::F32 => {
            out = x.iter().flat_map(|v| v.to_le_bytes()).collect();
            tol = vec![0.0; x.len()];
        }
        GgmlType::F16 | GgmlType::BF16 => {
            for v in x {
                let bits = if ty == GgmlType::F16 {
                    half::f16::from_f32(*v).to_bits()
                } else {
                    half::bf16::from_f32(*v).to_bits()
                };
                out.extend_from_slice(&bits.to_le_bytes());
                tol.push(v.abs() * if ty == GgmlType::F16 { 5e-4 } else { 4e-3 });
            }
        }
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::Q4_1 | GgmlType::Q5_1 => {
            let (bits, with_min) = match ty {
                GgmlType::Q4_0 => (4, false),
                GgmlType::Q5_0 => (5, false),
                GgmlType::Q8_0 => (8, false),
                GgmlType::Q4_1 => (4, true),
                _ => (5, true),
            };
            let levels = (1i32 << bits) - 1;
            for b in x.chunks_exact(32) {
                let (lo, hi) = b
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
                let (d, m, zero) = if with_min {
                    (f16r((hi - lo) / levels as f32), f16r(lo), 0)
                } else {
                    let amax = lo.abs().max(hi.abs());
                    let half_levels = if bits == 8 { 127 } else { 1 << (bits - 1) };
                    (
                        f16r(amax / (half_levels - 1) as f32),
                        0.0,
                        if bits == 8 { 0 } else { half_levels },
                    )
                };
                let q: Vec<i32> = b
                    .iter()
                    .map(|v| {
                        (((v - m) / d).round() as i32 + zero)
                            .clamp(if bits == 8 { -127 } else { 0 }, levels)
                    })
                    .collect();
                put_f16(&mut out, d);
                if with_min {
                    put_f16(&mut out, m);
                }
                match bits {
                    8 => out.extend(q.iter().map(|&v| v as i8 as u8)),
                    _ => {
                        if bits == 5 {
                            let qh = (0..32).fold(0u32, |h, j| h | ((q[j] as u32 >> 4) & 1) << j);
                            out.extend_from_slice(&qh.to_le_bytes());
                        }
                        out.extend(
                            (0..16).map(|j| (q[j] as u8 & 15) | (q[j + 16] as u8 & 15) << 4),
                        );
                    }
                }
                tol.extend(std::iter::repeat_n(d * 0.5 + 1e-2 * d + m.abs() * 1e-3, 32));
            }
        }
        GgmlType::Q4K | GgmlType::Q5K => {
            let five = ty == GgmlType::Q5K;
            let levels = if five { 31.0 } else { 15.0 };
            for b in x.chunks_exact(256) {
                let mut scale = [0f32; 8];
                let mut min = [0f32; 8];
                for s in 0..8 {
                    let sub = &b[32 * s..][..32];
                    let lo = sub.iter().fold(0f32, |m, v| m.min(*v));
                    let hi = sub.iter().fold(f32::MIN, |m, v| m.max(*v));
                    scale[s] = (hi - lo) / levels;
                    min[s] = -lo;
                }
                let d = f16r(scale.iter().fold(0f32, |m, v| m.max(*v)) / 63.0);
                let dmin = f16r(min.iter().fold(0f32, |m, v| m.max(*v)).max(1e-6) / 63.0);
                let sc: Vec<u8> = scale
                    .iter()
                    .map(|s| (s / d).round().clamp(1.0, 63.0) as u8)
                    .collect();
                let mq: Vec<u8> = min
                    .iter()
                    .map(|m| (m / dmin).round().clamp(0.0, 63.0) as u8)
                    .collect();
                let mut packed = [0u8; 12];
                for j in 0..8 {
                    if j < 4 {
                        packed[j] = sc[j];
                        packed[j + 4] = mq[j];
                    } else {
                        packed[j + 4] = (sc[j] & 15) | (mq[j] & 15) << 4;
                        packed[j - 4] |= (sc[j] >> 4) << 6;
                        packed[j] |= (mq[j] >> 4) << 6;
                    }
                }
                let q: Vec<u8> = (0..256)
                    .map(|i| {
                        let s = i / 32;
                        ((b[i] + dmin * mq[s] as f32) / (d * sc[s] as f32))
                            .round()
                            .clamp(0.0, levels) as u8
                    })
                    .collect();
                put_f16(&mut out, d);
                put_f16(&mut out, dmin);
                out.extend_from_slice(&packed);
                if five {
                    let mut qh = [0u8; 32];
                    for c in 0..4 {
                        for l in 0..32 {
                            qh[l] |= ((q[64 * c + l] >> 4) & 1) << (2 * c);
                            qh[l] |= ((q[64 * c + 32 + l] >> 4) & 1) << (2 * c + 1);
                        }
                    }
                    out.extend_from_slice(&qh);
                }
                for c in 0..4 {
                    out.extend(
                        (0..32).map(|l| (q[64 * c + l] & 15) | (q[64 * c + 32 + l] & 15) << 4),
                    );
                }
                // Half a step, plus what the 6-bit rounding of scale and min can add
                // across the range.
                for i in 0..256 {
                    let s = i / 32;
                    let step = d * sc[s] as f32;
                    tol.push(
                        0.5 * step
                            + levels * (scale[s] - step).abs()
                            + (min[s] - dmin * mq[s] as f32).abs()
                            + 1e-4,
                    );
                }
            }
        }
        GgmlType::Q6K => {
            for b in x.chunks_exact(256) {
                let scale: Vec<f32> = b
                    .chunks_exact(16)
                    .map(|s| s.iter().fold(0f32, |m, v| m.max(v.abs())) / 31.0)
                    .collect();
                let d = f16r(scale.iter().fold(0f32, |m, v| m.max(*v)) / 127.0);
                let sc: Vec<i8> = scale
                    .iter()
                    .map(|s| (s / d).round().clamp(1.0, 127.0) as i8)
                    .collect();
                let q: Vec<u8> = (0..256)
                    .map(|i| {
                        ((b[i] / (d * sc[i / 16] as f32)).round().clamp(-32.0, 31.0) as i32 + 32)
                            as u8
                    })
                    .collect();
                let (mut ql, mut qh) = ([0u8; 128], [0u8; 64]);
                for h in 0..2 {
                    let q = &q[128 * h..];
                    for l in 0..32 {
                        ql[64 * h + l] = (q[l] & 15) | (q[l + 64] & 15) << 4;
                        ql[64 * h + 32 + l] = (q[l + 32] & 15) | (q[l + 96] & 15) << 4;
                        qh[32 * h + l] = (q[l] >> 4)
                            | (q[l + 32] >> 4) << 2
                            | (q[l + 64] >> 4) << 4
                            | (q[l + 96] >> 4) << 6;
                    }
                }
                out.extend_from_slice(&ql);
                out.extend_from_slice(&qh);
                out.extend(sc.iter().map(|&s| s as u8));
                put_f16(&mut out, d);
                for i in 0..256 {
                    let step = d * sc[i / 16] as f32;
                    tol.push(0.5 * step + 32.0 * (scale[i / 16] - step).abs() + 1e-4);
                }
            }
        }
        other => panic!("no test quantizer for {other}"),
    }
    (out, tol)
}

#[test]
fn round_trip_every_type() {
    let mut rng = Rng(7);
    for ty in common::WEIGHT_TYPES {
        for n in [256usize, 768] {
            let x = data(&mut rng, n);
            let (bytes, tol) = quantize(ty, &x);
            assert_eq!(
                bytes.len(),
                ty.row_bytes(n).unwrap(),
                "{ty}: test quantizer size"
            );
            let mut back = vec![f32::NAN; n];
            dequantize_row(ty, &bytes, &mut back);
            for i in 0..n {
                assert!(
                    (back[i] - x[i]).abs() <= tol[i],
                    "{ty} n={n} [{i}]: {} -> {} (tol {})",
                    x[i],
                    back[i],
                    tol[i]
                );
            }
        }
    }
}

#[test]
fn dequantize_rejects_bad_input() {
    let mut out = vec![0.0; 32];
    assert!(try_dequantize_row(GgmlType::Q4_1, &[0u8; 19], &mut out).is_err());
    assert!(try_dequantize_row(GgmlType::Q4K, &[0u8; 144], &mut out).is_err());
    assert!(try_dequantize_row(GgmlType::Q2K, &[0u8; 84], &mut vec![0.0; 256]).is_err());
    assert!(try_dequantize_row(GgmlType::Q8_0, &[0u8; 34], &mut out).is_ok());
}
