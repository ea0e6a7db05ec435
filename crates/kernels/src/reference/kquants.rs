//! K-quants: 256-value super-blocks.
//!
//! - Q4_K (144 bytes): `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]`; eight
//!   sub-blocks of 32 with 6-bit scale and min packed in `scales` (see [`scale_min_k4`]);
//!   value = d * sc * q - dmin * m.
//! - Q5_K (176 bytes): as Q4_K plus `qh: [u8; 32]` (before `qs`) holding the 5th bits.
//! - Q6_K (210 bytes): `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`;
//!   sixteen sub-blocks of 16, value = d * sc * (q - 32).
//! - Q8_K (292 bytes, activations only): `d: f32, qs: [i8; 256], bsums: [i16; 16]`
//!   (sums of each 16 quants, used for the min terms).

use super::{f16_at, f32_at, nearest_int};

pub const Q4_K_BYTES: usize = 144;
pub const Q5_K_BYTES: usize = 176;
pub const Q6_K_BYTES: usize = 210;
pub const Q8_K_BYTES: usize = 292;
/// Offsets inside a Q8_K block.
pub const Q8_K_QS: usize = 4;
pub const Q8_K_BSUMS: usize = 260;

/// ggml's `get_scale_min_k4`: scale and min (6 bits each) of sub-block `j` (0..8).
/// Sub-blocks 0..4 keep theirs in the low 6 bits of bytes j and j+4; 4..8 split theirs
/// into a nibble of bytes j+4 and the top 2 bits of bytes j-4 (scale) and j (min).
#[inline(always)]
pub fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// All eight (scales, mins) of a Q4_K/Q5_K super-block.
#[inline(always)]
pub fn scales_mins(q: &[u8]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut m) = ([0u8; 8], [0u8; 8]);
    for j in 0..8 {
        (sc[j], m[j]) = scale_min_k4(j, q);
    }
    (sc, m)
}

pub fn dequantize_q4_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(Q4_K_BYTES).zip(dst.chunks_exact_mut(256)) {
        let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
        let (sc, m) = scales_mins(&b[4..16]);
        for j in 0..4 {
            let q = &b[16 + 32 * j..][..32];
            let (d1, m1) = (d * sc[2 * j] as f32, dmin * m[2 * j] as f32);
            let (d2, m2) = (d * sc[2 * j + 1] as f32, dmin * m[2 * j + 1] as f32);
            for l in 0..32 {
                y[64 * j + l] = d1 * (q[l] & 0x0f) as f32 - m1;
                y[64 * j + 32 + l] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

pub fn dequantize_q5_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(Q5_K_BYTES).zip(dst.chunks_exact_mut(256)) {
        let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
        let (sc, m) = scales_mins(&b[4..16]);
        let qh = &b[16..48];
        for j in 0..4 {
            let q = &b[48 + 32 * j..][..32];
            let (d1, m1) = (d * sc[2 * j] as f32, dmin * m[2 * j] as f32);
            let (d2, m2) = (d * sc[2 * j + 1] as f32, dmin * m[2 * j + 1] as f32);
            for l in 0..32 {
                let h1 = ((qh[l] >> (2 * j)) & 1) << 4;
                let h2 = ((qh[l] >> (2 * j + 1)) & 1) << 4;
                y[64 * j + l] = d1 * ((q[l] & 0x0f) + h1) as f32 - m1;
                y[64 * j + 32 + l] = d2 * ((q[l] >> 4) + h2) as f32 - m2;
            }
        }
    }
}

/// The 256 signed 6-bit values (q - 32) of a Q6_K block, in element order.
#[inline(always)]
pub fn q6_k_values(b: &[u8]) -> [i8; 256] {
    let mut a = [0i8; 256];
    for half in 0..2 {
        let ql = &b[64 * half..][..64];
        let qh = &b[128 + 32 * half..][..32];
        let a = &mut a[128 * half..][..128];
        for l in 0..32 {
            a[l] = ((ql[l] & 0x0f) | (qh[l] & 3) << 4) as i8 - 32;
            a[l + 32] = ((ql[l + 32] & 0x0f) | ((qh[l] >> 2) & 3) << 4) as i8 - 32;
            a[l + 64] = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) as i8 - 32;
            a[l + 96] = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) as i8 - 32;
        }
    }
    a
}

pub fn dequantize_q6_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(Q6_K_BYTES).zip(dst.chunks_exact_mut(256)) {
        let d = f16_at(b, 208);
        let a = q6_k_values(b);
        for (i, o) in y.iter_mut().enumerate() {
            let sc = b[192 + i / 16] as i8;
            *o = d * sc as f32 * a[i] as f32;
        }
    }
}

/// quantize_row_q8_K_ref: the element of largest magnitude (first one on ties) maps to
/// -127 exactly; `iscale = -127 / max`, q = nearest_int(iscale * x) capped at 127,
/// `d = 1 / iscale`.
pub fn quantize_q8_k(x: &[f32], dst: &mut [u8]) {
    for (xb, b) in x.chunks_exact(256).zip(dst.chunks_exact_mut(Q8_K_BYTES)) {
        let (mut max, mut amax) = (0.0f32, 0.0f32);
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            // ggml leaves bsums untouched here; zero them so buffers are deterministic.
            b.fill(0);
            continue;
        }
        let iscale = -127.0f32 / max;
        for (o, v) in b[Q8_K_QS..Q8_K_BSUMS].iter_mut().zip(xb) {
            *o = nearest_int(iscale * v).min(127) as i8 as u8;
        }
        for j in 0..16 {
            let s: i32 = b[Q8_K_QS + 16 * j..][..16]
                .iter()
                .map(|&q| q as i8 as i32)
                .sum();
            b[Q8_K_BSUMS + 2 * j..][..2].copy_from_slice(&(s as i16).to_le_bytes());
        }
        b[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}

#[inline(always)]
fn bsum(y: &[u8], j: usize) -> i32 {
    i16::from_le_bytes([y[Q8_K_BSUMS + 2 * j], y[Q8_K_BSUMS + 2 * j + 1]]) as i32
}

/// The shared tail of ggml's Q4_K/Q5_K dots: eight per-lane integer sums of
/// scale * q * q8, and the float accumulation in ggml's order.
#[inline(always)]
fn k_dot_lanes(
    a: &[i8; 256],
    q8: &[u8],
    scale_of: impl Fn(usize) -> i32,
    group: usize,
) -> [i32; 8] {
    let mut aux32 = [0i32; 8];
    for (g, (ag, yg)) in a.chunks_exact(8).zip(q8.chunks_exact(8)).enumerate() {
        let scale = scale_of(g / group);
        for l in 0..8 {
            aux32[l] += scale * (yg[l] as i8 as i32 * ag[l] as i32);
        }
    }
    aux32
}

/// Q5_K (or, `five_bit == false`, Q4_K in ggml's non-repacked order) weights · Q8_K
/// (ggml_vec_dot_q5_K_q8_K / q4_K).
fn dot_q45_k(n: usize, w: &[u8], act: &[u8], five_bit: bool) -> f32 {
    let bytes = if five_bit { Q5_K_BYTES } else { Q4_K_BYTES };
    let mut sums = [0.0f32; 8];
    let mut sumf = 0.0f32;
    for i in 0..n / 256 {
        let x = &w[i * bytes..][..bytes];
        let y = &act[i * Q8_K_BYTES..][..Q8_K_BYTES];
        let (qs_off, qh) = if five_bit {
            (48, Some(&x[16..48]))
        } else {
            (16, None)
        };
        let mut a = [0i8; 256];
        for j in 0..4 {
            let q = &x[qs_off + 32 * j..][..32];
            for l in 0..32 {
                let (mut lo, mut hi) = (q[l] & 0x0f, q[l] >> 4);
                if let Some(qh) = qh {
                    lo += ((qh[l] >> (2 * j)) & 1) << 4;
                    hi += ((qh[l] >> (2 * j + 1)) & 1) << 4;
                }
                a[64 * j + l] = lo as i8;
                a[64 * j + 32 + l] = hi as i8;
            }
        }
        let (sc, m) = scales_mins(&x[4..16]);
        let sumi: i32 = (0..16).map(|j| bsum(y, j) * m[j / 2] as i32).sum();
        let aux32 = k_dot_lanes(&a, &y[Q8_K_QS..Q8_K_BSUMS], |s| sc[s] as i32, 4);
        let yd = f32_at(y, 0);
        let d = f16_at(x, 0) * yd;
        for l in 0..8 {
            sums[l] += d * aux32[l] as f32;
        }
        let dmin = f16_at(x, 2) * yd;
        sumf -= dmin * sumi as f32;
    }
    for s in sums {
        sumf += s;
    }
    sumf
}

/// Q4_K weights · Q8_K, summed as llama.cpp does on AVX2 CPUs, where it repacks every
/// Q4_K matrix to `q4_K_8x8`: the integer sums `Σ sc·q·q8` and `Σ m·bsum` are exact and
/// each is folded into its own f32 accumulator with an FMA by `d·d8` (resp. `dmin·d8`);
/// the result is their difference. A single token (`ggml_gemv_q4_K_8x8_q8_K`) folds
/// once per 256-value super-block; this is that order. (ggml's plain
/// `vec_dot_q4_K_q8_K`, used without AVX2, splits the sums over 8 lanes instead.)
pub fn dot_q4_k_q8_k(n: usize, w: &[u8], act: &[u8]) -> f32 {
    q4_k_repacked(n, w, act, false)
}

/// [`dot_q4_k_q8_k`] in the order of ggml's 4-token `ggml_gemm_q4_K_8x8_q8_K`, which
/// folds once per 64 values (pair of sub-blocks). llama.cpp uses it for the first
/// `n - n % 4` tokens of a batch and the gemv order for the rest.
pub fn dot_q4_k_q8_k_gemm(n: usize, w: &[u8], act: &[u8]) -> f32 {
    q4_k_repacked(n, w, act, true)
}

/// GEMM tile (1 row × 4 tokens) in [`dot_q4_k_q8_k_gemm`]'s order.
pub fn gemm_q4_k_q8_k(cols: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    let ar = cols / 256 * Q8_K_BYTES;
    for (o, at) in out[..4].iter_mut().zip(a.chunks_exact(ar)) {
        *o = dot_q4_k_q8_k_gemm(cols, w, at);
    }
}

fn q4_k_repacked(n: usize, w: &[u8], act: &[u8], per_pair: bool) -> f32 {
    let (mut acc, mut acc_min) = (0.0f32, 0.0f32);
    for i in 0..n / 256 {
        let x = &w[i * Q4_K_BYTES..][..Q4_K_BYTES];
        let y = &act[i * Q8_K_BYTES..][..Q8_K_BYTES];
        let q8 = &y[Q8_K_QS..Q8_K_BSUMS];
        let (sc, m) = scales_mins(&x[4..16]);
        let yd = f32_at(y, 0);
        let (d, dmin) = (f16_at(x, 0) * yd, f16_at(x, 2) * yd);
        let (mut isum, mut imin) = (0i32, 0i32);
        for j in 0..4 {
            let q = &x[16 + 32 * j..][..32];
            let (mut lo, mut hi) = (0i32, 0i32);
            for l in 0..32 {
                lo += (q[l] & 0x0f) as i32 * q8[64 * j + l] as i8 as i32;
                hi += (q[l] >> 4) as i32 * q8[64 * j + 32 + l] as i8 as i32;
            }
            isum += sc[2 * j] as i32 * lo + sc[2 * j + 1] as i32 * hi;
            imin += m[2 * j] as i32 * (bsum(y, 4 * j) + bsum(y, 4 * j + 1))
                + m[2 * j + 1] as i32 * (bsum(y, 4 * j + 2) + bsum(y, 4 * j + 3));
            if per_pair {
                acc = (isum as f32).mul_add(d, acc);
                acc_min = (imin as f32).mul_add(dmin, acc_min);
                (isum, imin) = (0, 0);
            }
        }
        if !per_pair {
            acc = (isum as f32).mul_add(d, acc);
            acc_min = (imin as f32).mul_add(dmin, acc_min);
        }
    }
    acc - acc_min
}

pub fn dot_q5_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    dot_q45_k(n, w, a, true)
}

/// Q6_K weights · Q8_K in the order of ggml's AVX2 `ggml_vec_dot_q6_K_q8_K`, which
/// llama.cpp (x86, llama-cpp-python 0.3.36) uses for Q6_K matrices — they are not
/// repacked — when a batch has fewer than 8 tokens (single-token decode included).
/// Eight i32 lanes per super-block: lane `i` holds `Σ sc·q·q8` (q unsigned, 0..63)
/// over values `32c + 4i .. 32c + 4i + 4` of each 32-value chunk `c`, minus
/// `32·(sc[2i]·bsum[2i] + sc[2i+1]·bsum[2i+1])` (the `q - 32` offset, taken from the
/// Q8_K block sums); each lane is folded into its own f32 accumulator with an FMA by
/// `d·d8`, and the lanes are reduced as `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`.
pub fn dot_q6_k_q8_k(n: usize, w: &[u8], act: &[u8]) -> f32 {
    let mut acc = [0.0f32; 8];
    for i in 0..n / 256 {
        let x = &w[i * Q6_K_BYTES..][..Q6_K_BYTES];
        let y = &act[i * Q8_K_BYTES..][..Q8_K_BYTES];
        let a = q6_k_values(x);
        let q8 = &y[Q8_K_QS..Q8_K_BSUMS];
        let sc = |j: usize| x[192 + j] as i8 as i32;
        let mut lanes = [0i32; 8];
        for (e, (&q, &v)) in a.iter().zip(q8).enumerate() {
            lanes[(e % 32) / 4] += sc(e / 16) * (q as i32 + 32) * v as i8 as i32;
        }
        let d = f16_at(x, 208) * f32_at(y, 0);
        for (l, (s, o)) in lanes.iter().zip(acc.iter_mut()).enumerate() {
            let offset = 32 * (sc(2 * l) * bsum(y, 2 * l) + sc(2 * l + 1) * bsum(y, 2 * l + 1));
            *o = d.mul_add((s - offset) as f32, *o);
        }
    }
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
}

/// [`dot_q6_k_q8_k`] in the order llama.cpp (same build) uses for batches of 8 or more
/// tokens, every token of the batch: one FMA per super-block,
/// `acc = fma(f32(Σ sc·(q-32)·q8) · d, d8, acc)` (measured against its eval-callback
/// dumps for batches of 1–9, 12, 15–17 and 20 tokens: bit-identical on both sides of
/// the threshold).
pub fn dot_q6_k_q8_k_batch(n: usize, w: &[u8], act: &[u8]) -> f32 {
    let mut acc = 0.0f32;
    for i in 0..n / 256 {
        let x = &w[i * Q6_K_BYTES..][..Q6_K_BYTES];
        let y = &act[i * Q8_K_BYTES..][..Q8_K_BYTES];
        let a = q6_k_values(x);
        let q8 = &y[Q8_K_QS..Q8_K_BSUMS];
        let isum: i32 = a
            .iter()
            .zip(q8)
            .enumerate()
            .map(|(e, (&q, &v))| x[192 + e / 16] as i8 as i32 * q as i32 * v as i8 as i32)
            .sum();
        acc = (isum as f32 * f16_at(x, 208)).mul_add(f32_at(y, 0), acc);
    }
    acc
}

/// GEMM "tile" (1 row × 1 token) in the [`dot_q6_k_q8_k_batch`] order; matmul uses it
/// for every token of batches of at least [`Q6_K_BATCH_TOKENS`] tokens.
pub fn gemm_q6_k_q8_k(cols: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    out[0] = dot_q6_k_q8_k_batch(cols, w, a);
}

/// The batch size from which llama.cpp switches Q6_K to [`dot_q6_k_q8_k_batch`].
pub const Q6_K_BATCH_TOKENS: usize = 8;
