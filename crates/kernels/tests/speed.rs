//! Timings, not assertions: `cargo test --release -p thaw-kernels --test speed -- --ignored --nocapture`.

mod common;

use common::{Rng, random_rows};
use std::time::Instant;
use thaw_kernels::{GgmlType, QMatrix, ThreadPool, available_kernel_sets, matmul_with};

#[test]
#[ignore = "prints timings; run explicitly"]
fn matvec_timings() {
    let mut rng = Rng(9);
    let cases = [
        (GgmlType::Q4_1, 1536, 576),
        (GgmlType::Q4_1, 576, 1536),
        (GgmlType::Q8_0, 49152, 576),
        (GgmlType::Q5_0, 2048, 640),
        (GgmlType::Q4K, 640, 2048),
        (GgmlType::Q6K, 640, 2048),
        (GgmlType::F32, 576, 1536),
    ];
    for threads in [1, 2] {
        let pool = ThreadPool::new(threads);
        for &(ty, rows, cols) in &cases {
            let data = random_rows(&mut rng, ty, rows, cols);
            let w = QMatrix {
                ty,
                rows,
                cols,
                data: &data,
            };
            for n in [1usize, 16] {
                let x = rng.vec(cols * n, 1.0);
                let mut out = vec![0.0; rows * n];
                for set in available_kernel_sets() {
                    let iters = (200_000_000 / (rows * cols * n)).clamp(3, 2000);
                    matmul_with(set, &pool, &w, &x, n, &mut out).unwrap();
                    let t = Instant::now();
                    for _ in 0..iters {
                        matmul_with(set, &pool, &w, &x, n, &mut out).unwrap();
                    }
                    let s = t.elapsed().as_secs_f64() / iters as f64;
                    println!(
                        "threads={threads} {ty:>5} {rows:>5}x{cols:<5} n={n:<2} {:>7}: {:>8.1} us  {:>6.2} GFLOP/s  {:>6.2} GB/s weights",
                        set.name(),
                        s * 1e6,
                        2.0 * (rows * cols * n) as f64 / s / 1e9,
                        data.len() as f64 / s / 1e9
                    );
                }
            }
        }
    }
}
