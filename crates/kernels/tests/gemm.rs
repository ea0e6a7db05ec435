//! Prefill paths: GEMM tile kernels vs the scalar per-row dots on odd shapes, and
//! `matmul_many` vs one `matmul` per matrix (bit-identical).

mod common;

use common::{Rng, WEIGHT_TYPES, dequantize_act, exact_dot, random_rows};
use thaw_kernels::{
    GgmlType, KernelSet, QMatrix, ThreadPool, available_kernel_sets, kernel_set, matmul_many_with,
    matmul_with,
};

fn scalar() -> &'static KernelSet {
    kernel_set("scalar").unwrap()
}

fn cols_for(ty: GgmlType, blocks: usize) -> usize {
    match ty {
        GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K => 256 * blocks,
        _ => 32 * blocks,
    }
}

/// Scalar per-row results and Σ|terms| per element (for the summation-order tolerance).
fn reference(w: &QMatrix<'_>, x: &[f32], n: usize) -> (Vec<f32>, Vec<f64>) {
    let k = scalar().for_type(w.ty).unwrap();
    let ar = k.act_type.row_bytes(w.cols).unwrap();
    let mut act = vec![0u8; ar];
    let (mut out, mut mag) = (vec![0.0; n * w.rows], vec![0.0; n * w.rows]);
    let mut wd = vec![0.0; w.cols];
    for t in 0..n {
        (k.quantize)(&x[t * w.cols..][..w.cols], &mut act);
        let ad = dequantize_act(k.act_type, &act, w.cols);
        for r in 0..w.rows {
            out[t * w.rows + r] = (k.dot)(w.cols, w.row(r), &act);
            thaw_kernels::dequantize_row(w.ty, w.row(r), &mut wd);
            mag[t * w.rows + r] = exact_dot(&wd, &ad).1;
        }
    }
    (out, mag)
}

#[test]
fn gemm_tiles_match_scalar_dots() {
    let mut rng = Rng(11);
    let mut tested = 0;
    for set in available_kernel_sets() {
        for ty in WEIGHT_TYPES {
            let k = set.for_type(ty).unwrap();
            if let Some(v) = k.gemv {
                assert_eq!(v.tokens, 1, "gemv is a one-token tile");
            }
            for g in [k.gemm, k.gemv].into_iter().flatten() {
                // The matmul driver aligns chunks to 8 rows so that tiles start at
                // the same rows whatever the thread count.
                assert!(
                    8 % g.rows == 0,
                    "{} {ty}: tile of {} rows",
                    set.name(),
                    g.rows
                );
            }
            for g in [k.gemm, k.gemv].into_iter().flatten() {
                assert!(g.rows * g.tokens <= 64 && g.rows > 0 && g.tokens > 0);
                tested += 1;
                for blocks in [1, 2, 7] {
                    let cols = cols_for(ty, blocks);
                    let w = random_rows(&mut rng, ty, g.rows, cols);
                    let x = rng.vec(g.tokens * cols, 1.5);
                    let ar = k.act_type.row_bytes(cols).unwrap();
                    let mut act = vec![0u8; ar * g.tokens];
                    for (xr, a) in x.chunks_exact(cols).zip(act.chunks_exact_mut(ar)) {
                        (k.quantize)(xr, a);
                    }
                    let mut out = vec![f32::NAN; g.rows * g.tokens];
                    (g.f)(cols, &w, &act, &mut out);
                    let rb = ty.row_bytes(cols).unwrap();
                    for i in 0..g.rows {
                        for j in 0..g.tokens {
                            let (wr, a) = (&w[i * rb..][..rb], &act[j * ar..][..ar]);
                            let want = (scalar().for_type(ty).unwrap().dot)(cols, wr, a);
                            let mut wd = vec![0.0; cols];
                            thaw_kernels::dequantize_row(ty, wr, &mut wd);
                            let mag = exact_dot(&wd, &dequantize_act(k.act_type, a, cols)).1;
                            let got = out[i * g.tokens + j];
                            assert!(
                                ((got - want) as f64).abs() <= 1e-5 * mag + 1e-6,
                                "{} {ty} cols={cols} [{i},{j}]: {got} vs scalar {want}",
                                set.name()
                            );
                        }
                    }
                }
            }
        }
    }
    // Every SIMD set has gemm tiles for Q4_1, Q5_0, Q8_0 and gemv for Q4_1, Q5_0.
    assert!(
        tested >= 5 * (available_kernel_sets().len() - 1),
        "only {tested} tile kernels"
    );
}

/// Decode tiles reproduce an exact summation order, not just a close value: Q8_0's and
/// Q5_0's are the per-row dot's (ggml's `vec_dot_q8_0_q8_0` / `_q5_0_q8_0`), Q4_1's
/// the same in every SIMD set (ggml's `vec_dot_q4_1_q8_1`: one accumulator, the min
/// term summed apart).
#[test]
fn gemv_tiles_are_bit_exact() {
    let mut rng = Rng(21);
    let sets: Vec<_> = available_kernel_sets()
        .into_iter()
        .filter(|s| s.name() != "scalar")
        .collect();
    for blocks in [1usize, 2, 3, 18, 20] {
        let cols = 32 * blocks;
        let x = rng.vec(cols, 2.0);
        for (set, ty) in sets
            .iter()
            .flat_map(|s| [(s, GgmlType::Q8_0), (s, GgmlType::Q5_0)])
        {
            let w = random_rows(&mut rng, ty, 8, cols);
            let k = set.for_type(ty).unwrap();
            let Some(v) = k.gemv else { continue };
            let mut act = vec![0u8; k.act_type.row_bytes(cols).unwrap()];
            (k.quantize)(&x, &mut act);
            let mut out = vec![f32::NAN; v.rows];
            (v.f)(cols, &w, &act, &mut out);
            let rb = ty.row_bytes(cols).unwrap();
            for (i, got) in out.iter().enumerate() {
                let want = (k.dot)(cols, &w[i * rb..][..rb], &act);
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{} {ty} cols={cols} row {i}",
                    set.name()
                );
            }
        }
        // Q4_1: every set's gemv tile gives the same bits on 8 rows.
        let w = random_rows(&mut rng, GgmlType::Q4_1, 8, cols);
        let rb = GgmlType::Q4_1.row_bytes(cols).unwrap();
        let mut first: Option<Vec<u32>> = None;
        for set in &sets {
            let k = set.for_type(GgmlType::Q4_1).unwrap();
            let v = k.gemv.expect("SIMD sets have a Q4_1 gemv tile");
            let mut act = vec![0u8; k.act_type.row_bytes(cols).unwrap()];
            (k.quantize)(&x, &mut act);
            let mut bits = Vec::new();
            for r in (0..8).step_by(v.rows) {
                let mut out = vec![f32::NAN; v.rows];
                (v.f)(cols, &w[r * rb..][..v.rows * rb], &act, &mut out);
                bits.extend(out.iter().map(|f| f.to_bits()));
            }
            match &first {
                Some(f) => assert_eq!(f, &bits, "{} Q4_1 cols={cols}", set.name()),
                None => first = Some(bits),
            }
        }
    }
}

/// Prefill tiles of every SIMD set sum each (row, token) in the same order, so their
/// results are bit-identical whatever the tile shape (8 rows × 4 tokens here); Q4_K's
/// equal the scalar reference of llama.cpp's repacked 4-token order.
#[test]
fn gemm_tiles_agree_bit_for_bit_across_sets() {
    let mut rng = Rng(22);
    let (rows, n) = (8, 4);
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q5_0,
        GgmlType::Q4_1,
        GgmlType::Q4K,
    ] {
        // Q4_K's scalar tile is the reference of llama.cpp's repacked gemm order.
        let sets: Vec<_> = available_kernel_sets()
            .into_iter()
            .filter(|s| s.name() != "scalar" || ty == GgmlType::Q4K)
            .collect();
        for blocks in [1usize, 3, 20] {
            let cols = cols_for(ty, blocks);
            let w = random_rows(&mut rng, ty, rows, cols);
            let x = rng.vec(n * cols, 2.0);
            let rb = ty.row_bytes(cols).unwrap();
            let mut first: Option<Vec<u32>> = None;
            for set in &sets {
                let k = set.for_type(ty).unwrap();
                let g = k.gemm.expect("SIMD sets have gemm tiles for this type");
                let ar = k.act_type.row_bytes(cols).unwrap();
                let mut act = vec![0u8; ar * n];
                for (xr, a) in x.chunks_exact(cols).zip(act.chunks_exact_mut(ar)) {
                    (k.quantize)(xr, a);
                }
                let mut got = vec![0u32; rows * n];
                let mut tile = vec![f32::NAN; g.rows * g.tokens];
                for r in (0..rows).step_by(g.rows) {
                    for t in (0..n).step_by(g.tokens) {
                        (g.f)(
                            cols,
                            &w[r * rb..][..g.rows * rb],
                            &act[t * ar..][..g.tokens * ar],
                            &mut tile,
                        );
                        for i in 0..g.rows {
                            for j in 0..g.tokens {
                                got[(r + i) * n + t + j] = tile[i * g.tokens + j].to_bits();
                            }
                        }
                    }
                }
                match &first {
                    Some(f) => assert_eq!(f, &got, "{} {ty} cols={cols}", set.name()),
                    None => first = Some(got),
                }
            }
        }
    }
}

#[test]
fn matmul_prefill_odd_shapes_match_scalar() {
    let mut rng = Rng(12);
    let pools = [ThreadPool::new(1), ThreadPool::new(2)];
    for ty in [
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::Q5_0,
        GgmlType::Q4K,
        GgmlType::Q6K,
    ] {
        for &(rows, blocks) in &[(3usize, 1usize), (9, 2), (66, 3)] {
            let cols = cols_for(ty, blocks);
            let data = random_rows(&mut rng, ty, rows, cols);
            let w = QMatrix {
                ty,
                rows,
                cols,
                data: &data,
            };
            // Token counts around the tile widths and the 64-token block.
            for n in [1usize, 2, 5, 8, 67, 130] {
                let x = rng.vec(n * cols, 1.0);
                let (want, mag) = reference(&w, &x, n);
                for set in available_kernel_sets() {
                    let mut first: Option<Vec<u32>> = None;
                    for pool in &pools {
                        let mut out = vec![f32::NAN; n * rows];
                        matmul_with(set, pool, &w, &x, n, &mut out).unwrap();
                        for (i, (a, b)) in out.iter().zip(&want).enumerate() {
                            assert!(
                                ((a - b) as f64).abs() <= 1e-5 * mag[i] + 1e-6,
                                "{} {ty} {rows}x{cols} n={n} [{i}]: {a} vs {b}",
                                set.name()
                            );
                        }
                        let bits: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
                        match &first {
                            Some(f) => assert_eq!(f, &bits, "thread count changed results"),
                            None => first = Some(bits),
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn matmul_many_equals_separate_matmuls() {
    let mut rng = Rng(13);
    let cols = 512;
    // Q/K/V-like (different heights) and mixed types, incl. two activation formats.
    let specs = [
        (GgmlType::Q4_1, 70),
        (GgmlType::Q4_1, 9),
        (GgmlType::Q8_0, 33),
        (GgmlType::Q4K, 20),
        (GgmlType::Q6K, 5),
    ];
    let datas: Vec<Vec<u8>> = specs
        .iter()
        .map(|&(ty, rows)| random_rows(&mut rng, ty, rows, cols))
        .collect();
    let ws: Vec<QMatrix<'_>> = specs
        .iter()
        .zip(&datas)
        .map(|(&(ty, rows), d)| QMatrix {
            ty,
            rows,
            cols,
            data: d,
        })
        .collect();
    let wrefs: Vec<&QMatrix<'_>> = ws.iter().collect();
    for threads in [1, 2, 3] {
        let pool = ThreadPool::new(threads);
        for n in [1usize, 3, 9, 70] {
            let x = rng.vec(n * cols, 1.0);
            for set in available_kernel_sets() {
                let sep: Vec<Vec<f32>> = ws
                    .iter()
                    .map(|w| {
                        let mut o = vec![f32::NAN; n * w.rows];
                        matmul_with(set, &pool, w, &x, n, &mut o).unwrap();
                        o
                    })
                    .collect();
                let mut many: Vec<Vec<f32>> =
                    ws.iter().map(|w| vec![f32::NAN; n * w.rows]).collect();
                let mut outs: Vec<&mut [f32]> = many.iter_mut().map(|v| v.as_mut_slice()).collect();
                matmul_many_with(set, &pool, &wrefs, &x, n, &mut outs).unwrap();
                for (i, (a, b)) in sep.iter().zip(&many).enumerate() {
                    let (a, b): (Vec<u32>, Vec<u32>) = (
                        a.iter().map(|v| v.to_bits()).collect(),
                        b.iter().map(|v| v.to_bits()).collect(),
                    );
                    assert_eq!(a, b, "{} threads={threads} n={n} matrix {i}", set.name());
                }
            }
        }
    }
}

#[test]
fn matmul_many_rejects_bad_input() {
    let pool = ThreadPool::new(2);
    let d32 = vec![0u8; 2 * 20];
    let d64 = vec![0u8; 2 * 40];
    let a = QMatrix {
        ty: GgmlType::Q4_1,
        rows: 2,
        cols: 32,
        data: &d32,
    };
    let b = QMatrix {
        ty: GgmlType::Q4_1,
        rows: 2,
        cols: 64,
        data: &d64,
    };
    let x = vec![0.0; 32];
    let (mut o1, mut o2) = (vec![0.0; 2], vec![0.0; 2]);
    assert!(
        thaw_kernels::try_matmul_many(&pool, &[&a, &a], &x, 1, &mut [&mut o1, &mut o2]).is_ok()
    );
    // Output count mismatch.
    assert!(thaw_kernels::try_matmul_many(&pool, &[&a, &a], &x, 1, &mut [&mut o1]).is_err());
    // Different column counts (x fits neither both).
    assert!(
        thaw_kernels::try_matmul_many(&pool, &[&a, &b], &x, 1, &mut [&mut o1, &mut o2]).is_err()
    );
    // Wrong output length for one matrix.
    let mut short = vec![0.0; 1];
    assert!(
        thaw_kernels::try_matmul_many(&pool, &[&a, &a], &x, 1, &mut [&mut o1, &mut short]).is_err()
    );
    // Empty list is fine.
    assert!(thaw_kernels::try_matmul_many(&pool, &[], &x, 1, &mut []).is_ok());
}

#[test]
fn f32_vector_helpers() {
    let mut rng = Rng(14);
    for n in [0usize, 1, 7, 31, 32, 33, 100, 1000] {
        let (a, b) = (rng.vec(n, 2.0), rng.vec(n, 2.0));
        let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let mag: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (*x as f64 * *y as f64).abs())
            .sum();
        let got = thaw_kernels::dot_f32(&a, &b) as f64;
        assert!(
            (got - want).abs() <= 1e-5 * mag + 1e-6,
            "n={n}: {got} vs {want}"
        );
        let mut y = rng.vec(n, 1.0);
        let y0 = y.clone();
        thaw_kernels::axpy_f32(&mut y, 0.75, &a);
        for i in 0..n {
            let want = y0[i] as f64 + 0.75 * a[i] as f64;
            // One rounding (FMA) or two (mul then add): within 2 ulp of the result.
            assert!(
                (y[i] as f64 - want).abs() <= 2.5e-7 * (want.abs() + 1.0),
                "n={n} [{i}]"
            );
        }
    }
    // Lengths differ: the common prefix is used.
    assert_eq!(thaw_kernels::dot_f32(&[1.0, 2.0, 3.0], &[4.0, 5.0]), 14.0);
}

/// The packed K-quant prefill tiles (AVX-512) reproduce the scalar reference's order bit
/// for bit through the whole driver: Q4_K's 4-token gemm order for the first n − n % 4
/// tokens and the gemv order for the rest, Q6_K's batch order for every token. Odd row
/// counts leave partial 16-row groups, one thread and two cut the rows differently.
#[test]
fn packed_k_quant_prefill_is_bit_exact() {
    let mut rng = Rng(23);
    let pools = [ThreadPool::new(1), ThreadPool::new(2)];
    for ty in [GgmlType::Q4K, GgmlType::Q6K] {
        // 200 x 8 blocks: the driver packs a chunk in several pieces.
        for &(rows, blocks) in &[
            (1usize, 1usize),
            (8, 2),
            (17, 1),
            (40, 3),
            (66, 2),
            (200, 8),
        ] {
            let cols = cols_for(ty, blocks);
            let data = random_rows(&mut rng, ty, rows, cols);
            let w = QMatrix {
                ty,
                rows,
                cols,
                data: &data,
            };
            for n in [16usize, 17, 19, 35, 64, 67, 130] {
                let x = rng.vec(n * cols, 1.5);
                let mut want = vec![f32::NAN; n * rows];
                matmul_with(scalar(), &pools[0], &w, &x, n, &mut want).unwrap();
                for set in available_kernel_sets() {
                    for pool in &pools {
                        let mut out = vec![f32::NAN; n * rows];
                        matmul_with(set, pool, &w, &x, n, &mut out).unwrap();
                        for (i, (a, b)) in out.iter().zip(&want).enumerate() {
                            assert_eq!(
                                a.to_bits(),
                                b.to_bits(),
                                "{} {ty} {rows}x{cols} n={n} [{i}]: {a} vs scalar {b}",
                                set.name()
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Q5_0 and Q8_0 prefill (the packed 8 × 4 tiles on AVX-512 from 16 tokens, the
/// 8 × 4 tiles otherwise) give, for every element, the bits of the set's per-row dot
/// (ggml's `vec_dot_q5_0_q8_0` / `_q8_0_q8_0` order), with one thread or two and for
/// row counts that leave partial 8-row groups; `matmul_many` shares the quantized
/// activations and keeps one prepared copy per weight type.
#[test]
fn q5_0_q8_0_prefill_equals_the_dot_bit_for_bit() {
    let mut rng = Rng(24);
    let pools = [ThreadPool::new(1), ThreadPool::new(2)];
    let sets: Vec<_> = available_kernel_sets()
        .into_iter()
        .filter(|s| s.name() != "scalar")
        .collect();
    for (set, ty, ty2) in sets.iter().flat_map(|s| {
        [
            (s, GgmlType::Q5_0, GgmlType::Q5_0),
            (s, GgmlType::Q8_0, GgmlType::Q8_0),
            (s, GgmlType::Q5_0, GgmlType::Q8_0),
        ]
    }) {
        let k = set.for_type(ty).unwrap();
        // 600 x 20 blocks: the driver packs a chunk in several pieces.
        for &(rows, blocks) in &[
            (1usize, 1usize),
            (8, 2),
            (13, 20),
            (40, 3),
            (66, 7),
            (600, 20),
        ] {
            let cols = 32 * blocks;
            let (d1, d2) = (
                random_rows(&mut rng, ty, rows, cols),
                random_rows(&mut rng, ty2, rows + 8, cols),
            );
            let w1 = QMatrix {
                ty,
                rows,
                cols,
                data: &d1,
            };
            let w2 = QMatrix {
                ty: ty2,
                rows: rows + 8,
                cols,
                data: &d2,
            };
            for n in [4usize, 15, 16, 17, 35, 64, 67, 130] {
                let x = rng.vec(n * cols, 1.5);
                let ar = k.act_type.row_bytes(cols).unwrap();
                let mut act = vec![0u8; ar * n];
                for (xr, a) in x.chunks_exact(cols).zip(act.chunks_exact_mut(ar)) {
                    (k.quantize)(xr, a);
                }
                for pool in &pools {
                    let mut o1 = vec![f32::NAN; n * rows];
                    let mut o2 = vec![f32::NAN; n * (rows + 8)];
                    matmul_many_with(set, pool, &[&w1, &w2], &x, n, &mut [&mut o1, &mut o2])
                        .unwrap();
                    for (w, out) in [(&w1, &o1), (&w2, &o2)] {
                        let k = set.for_type(w.ty).unwrap();
                        for t in 0..n {
                            for r in 0..w.rows {
                                let want = (k.dot)(cols, w.row(r), &act[t * ar..][..ar]);
                                let got = out[t * w.rows + r];
                                assert_eq!(
                                    got.to_bits(),
                                    want.to_bits(),
                                    "{} {} {}x{cols} n={n} [{t},{r}]: {got} vs dot {want}",
                                    set.name(),
                                    w.ty,
                                    w.rows
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
