//! Dot products and matmul: scalar vs dequantize-then-dot, every SIMD set vs scalar,
//! multi-threaded vs single-threaded.

mod common;

use common::{Rng, WEIGHT_TYPES, dequantize_act, exact_dot, random_rows};
use thaw_kernels::{
    GgmlType, KernelSet, QMatrix, ThreadPool, available_kernel_sets, kernel_set, matmul_with,
};

fn scalar() -> &'static KernelSet {
    kernel_set("scalar").unwrap()
}

fn cols_for(ty: GgmlType, blocks: usize) -> usize {
    let bs = match ty {
        GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K => 256,
        _ => 32,
    };
    bs * blocks
}

#[test]
fn scalar_dot_matches_dequantized_dot() {
    let mut rng = Rng(1);
    for ty in WEIGHT_TYPES {
        let k = scalar().for_type(ty).unwrap();
        for blocks in [1, 3, 8] {
            let n = cols_for(ty, blocks);
            let w = random_rows(&mut rng, ty, 1, n);
            let x = rng.vec(n, 2.0);
            let mut act = vec![0u8; k.act_type.row_bytes(n).unwrap()];
            (k.quantize)(&x, &mut act);
            let mut wd = vec![0.0; n];
            thaw_kernels::dequantize_row(ty, &w, &mut wd);
            let ad = dequantize_act(k.act_type, &act, n);
            let (want, mag) = exact_dot(&wd, &ad);
            let got = (k.dot)(n, &w, &act) as f64;
            // Q4_1/Q5_1 use the activation block's f16 `s = d * Σq` for the min term
            // (ggml's shortcut), which differs from Σ(f16(d) * q) by f16 rounding.
            let rel = if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
                2e-3
            } else {
                1e-5
            };
            assert!(
                (got - want).abs() <= rel * mag + 1e-6,
                "{ty} x{blocks}: got {got}, want {want} (Σ|t| {mag})"
            );
        }
    }
}

#[test]
fn activations_quantize_close_to_input() {
    let mut rng = Rng(2);
    for ty in WEIGHT_TYPES {
        let k = scalar().for_type(ty).unwrap();
        let n = 512;
        let x = rng.vec(n, 3.0);
        let mut act = vec![0u8; k.act_type.row_bytes(n).unwrap()];
        (k.quantize)(&x, &mut act);
        let back = dequantize_act(k.act_type, &act, n);
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (a, b) in x.iter().zip(&back) {
            // Q8 formats: half a step of amax/127 (plus f16 rounding of d); F16/BF16: relative.
            let tol = match k.act_type {
                GgmlType::F32 => 0.0,
                GgmlType::F16 => a.abs() * 1e-3,
                GgmlType::BF16 => a.abs() * 8e-3,
                _ => amax / 127.0 * 0.52 + amax * 1e-3,
            };
            assert!((a - b).abs() <= tol, "{ty}/{:?}: {a} -> {b}", k.act_type);
        }
    }
}

#[test]
fn every_kernel_set_matches_scalar() {
    let sets = available_kernel_sets();
    eprintln!(
        "kernel sets here: {:?}",
        sets.iter().map(|s| s.name()).collect::<Vec<_>>()
    );
    let mut rng = Rng(3);
    for ty in WEIGHT_TYPES {
        let s = scalar().for_type(ty).unwrap();
        for blocks in [1, 2, 3, 5, 8] {
            // Also a non-multiple of 32 for the float types' tail loops.
            let n = if matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
                cols_for(ty, blocks) + blocks * 3
            } else {
                cols_for(ty, blocks)
            };
            let w = random_rows(&mut rng, ty, 1, n);
            let x = rng.vec(n, 1.5);
            let mut act = vec![0u8; s.act_type.row_bytes(n).unwrap()];
            (s.quantize)(&x, &mut act);
            let mut wd = vec![0.0; n];
            thaw_kernels::dequantize_row(ty, &w, &mut wd);
            let (_, mag) = exact_dot(&wd, &dequantize_act(s.act_type, &act, n));
            let want = (s.dot)(n, &w, &act);
            for set in &sets {
                let k = set.for_type(ty).unwrap();
                assert_eq!(k.act_type, s.act_type);
                let mut act2 = vec![0u8; act.len()];
                (k.quantize)(&x, &mut act2);
                assert_eq!(act, act2, "{} {ty}: activation bytes differ", set.name());
                let got = (k.dot)(n, &w, &act);
                // Integer parts are exact; only the f32 summation order differs (see
                // the tolerance note in src/x86_64/mod.rs).
                assert!(
                    ((got - want) as f64).abs() <= 1e-5 * mag + 1e-6,
                    "{} {ty} n={n}: {got} vs scalar {want} (Σ|t| {mag})",
                    set.name()
                );
            }
        }
    }
}

/// Per-row scalar reference for matmul.
fn reference_matmul(w: &QMatrix<'_>, x: &[f32], n: usize) -> Vec<f32> {
    let k = scalar().for_type(w.ty).unwrap();
    let mut out = vec![0.0; n * w.rows];
    let mut act = vec![0u8; k.act_type.row_bytes(w.cols).unwrap()];
    for t in 0..n {
        (k.quantize)(&x[t * w.cols..][..w.cols], &mut act);
        for r in 0..w.rows {
            out[t * w.rows + r] = (k.dot)(w.cols, w.row(r), &act);
        }
    }
    out
}

#[test]
fn matmul_odd_shapes_all_sets_and_thread_counts() {
    let mut rng = Rng(4);
    let pools = [ThreadPool::new(1), ThreadPool::new(2), ThreadPool::new(3)];
    for ty in WEIGHT_TYPES {
        for &(rows, blocks) in &[(1usize, 1usize), (7, 1), (37, 2), (130, 3)] {
            let cols = cols_for(ty, blocks);
            let data = random_rows(&mut rng, ty, rows, cols);
            let w = QMatrix {
                ty,
                rows,
                cols,
                data: &data,
            };
            for n in [1usize, 3, 17] {
                let x = rng.vec(n * cols, 1.0);
                let want = reference_matmul(&w, &x, n);
                let mag: f32 = want.iter().map(|v| v.abs()).sum::<f32>() / want.len() as f32;
                for set in available_kernel_sets() {
                    let mut single = vec![f32::NAN; n * rows];
                    matmul_with(set, &pools[0], &w, &x, n, &mut single).unwrap();
                    for pool in &pools[1..] {
                        let mut multi = vec![f32::NAN; n * rows];
                        matmul_with(set, pool, &w, &x, n, &mut multi).unwrap();
                        // Same kernel for each element regardless of the split: bit-equal.
                        assert_eq!(
                            single.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                            multi.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                            "{} {ty} {rows}x{cols} n={n} threads={}",
                            set.name(),
                            pool.n_threads()
                        );
                    }
                    for (i, (a, b)) in single.iter().zip(&want).enumerate() {
                        assert!(
                            (a - b).abs() <= 1e-4 * mag.max(1.0),
                            "{} {ty} {rows}x{cols} n={n} [{i}]: {a} vs {b}",
                            set.name()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn matmul_rejects_bad_shapes() {
    let pool = ThreadPool::new(2);
    let data = vec![0u8; 2 * 20];
    let w = QMatrix {
        ty: GgmlType::Q4_1,
        rows: 2,
        cols: 32,
        data: &data,
    };
    let x = vec![0.0; 32];
    let mut out = vec![0.0; 2];
    assert!(thaw_kernels::try_matmul(&pool, &w, &x, 1, &mut out).is_ok());
    assert!(thaw_kernels::try_matmul(&pool, &w, &x, 2, &mut out).is_err());
    let mut short = vec![0.0; 1];
    assert!(thaw_kernels::try_matmul(&pool, &w, &x, 1, &mut short).is_err());
    let bad = QMatrix { cols: 33, ..w };
    assert!(thaw_kernels::try_matmul(&pool, &bad, &x, 1, &mut out).is_err());
    let short_data = QMatrix {
        data: &data[..39],
        ..w
    };
    assert!(thaw_kernels::try_matmul(&pool, &short_data, &x, 1, &mut out).is_err());
    let q2k = QMatrix {
        ty: GgmlType::Q2K,
        rows: 1,
        cols: 256,
        data: &[0u8; 84],
    };
    assert!(matches!(
        thaw_kernels::try_matmul(&pool, &q2k, &vec![0.0; 256], 1, &mut out[..1]),
        Err(thaw_kernels::KernelError::Unsupported(GgmlType::Q2K))
    ));
}

#[test]
fn kernel_selection_is_consistent() {
    let name = thaw_kernels::kernel_set_name();
    assert!(available_kernel_sets().iter().any(|s| s.name() == name));
    match std::env::var("THAW_KERNELS") {
        Ok(v) if kernel_set(&v).is_some() => assert_eq!(thaw_kernels::select_kernels().unwrap(), v),
        Ok(v) if !v.is_empty() => assert!(thaw_kernels::select_kernels().is_err()),
        _ => assert_eq!(name, available_kernel_sets().last().unwrap().name()),
    }
}

/// Q6_K follows llama.cpp's two x86 orders exactly in every set (its AVX2 vec_dot lanes
/// for batches under 8 tokens, one FMA per super-block from 8 on), and matmul switches
/// between them at that batch size.
#[test]
fn q6_k_orders_bit_identical_and_switch_at_8_tokens() {
    let mut rng = Rng(21);
    let (rows, cols) = (3, 256 * 3);
    let data = random_rows(&mut rng, GgmlType::Q6K, rows, cols);
    let w = QMatrix {
        ty: GgmlType::Q6K,
        rows,
        cols,
        data: &data,
    };
    let s = scalar().for_type(GgmlType::Q6K).unwrap();
    let gemm = s.gemm.expect("Q6_K has a batch tile").f;
    let ar = s.act_type.row_bytes(cols).unwrap();
    let pool = ThreadPool::new(2);
    // 8..: whole 4-token tiles and tails; 70 crosses the matmul's 64-token block.
    for n in [1usize, 7, 8, 9, 14, 70] {
        let x = rng.vec(n * cols, 1.5);
        let mut act = vec![0u8; ar * n];
        for (xr, a) in x.chunks_exact(cols).zip(act.chunks_exact_mut(ar)) {
            (s.quantize)(xr, a);
        }
        let mut want = vec![0.0f32; n * rows];
        for t in 0..n {
            for r in 0..rows {
                let (wr, a) = (w.row(r), &act[t * ar..][..ar]);
                want[t * rows + r] = if n >= 8 {
                    let mut o = [0.0f32];
                    gemm(cols, wr, a, &mut o);
                    o[0]
                } else {
                    (s.dot)(cols, wr, a)
                };
            }
        }
        for set in available_kernel_sets() {
            let k = set.for_type(GgmlType::Q6K).unwrap();
            let mut got = vec![f32::NAN; n * rows];
            matmul_with(set, &pool, &w, &x, n, &mut got).unwrap();
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{} n={n}",
                set.name()
            );
            let a = &act[..ar];
            assert_eq!(
                (k.dot)(cols, w.row(0), a).to_bits(),
                (s.dot)(cols, w.row(0), a).to_bits()
            );
        }
    }
}

/// Every set's Q8_K quantizer (AVX-512 has its own) writes the reference's bytes: random
/// rows at several scales, largest magnitudes tied with opposite signs, values on
/// rounding ties, zero blocks, and blocks with inf / NaN.
#[test]
fn q8_k_quantizers_are_byte_identical() {
    use thaw_kernels::reference::kquants::{Q8_K_BYTES, quantize_q8_k};
    let mut rng = Rng(31);
    let mut rows: Vec<Vec<f32>> = (0..40)
        .map(|i| rng.vec(512, [1e-3, 1.0, 37.0, 1e4][i % 4]))
        .collect();
    // Ties: -a first then +a (the first one decides the sign), and the reverse.
    let mut tie = rng.vec(256, 1.0);
    (tie[7], tie[200]) = (-3.0, 3.0);
    rows.push(tie.clone());
    (tie[7], tie[200]) = (3.0, -3.0);
    rows.push(tie);
    // Values landing on .5 after scaling (max 127 → scale exactly -1).
    let mut halves: Vec<f32> = (0..256).map(|i| (i as f32 - 128.0) + 0.5).collect();
    halves[0] = -127.0;
    halves[255] = 126.5;
    rows.push(halves);
    rows.push(vec![0.0; 256]);
    let mut z = vec![0.0f32; 256];
    z[3] = -0.0;
    rows.push(z);
    for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
        let mut r = rng.vec(256, 1.0);
        r[17] = bad;
        rows.push(r);
    }
    for set in available_kernel_sets() {
        let k = set.for_type(GgmlType::Q4K).unwrap();
        for (i, x) in rows.iter().enumerate() {
            let nb = x.len() / 256;
            let (mut want, mut got) = (vec![0u8; nb * Q8_K_BYTES], vec![1u8; nb * Q8_K_BYTES]);
            quantize_q8_k(x, &mut want);
            (k.quantize)(x, &mut got);
            assert_eq!(got, want, "{} row {i}", set.name());
        }
    }
}
