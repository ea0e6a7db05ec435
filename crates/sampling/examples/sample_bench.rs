//! Time one `Sampler::sample` call on a 262,144-token vocabulary (Gemma 3's size).
//! Run: `cargo run --release -p thaw-sampling --example sample_bench`

use std::time::Instant;

use thaw_sampling::rng::Xoshiro256StarStar;
use thaw_sampling::{Sampler, SamplerConfig, logprobs, top_logprobs};

const VOCAB: usize = 262_144;

/// Logits shaped roughly like a model's: a wide low bulk plus a handful of strong candidates.
/// `spread` scales the bulk (a flatter distribution makes top-p keep more tokens).
fn logits(rng: &mut Xoshiro256StarStar, spread: f64) -> Vec<f32> {
    (0..VOCAB)
        .map(|i| {
            // Sum of 4 uniforms ~ bell-shaped, mean 0, sd ~1.15.
            let g: f64 = (0..4).map(|_| rng.next_f64() - 0.5).sum::<f64>() * 2.0;
            let boost = if i % 9973 == 0 { 12.0 } else { 0.0 };
            (g * spread + boost) as f32
        })
        .collect()
}

fn time(name: &str, config: SamplerConfig, base: &[f32]) {
    let mut s = Sampler::new(config).expect("valid config");
    let mut buf = base.to_vec();
    let iters = 200;
    // Copy cost is measured separately so it can be subtracted.
    let t0 = Instant::now();
    for _ in 0..iters {
        buf.copy_from_slice(base);
        std::hint::black_box(&mut buf);
    }
    let copy = t0.elapsed().as_secs_f64() / iters as f64;
    let t0 = Instant::now();
    for _ in 0..iters {
        buf.copy_from_slice(base);
        std::hint::black_box(s.sample(&mut buf, &[1, 2, 3]).expect("sample"));
    }
    let per = t0.elapsed().as_secs_f64() / iters as f64 - copy;
    println!("{name:<48} {:>8.1} µs/call", per * 1e6);
}

fn main() {
    let mut rng = Xoshiro256StarStar::seed_from_u64(1);
    for spread in [2.0, 0.5] {
        let base = logits(&mut rng, spread);
        println!("-- bulk spread {spread} --");
        let t0 = Instant::now();
        for _ in 0..200 {
            std::hint::black_box(std::hint::black_box(&base).iter().sum::<f32>());
        }
        println!(
            "{:<48} {:>8.1} µs/call",
            "baseline: one sum pass over the logits",
            t0.elapsed().as_secs_f64() / 200.0 * 1e6
        );
        let d = SamplerConfig::default;
        time("greedy", SamplerConfig::greedy(), &base);
        time("default (top_k 40, top_p .95, min_p .05)", d(), &base);
        time(
            "top_k 0, top_p .95, min_p .05 (CLI w/o top-k)",
            SamplerConfig { top_k: 0, ..d() },
            &base,
        );
        time(
            "top_k 0, top_p .95, min_p 0 (OpenAI top_p)",
            SamplerConfig {
                top_k: 0,
                min_p: 0.0,
                ..d()
            },
            &base,
        );
        time(
            "top_k 0, top_p 1, min_p 0 (plain temperature)",
            SamplerConfig {
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                ..d()
            },
            &base,
        );
        time(
            "default + freq/presence/repeat penalties",
            SamplerConfig {
                repeat_penalty: 1.1,
                frequency_penalty: 0.5,
                presence_penalty: 0.5,
                ..d()
            },
            &base,
        );
        let t0 = Instant::now();
        for _ in 0..50 {
            std::hint::black_box(logprobs(&base).expect("logprobs"));
        }
        println!(
            "{:<48} {:>8.1} µs/call",
            "logprobs (full vector)",
            t0.elapsed().as_secs_f64() / 50.0 * 1e6
        );
        let t0 = Instant::now();
        for _ in 0..50 {
            std::hint::black_box(top_logprobs(&base, 5).expect("top_logprobs"));
        }
        println!(
            "{:<48} {:>8.1} µs/call",
            "top_logprobs k=5",
            t0.elapsed().as_secs_f64() / 50.0 * 1e6
        );
    }
}
