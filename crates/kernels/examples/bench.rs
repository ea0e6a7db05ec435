//! Kernel timings for tuning (not a test): `cargo run --release -p thaw-kernels --example bench`.
//! Reports the cost of an empty pool hand-off, a decode-like token (SmolLM2 shapes,
//! Q4_1, 30 layers of 7 matvecs plus the tied Q8_0 output), prefill-like matmuls and
//! one head's attention (`bench attn`: scalar reference vs SIMD kernels).

use std::time::Instant;
use thaw_kernels::{GgmlType, QMatrix, ThreadPool, matmul};

/// splitmix64 bytes for weight data with sane f16 scales.
fn weights(seed: &mut u64, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let (bs, bytes) = ty.block_layout().unwrap();
    let mut next = || {
        *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z ^ (z >> 31)
    };
    let mut data: Vec<u8> = (0..rows * cols / bs * bytes)
        .map(|_| next() as u8)
        .collect();
    let scale = half::f16::from_f32(0.01).to_bits().to_le_bytes();
    for b in data.chunks_exact_mut(bytes) {
        b[..2].copy_from_slice(&scale);
        if ty == GgmlType::Q4_1 {
            b[2..4].copy_from_slice(&half::f16::from_f32(-0.05).to_bits().to_le_bytes());
        }
    }
    data
}

/// Fastest single call out of `iters * 3`: on a shared machine the minimum is the
/// most repeatable figure (interference only ever adds time).
/// `n` f16 values uniform in [-1, 1).
fn halves(seed: &mut u64, n: usize) -> Vec<half::f16> {
    (0..n)
        .map(|_| {
            *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let z = (*seed ^ (*seed >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            half::f16::from_f32(((z >> 40) as f32 / (1u64 << 23) as f32) - 1.0)
        })
        .collect()
}

fn time<F: FnMut()>(iters: usize, mut f: F) -> f64 {
    f();
    let mut best = f64::MAX;
    for _ in 0..iters * 3 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

fn main() {
    let threads: usize = std::env::var("THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let pool = ThreadPool::new(threads);
    let what = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    let mut seed = 7u64;

    if what == "all" || what == "pool" {
        let busy = |us: f64| {
            let t = Instant::now();
            while t.elapsed().as_secs_f64() * 1e6 < us {
                std::hint::spin_loop();
            }
        };
        let s = time(5000, || pool.run(2, |_| {}));
        println!("empty run (2 tasks, {threads} threads): {:.2} us", s * 1e6);
        let s = time(2000, || pool.run(2, |_| busy(5.0)));
        println!(
            "run of 2 x 5us tasks: {:.2} us (ideal 5 with 2 threads)",
            s * 1e6
        );
        let s = time(1000, || {
            busy(20.0);
            pool.run(2, |_| busy(5.0))
        });
        println!(
            "20us caller work + run of 2 x 5us: {:.2} us (ideal 25)",
            s * 1e6
        );
    }

    // SmolLM2 layer shapes (rows, cols): q, k, v, o, gate, up, down.
    let shapes = [
        (576, 576),
        (192, 576),
        (192, 576),
        (576, 576),
        (1536, 576),
        (1536, 576),
        (576, 1536),
    ];
    let layer: Vec<(Vec<u8>, usize, usize)> = shapes
        .iter()
        .map(|&(r, c)| (weights(&mut seed, GgmlType::Q4_1, r, c), r, c))
        .collect();
    // 30 distinct layers so the weights stream from memory like the real model.
    let layers: Vec<Vec<(Vec<u8>, usize, usize)>> = (0..30)
        .map(|_| {
            shapes
                .iter()
                .map(|&(r, c)| (weights(&mut seed, GgmlType::Q4_1, r, c), r, c))
                .collect()
        })
        .collect();
    drop(layer);
    let emb = weights(&mut seed, GgmlType::Q8_0, 49152, 576);
    let x: Vec<f32> = (0..2048 * 512)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let mut out = vec![0.0f32; 49152 * 4];

    if what == "all" || what == "mv" {
        // Single matvecs, fastest of many: the least noisy per-kernel figure.
        for (ty, d, r, c) in [
            (GgmlType::Q4_1, &layers[0][4].0, 1536, 576),
            (GgmlType::Q4_1, &layers[0][6].0, 576, 1536),
            (GgmlType::Q4_1, &layers[0][1].0, 192, 576),
            (GgmlType::Q8_0, &emb, 49152, 576),
        ] {
            let w = QMatrix {
                ty,
                rows: r,
                cols: c,
                data: d,
            };
            let s = time(if r > 10000 { 30 } else { 1000 }, || {
                matmul(&pool, &w, &x[..c], 1, &mut out[..r])
            });
            println!(
                "matvec {ty} {r}x{c}: {:.1} us  {:.2} GB/s",
                s * 1e6,
                d.len() as f64 / s / 1e9
            );
        }
    }

    if what == "all" || what == "pack" {
        // Interleaving the 30 layers' Q4_1 matrices (what loading a GGUF does).
        let bytes: usize = layers.iter().flatten().map(|l| l.0.len()).sum();
        let mut dst: Vec<Vec<u8>> = layers
            .iter()
            .flatten()
            .map(|l| vec![0; l.0.len()])
            .collect();
        let s = time(5, || {
            for ((d, r, c), out) in layers.iter().flatten().zip(dst.iter_mut()) {
                thaw_kernels::interleave::pack_matrix(GgmlType::Q4_1, *c, *r, d, out);
            }
        });
        println!(
            "interleave {} MB of Q4_1, one thread: {:.1} ms  {:.2} GB/s",
            bytes >> 20,
            s * 1e3,
            bytes as f64 / s / 1e9
        );
        let mut out = vec![0u8; emb.len()];
        let s = time(5, || {
            thaw_kernels::interleave::pack_matrix(GgmlType::Q8_0, 576, 49152, &emb, &mut out)
        });
        println!(
            "interleave {} MB of Q8_0, one thread: {:.1} ms  {:.2} GB/s",
            emb.len() >> 20,
            s * 1e3,
            emb.len() as f64 / s / 1e9
        );
    }

    if what == "all" || what == "decode" {
        let layer_bytes: usize = layers.iter().flatten().map(|l| l.0.len()).sum();
        // The same layers interleaved by 16 rows (what snapshots store).
        let packed: Vec<Vec<(Vec<u8>, usize, usize)>> = layers
            .iter()
            .map(|l| {
                l.iter()
                    .map(|(d, r, c)| {
                        let mut p = vec![0u8; d.len()];
                        thaw_kernels::interleave::pack_matrix(GgmlType::Q4_1, *c, *r, d, &mut p);
                        (p, *r, *c)
                    })
                    .collect()
            })
            .collect();
        // 30 layers' matvecs, or layer 0's 30 times (its weights L2/L3-hot).
        let run =
            |ls: &[Vec<(Vec<u8>, usize, usize)>], ty: GgmlType, hot: bool, out: &mut [f32]| {
                for i in 0..30 {
                    for (d, r, c) in &ls[if hot { 0 } else { i }] {
                        let w = QMatrix {
                            ty,
                            rows: *r,
                            cols: *c,
                            data: d,
                        };
                        matmul(&pool, &w, &x[..*c], 1, &mut out[..*r]);
                    }
                }
            };
        let mut s = 0.0;
        for (name, ls, ty) in [
            ("", &layers, GgmlType::Q4_1),
            (", interleaved", &packed, GgmlType::Q4_1x16),
        ] {
            let h = time(50, || run(ls, ty, true, &mut out));
            println!(
                "decode layers{name}, one layer's weights (L2/L3-hot): {:.1} us/token",
                h * 1e6
            );
            s = time(50, || run(ls, ty, false, &mut out));
            println!(
                "decode layers{name}: {:.1} us/token  {:.2} GB/s  ({} matvecs)",
                s * 1e6,
                layer_bytes as f64 / s / 1e9,
                30 * 7
            );
        }
        let w = QMatrix {
            ty: GgmlType::Q8_0,
            rows: 49152,
            cols: 576,
            data: &emb,
        };
        let so = time(50, || matmul(&pool, &w, &x[..576], 1, &mut out[..49152]));
        println!(
            "decode output 49152x576 Q8_0: {:.1} us  {:.2} GB/s",
            so * 1e6,
            emb.len() as f64 / so / 1e9
        );
        // The model decodes with the interleaved layers (the last `s`).
        let tot = s + so;
        println!(
            "decode total: {:.1} us/token = {:.0} tok/s  {:.2} GB/s",
            tot * 1e6,
            1.0 / tot,
            (layer_bytes + emb.len()) as f64 / tot / 1e9
        );
    }

    if what == "all" || what == "tiles" {
        // Raw decode kernels of each set on an L2-hot matrix, one thread, no driver:
        // the gemv tile (if any) against the per-row dot.
        // Gemma 3 270M shapes for the k-quants (its 2048 x 640 gate/up, 640 x 2048 down).
        let q4k = weights(&mut seed, GgmlType::Q4K, 2048, 768);
        let q6k = weights(&mut seed, GgmlType::Q6K, 768, 2048);
        let q50 = weights(&mut seed, GgmlType::Q5_0, 2048, 640);
        for (ty, d, r, c) in [
            (GgmlType::Q4_1, &layers[0][4].0[..], 1536, 576),
            (GgmlType::Q8_0, &emb[..1536 * 18 * 34], 1536, 576),
            (GgmlType::Q5_0, &q50[..], 2048, 640),
            (GgmlType::Q4K, &q4k[..], 2048, 768),
            (GgmlType::Q6K, &q6k[..], 768, 2048),
        ] {
            for set in thaw_kernels::available_kernel_sets() {
                let k = set.for_type(ty).unwrap();
                let mut act = vec![0u8; k.act_type.row_bytes(c).unwrap()];
                (k.quantize)(&x[..c], &mut act);
                let rb = ty.row_bytes(c).unwrap();
                let s = time(1000, || {
                    for i in 0..r {
                        out[i] = (k.dot)(c, &d[i * rb..][..rb], &act);
                    }
                });
                let mut line = format!("{} {ty} {r}x{c}: dot {:.1} us", set.name(), s * 1e6);
                if let Some(v) = k.gemv {
                    let s = time(1000, || {
                        for i in (0..r).step_by(v.rows) {
                            (v.f)(c, &d[i * rb..][..v.rows * rb], &act, &mut out[i..]);
                        }
                    });
                    line += &format!(", {}-row gemv {:.1} us", v.rows, s * 1e6);
                }
                if let Some(g) = k.gemm {
                    // 64 tokens through the prefill tile, per token.
                    let n = 64;
                    let ar = act.len();
                    let mut acts = vec![0u8; ar * n];
                    for (t, a) in acts.chunks_exact_mut(ar).enumerate() {
                        (k.quantize)(&x[t * c..][..c], a);
                    }
                    let mut tile = [0.0f32; 64];
                    let s = time(20, || {
                        for i in (0..r - r % g.rows).step_by(g.rows) {
                            for t in (0..n).step_by(g.tokens) {
                                let a = &acts[t * ar..][..g.tokens * ar];
                                (g.f)(c, &d[i * rb..][..g.rows * rb], a, &mut tile);
                            }
                        }
                    });
                    line += &format!(
                        ", {}x{} gemm {:.1} us/token",
                        g.rows,
                        g.tokens,
                        s * 1e6 / n as f64
                    );
                }
                println!("{line}");
            }
        }
    }

    if what == "all" || what == "attn" {
        // One head's causal attention over a 512-token prompt (tinyBLAS order), the
        // scalar references against the dispatched kernels, alternated, one thread.
        use thaw_kernels::attn::{self, F16Sum};
        for hd in [64usize, 256] {
            let n = 512;
            let (k, v) = (halves(&mut seed, n * hd), halves(&mut seed, n * hd));
            let q: Vec<f32> = halves(&mut seed, hd).iter().map(|h| h.to_f32()).collect();
            let (mut sc, mut acc, mut o) = (vec![0.0f32; n], vec![0.0f32; 16 * hd], vec![0.0; hd]);
            let mut run = |simd: bool| {
                for t in 0..n {
                    let sc = &mut sc[..=t];
                    let (keys, vals) = (&k[..(t + 1) * hd], &v[..(t + 1) * hd]);
                    if simd {
                        attn::f16_scores(&q, keys, F16Sum::TinyBlas, 0.125, sc);
                        attn::softmax(sc);
                        attn::f16_weighted_sum(sc, vals, 0, F16Sum::TinyBlas, &mut acc, &mut o);
                    } else {
                        attn::f16_scores_scalar(&q, keys, F16Sum::TinyBlas, 0.125, sc);
                        attn::softmax_scalar(sc);
                        attn::f16_weighted_sum_scalar(
                            sc,
                            vals,
                            0,
                            F16Sum::TinyBlas,
                            &mut acc,
                            &mut o,
                        );
                    }
                }
            };
            let (mut best_s, mut best_v) = (f64::MAX, f64::MAX);
            for _ in 0..5 {
                best_s = best_s.min(time(1, || run(false)));
                best_v = best_v.min(time(1, || run(true)));
            }
            println!(
                "attention, one head, 512-token prompt, head_dim {hd}: scalar {:.0} us, {} {:.0} us ({:.1}x)",
                best_s * 1e6,
                thaw_kernels::kernel_set_name(),
                best_v * 1e6,
                best_s / best_v
            );
        }
    }

    if what == "all" || what == "grouped" {
        // A chat turn over a long stored prefix: `m` query rows (the query heads that
        // share a K/V head × a block of tokens) against 1,221 cached positions,
        // head_dim 64, one thread; ns per (query row, position) for each step.
        use thaw_kernels::attn::{self, F16Sum, QueryWeights};
        let (n, hd) = (1221usize, 64usize);
        let (k, v) = (halves(&mut seed, n * hd), halves(&mut seed, n * hd));
        for m in [1usize, 6, 15, 18, 33] {
            let q: Vec<f32> = halves(&mut seed, m * hd)
                .iter()
                .map(|h| h.to_f32())
                .collect();
            let mut sc = vec![0.0f32; m * n];
            let mut acc = vec![0.0f32; m * 16 * hd];
            let rows = vec![0..n; m];
            let per = 1e9 / (m * n) as f64;
            let (mut ts, mut tm, mut ta) = (f64::MAX, f64::MAX, f64::MAX);
            for _ in 0..20 {
                ts = ts.min(time(1, || {
                    attn::f16_scores_many(&q, &k, hd, F16Sum::TinyBlas, 0.125, &mut sc, n)
                }));
                tm = tm.min(time(1, || {
                    for row in sc.chunks_exact_mut(n) {
                        attn::softmax_slots_f16(row, 0);
                    }
                }));
                ta = ta.min(time(1, || {
                    let qw = QueryWeights {
                        w: &sc,
                        stride: n,
                        rows: &rows,
                    };
                    attn::f16_accumulate(&qw, &v, hd, 0, F16Sum::TinyBlas, &mut acc)
                }));
            }
            println!(
                "grouped attention, {m} rows x {n} positions, hd {hd}: ns per row·position: scores {:.2}, softmax {:.2}, weighted sum {:.2}",
                ts * per,
                tm * per,
                ta * per
            );
        }
    }

    if what == "all" || what == "grouped-model" {
        // The same 18 query rows against each of 90 K/V heads in turn (30 layers × 3
        // heads, 28 MB: out of L2 as in a forward pass) and against one head 90 times
        // (hot): ns per row·position for scores + softmax + weighted sum.
        use thaw_kernels::attn::{self, F16Sum, QueryWeights};
        let (n, hd, m, heads) = (1221usize, 64usize, 18usize, 90usize);
        let k = halves(&mut seed, heads * n * hd);
        let v = halves(&mut seed, heads * n * hd);
        let q: Vec<f32> = halves(&mut seed, m * hd)
            .iter()
            .map(|h| h.to_f32())
            .collect();
        let mut sc = vec![0.0f32; m * n];
        let mut acc = vec![0.0f32; m * 16 * hd];
        let rows = vec![0..n; m];
        let per = 1e9 / (heads * m * n) as f64;
        for _ in 0..1 {
            let s = time(6, || {
                for h in 0..heads {
                    let kh = &k[h * n * hd..][..n * hd];
                    attn::f16_scores_many(&q, kh, hd, F16Sum::TinyBlas, 0.125, &mut sc, n);
                }
            });
            let x = time(6, || {
                for _ in 0..heads {
                    for row in sc.chunks_exact_mut(n) {
                        attn::softmax_slots_f16(row, 0);
                    }
                }
            });
            let a = time(6, || {
                for h in 0..heads {
                    let qw = QueryWeights {
                        w: &sc,
                        stride: n,
                        rows: &rows,
                    };
                    let vh = &v[h * n * hd..][..n * hd];
                    attn::f16_accumulate(&qw, vh, hd, 0, F16Sum::TinyBlas, &mut acc);
                }
            });
            println!(
                "  streaming steps: scores {:.2}, softmax {:.2}, weighted sum {:.2}",
                s * per,
                x * per,
                a * per
            );
        }
        let mut one = |h: usize| {
            let (kh, vh) = (&k[h * n * hd..][..n * hd], &v[h * n * hd..][..n * hd]);
            attn::f16_scores_many(&q, kh, hd, F16Sum::TinyBlas, 0.125, &mut sc, n);
            for row in sc.chunks_exact_mut(n) {
                attn::softmax_slots_f16(row, 0);
            }
            let qw = QueryWeights {
                w: &sc,
                stride: n,
                rows: &rows,
            };
            acc.fill(0.0);
            attn::f16_accumulate(&qw, vh, hd, 0, F16Sum::TinyBlas, &mut acc);
        };
        for _ in 0..3 {
            let cold = time(6, || (0..heads).for_each(&mut one));
            let hot = time(6, || (0..heads).for_each(|_| one(0)));
            println!(
                "attention over 90 heads of 1221 positions, 18 rows: ns per row·position {:.2} streaming, {:.2} hot",
                cold * per,
                hot * per
            );
        }
    }

    if let Some(ty) = what.strip_prefix("gemma-") {
        // One Gemma 3 270M prefill matrix at n = 512, ITERS (20) times, for A/B runs
        // under `perf stat -e task-clock` (CPU time: unlike wall time it does not count
        // the time another process holds the shared core; this VM has no cycle
        // counters): q5_0 (gate/up 2048x640), q4k or q6k (ffn_down 640x2048).
        let (ty, r, c) = match ty {
            "q5_0" => (GgmlType::Q5_0, 2048, 640),
            "q4k" => (GgmlType::Q4K, 640, 2048),
            _ => (GgmlType::Q6K, 640, 2048),
        };
        let n = 512;
        let d = weights(&mut seed, ty, r, c);
        let w = QMatrix {
            ty,
            rows: r,
            cols: c,
            data: &d,
        };
        let mut o = vec![0.0f32; r * n];
        let iters = std::env::var("ITERS").map_or(20, |v| v.parse().unwrap_or(20));
        for _ in 0..iters {
            matmul(&pool, &w, &x[..c * n], n, &mut o);
        }
        return;
    }

    if what == "all" || what == "prefill" {
        for n in [128usize, 512] {
            let mut o = vec![0.0f32; 2048 * n];
            let l = &layers[0];
            let s = time(3, || {
                for (d, r, c) in l {
                    let w = QMatrix {
                        ty: GgmlType::Q4_1,
                        rows: *r,
                        cols: *c,
                        data: d,
                    };
                    matmul(&pool, &w, &x[..c * n], n, &mut o[..r * n]);
                }
            });
            let flops: usize = l.iter().map(|(_, r, c)| 2 * r * c * n).sum();
            println!(
                "prefill n={n} one Q4_1 layer: {:.1} us  {:.1} GFLOP/s  ({:.0} tok/s for 30 layers)",
                s * 1e6,
                flops as f64 / s / 1e9,
                n as f64 / (30.0 * s)
            );
            let w = QMatrix {
                ty: GgmlType::Q8_0,
                rows: 1536,
                cols: 576,
                data: &emb[..1536 * 612],
            };
            let s = time(3, || {
                matmul(&pool, &w, &x[..576 * n], n, &mut o[..1536 * n])
            });
            println!(
                "prefill n={n} Q8_0 1536x576: {:.1} us  {:.1} GFLOP/s",
                s * 1e6,
                2.0 * (1536 * 576 * n) as f64 / s / 1e9
            );
            // Gemma 3 270M's ffn_down shape in its two K-quant types, and its gate/up
            // shape in Q5_0.
            for (ty, r, c) in [
                (GgmlType::Q4K, 640, 2048),
                (GgmlType::Q6K, 640, 2048),
                (GgmlType::Q5_0, 2048, 640),
            ] {
                let d = weights(&mut seed, ty, r, c);
                let w = QMatrix {
                    ty,
                    rows: r,
                    cols: c,
                    data: &d,
                };
                let s = time(3, || matmul(&pool, &w, &x[..c * n], n, &mut o[..r * n]));
                println!(
                    "prefill n={n} {ty} {r}x{c}: {:.1} us  {:.1} GFLOP/s",
                    s * 1e6,
                    2.0 * (r * c * n) as f64 / s / 1e9
                );
            }
        }
    }
}
