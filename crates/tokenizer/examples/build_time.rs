//! Time `Tokenizer::from_gguf` and `Tokenizer::from_frozen` (what a snapshot does),
//! median of 10 after one warm-up:
//! `cargo run --release -p thaw-tokenizer --example build_time MODEL.gguf`.

use thaw_gguf::GgufFile;
use thaw_tokenizer::Tokenizer;

fn median_ms(mut f: impl FnMut()) -> (f64, f64, f64) {
    f();
    let mut times: Vec<f64> = (0..10)
        .map(|_| {
            let t = std::time::Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (times[5], times[0], times[9])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: build_time MODEL.gguf")?;
    let file = GgufFile::open(&path)?;
    let (med, min, max) = median_ms(|| {
        std::hint::black_box(Tokenizer::from_gguf(&file).expect("tokenizer builds"));
    });
    println!("{path}: Tokenizer::from_gguf median {med:.1} ms (min {min:.1}, max {max:.1})");
    let frozen = Tokenizer::from_gguf(&file)?.to_frozen();
    let (med, min, max) = median_ms(|| {
        std::hint::black_box(Tokenizer::from_frozen(&frozen).expect("tokenizer thaws"));
    });
    println!(
        "{path}: Tokenizer::from_frozen ({} bytes) median {med:.2} ms (min {min:.2}, max {max:.2})",
        frozen.len()
    );
    Ok(())
}
