//! `thaw bench`: prompt processing and generation speed, like llama-bench, plus the
//! machine's read bandwidth and how close decode gets to the bandwidth ceiling.

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use thaw_engine::{Engine, LoadOptions};
use thaw_gguf::GgufFile;

#[derive(Args)]
pub struct BenchArgs {
    /// Model name, .gguf path or hf:ORG/REPO/FILE.gguf.
    pub model: String,
    /// Prompt lengths to measure (prompt processing, tokens/s); 0 skips it.
    #[arg(short = 'p', long, value_delimiter = ',', default_value = "128,512")]
    pub prompt: Vec<usize>,
    /// Tokens to generate (generation, tokens/s); 0 skips it.
    #[arg(short = 'n', long = "gen", default_value_t = 128)]
    pub generate: usize,
    /// Repetitions of each test (after one warm-up run), at least 1.
    #[arg(short, long, default_value_t = 3, value_parser = parse_reps)]
    pub reps: usize,
    /// Kernel threads (default: all cores).
    #[arg(short, long, default_value_t = 0)]
    pub threads: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Cold start instead: fresh processes from exec to the first generated token, for
    /// the GGUF, a snapshot, a snapshot with a stored system prompt, and llama.cpp.
    #[arg(long)]
    pub cold: bool,
    /// --cold: runs of each variant with the page cache warm.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// --cold: runs of each variant after evicting the model file from the page cache
    /// (posix_fadvise DONTNEED); 0 skips them.
    #[arg(long, default_value_t = 5)]
    pub evicted_runs: usize,
    /// --cold: the (raw) prompt, and the user message of the system-prompt variants.
    #[arg(long, default_value = "The capital of France is")]
    pub cold_prompt: String,
    /// --cold: tokens of the stored system prompt.
    #[arg(long, default_value_t = 1000)]
    pub prefix_tokens: usize,
}

fn parse_reps(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("a benchmark needs at least 1 repetition".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(serde::Serialize)]
struct Row {
    test: String,
    tokens_per_second_median: f64,
    tokens_per_second_min: f64,
    tokens_per_second_max: f64,
}

pub fn bench(mut args: BenchArgs) -> Result<()> {
    args.threads = crate::kernel_threads(args.threads);
    if args.cold {
        return crate::cold::bench_cold(crate::cold::ColdOptions {
            model: args.model,
            runs: args.runs.max(1),
            evicted_runs: args.evicted_runs,
            prompt: args.cold_prompt,
            threads: args.threads,
            prefix_tokens: args.prefix_tokens,
            json: args.json,
        });
    }
    // `-p 0` measures generation only, as llama-bench does.
    args.prompt.retain(|&n| n > 0);
    if args.prompt.is_empty() && args.generate == 0 {
        anyhow::bail!("nothing to measure: -p 0 and -n 0 skip both tests");
    }
    let path = thaw_hub::resolve(&args.model)?;
    let engine = Engine::load(
        &path,
        &LoadOptions {
            threads: args.threads,
        },
    )?;
    // A snapshot's GGUF section holds the same tensor table.
    let file = if thaw_snapshot::is_snapshot(&path) {
        thaw_snapshot::Snapshot::open(&path)?.gguf()?
    } else {
        GgufFile::open(&path)?
    };
    let bytes_per_token = weight_bytes_per_token(&file);
    drop(file);
    let n_vocab = engine.model().config().n_vocab as u64;
    let threads = engine.pool().n_threads();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut random_tokens = |n: usize| -> Vec<u32> {
        (0..n)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                (rng % n_vocab) as u32
            })
            .collect()
    };
    let reps = args.reps;
    let mut rows = Vec::new();
    for &n in &args.prompt {
        let mut speeds = Vec::new();
        for rep in 0..=reps {
            let tokens = random_tokens(n);
            let mut session = engine.session(n.max(16))?;
            let t = Instant::now();
            session.prefill(&tokens)?;
            if rep > 0 {
                speeds.push(n as f64 / t.elapsed().as_secs_f64());
            }
        }
        rows.push(row(format!("pp{n}"), speeds));
    }
    if args.generate > 0 {
        let mut speeds = Vec::new();
        for rep in 0..=reps {
            let tokens = random_tokens(args.generate);
            let mut session = engine.session(args.generate + 1)?;
            let t = Instant::now();
            for &tok in &tokens {
                session.step(tok)?;
            }
            if rep > 0 {
                speeds.push(args.generate as f64 / t.elapsed().as_secs_f64());
            }
        }
        rows.push(row(format!("tg{}", args.generate), speeds));
    }
    let bandwidth = measure_read_bandwidth();
    let ceiling = bandwidth / bytes_per_token as f64;
    let tg = rows.iter().find(|r| r.test.starts_with("tg"));
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "model": path.display().to_string(),
                "threads": threads,
                "kernels": thaw_kernels::kernel_set_name(),
                "results": rows,
                "read_bandwidth_gb_s": bandwidth / 1e9,
                "weight_bytes_per_token": bytes_per_token,
                "decode_ceiling_tokens_per_second": ceiling,
                "decode_fraction_of_ceiling": tg.map(|r| r.tokens_per_second_median / ceiling),
            }))?
        );
        return Ok(());
    }
    println!(
        "model: {}  threads: {threads}  kernels: {}",
        path.display(),
        thaw_kernels::kernel_set_name()
    );
    println!(
        "{:<8} {:>12} {:>12} {:>12}",
        "test", "median t/s", "min", "max"
    );
    for r in &rows {
        println!(
            "{:<8} {:>12.1} {:>12.1} {:>12.1}",
            r.test, r.tokens_per_second_median, r.tokens_per_second_min, r.tokens_per_second_max
        );
    }
    println!(
        "read bandwidth {:.1} GB/s; weights read per token {:.1} MB; decode ceiling {:.0} tok/s",
        bandwidth / 1e9,
        bytes_per_token as f64 / 1e6,
        ceiling
    );
    if let Some(tg) = tg {
        println!(
            "decode reaches {:.0}% of the ceiling",
            100.0 * tg.tokens_per_second_median / ceiling
        );
    }
    Ok(())
}

fn row(test: String, mut speeds: Vec<f64>) -> Row {
    speeds.sort_by(|a, b| a.total_cmp(b));
    Row {
        test,
        tokens_per_second_median: speeds[speeds.len() / 2],
        tokens_per_second_min: speeds[0],
        tokens_per_second_max: speeds[speeds.len() - 1],
    }
}

/// Bytes of weights one decoded token reads: every tensor once, except that the
/// embedding table is only read whole when it doubles as the output projection.
pub fn weight_bytes_per_token(file: &GgufFile) -> u64 {
    let tied = file.tensor_info("output.weight").is_none();
    file.tensors()
        .iter()
        .filter(|t| tied || t.name != "token_embd.weight")
        .map(|t| t.size)
        .sum()
}

/// Read bandwidth of main memory in bytes/s, all cores reading a buffer much larger
/// than the caches (best of a few passes).
fn measure_read_bandwidth() -> f64 {
    const BYTES: usize = 512 << 20;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let buf = vec![1u64; BYTES / 8];
    let chunk = buf.len().div_ceil(threads);
    let mut best = 0.0f64;
    for _ in 0..4 {
        let t = Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = buf
                .chunks(chunk)
                .map(|c| s.spawn(move || sum_lanes(c)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        });
        std::hint::black_box(total);
        best = best.max(BYTES as f64 / t.elapsed().as_secs_f64());
    }
    best
}

/// Independent accumulators so the loop is bound by loads, not by one add chain.
fn sum_lanes(c: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    for block in c.chunks_exact(8) {
        for (a, v) in acc.iter_mut().zip(block) {
            *a = a.wrapping_add(*v);
        }
    }
    acc.iter().fold(0, |a, b| a.wrapping_add(*b))
}
