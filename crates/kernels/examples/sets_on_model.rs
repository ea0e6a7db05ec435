//! Compare every kernel set against scalar on the real matrices of a GGUF model:
//! `sets_on_model MODEL.gguf` prints the largest relative difference per tensor type.

use thaw_gguf::GgufFile;
use thaw_kernels::{QMatrix, ThreadPool, available_kernel_sets, kernel_set, matmul_with};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: sets_on_model MODEL.gguf")?;
    let file = GgufFile::open(&path)?;
    let pool = ThreadPool::new(1);
    let scalar = kernel_set("scalar").ok_or("no scalar set")?;
    let mut seed = 1u64;
    for t in file.tensors().iter().filter(|t| t.dims.len() == 2).take(12) {
        let (cols, rows) = (t.dims[0] as usize, (t.dims[1] as usize).min(256));
        let Some(rb) = t.ty.row_bytes(cols) else {
            continue;
        };
        let w = QMatrix {
            ty: t.ty,
            rows,
            cols,
            data: &file.tensor_data(t)[..rows * rb],
        };
        for n in [1usize, 5] {
            let x: Vec<f32> = (0..n * cols)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
                })
                .collect();
            let mut want = vec![0.0; n * rows];
            matmul_with(scalar, &pool, &w, &x, n, &mut want)?;
            for set in available_kernel_sets() {
                let mut got = vec![0.0; n * rows];
                matmul_with(set, &pool, &w, &x, n, &mut got)?;
                let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let diff = want
                    .iter()
                    .zip(&got)
                    .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
                println!(
                    "{:<28} {:<5} n={n} {:<7} max|diff|/max|y| = {:.2e}",
                    t.name,
                    t.ty.name(),
                    set.name(),
                    diff / scale
                );
            }
        }
    }
    Ok(())
}
