//! Shared test helpers: a tiny PRNG, random blocks for every weight type, and
//! dequantizers for the activation formats.
#![allow(dead_code)]

use thaw_kernels::GgmlType;

/// splitmix64: small, deterministic, good enough for test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * (self.f32() * 0.5 + 0.5)
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32() * scale).collect()
    }
}

pub const WEIGHT_TYPES: [GgmlType; 11] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];

fn put_f16(b: &mut [u8], off: usize, v: f32) {
    b[off..off + 2].copy_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes());
}

/// `rows` random rows of `cols` values of type `ty`: random quant bytes with finite,
/// realistic scales (random bytes in scale fields could be inf/NaN).
pub fn random_rows(rng: &mut Rng, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let (bs, bytes) = ty.block_layout().unwrap();
    let n_blocks = rows * cols / bs;
    match ty {
        GgmlType::F32 => {
            return (0..rows * cols)
                .flat_map(|_| rng.f32().to_le_bytes())
                .collect();
        }
        GgmlType::F16 => {
            return (0..rows * cols)
                .flat_map(|_| half::f16::from_f32(rng.f32()).to_bits().to_le_bytes())
                .collect();
        }
        GgmlType::BF16 => {
            return (0..rows * cols)
                .flat_map(|_| half::bf16::from_f32(rng.f32()).to_bits().to_le_bytes())
                .collect();
        }
        _ => {}
    }
    let mut data = rng.bytes(n_blocks * bytes);
    for b in data.chunks_exact_mut(bytes) {
        let d = rng.range(0.002, 0.05);
        match ty {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => put_f16(b, 0, d),
            GgmlType::Q4_1 | GgmlType::Q5_1 => {
                put_f16(b, 0, d);
                put_f16(b, 2, rng.range(-0.2, 0.0));
            }
            GgmlType::Q4K | GgmlType::Q5K => {
                put_f16(b, 0, d / 16.0);
                put_f16(b, 2, d / 64.0);
            }
            GgmlType::Q6K => put_f16(b, 208, d / 32.0),
            _ => unreachable!(),
        }
    }
    data
}

/// Dequantizes an activation row of format `act` (which includes Q8_1 and Q8_K, the
/// formats `dequantize_row` does not cover since they never hold weights).
pub fn dequantize_act(act: GgmlType, src: &[u8], n: usize) -> Vec<f32> {
    let f16 =
        |b: &[u8], o: usize| half::f16::from_bits(u16::from_le_bytes([b[o], b[o + 1]])).to_f32();
    match act {
        GgmlType::Q8_1 => src
            .chunks_exact(36)
            .flat_map(|b| b[4..].iter().map(move |&q| q as i8 as f32 * f16(b, 0)))
            .collect(),
        GgmlType::Q8K => src
            .chunks_exact(292)
            .flat_map(|b| {
                let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                b[4..260].iter().map(move |&q| q as i8 as f32 * d)
            })
            .collect(),
        other => {
            let mut v = vec![0.0; n];
            thaw_kernels::dequantize_row(other, src, &mut v);
            v
        }
    }
}

/// (Σ w·a in f64, Σ |w·a|) over dequantized values.
pub fn exact_dot(w: &[f32], a: &[f32]) -> (f64, f64) {
    w.iter().zip(a).fold((0.0, 0.0), |(s, m), (x, y)| {
        let p = *x as f64 * *y as f64;
        (s + p, m + p.abs())
    })
}
