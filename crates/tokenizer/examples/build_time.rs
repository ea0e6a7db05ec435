//! Time `Tokenizer::from_gguf` (median of 10 after one warm-up):
//! `cargo run --release -p thaw-tokenizer --example build_time MODEL.gguf`.

use thaw_gguf::GgufFile;
use thaw_tokenizer::Tokenizer;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: build_time MODEL.gguf")?;
    let file = GgufFile::open(&path)?;
    Tokenizer::from_gguf(&file)?;
    let mut times: Vec<f64> = (0..10)
        .map(|_| {
            let t = std::time::Instant::now();
            let tok = Tokenizer::from_gguf(&file).expect("tokenizer builds");
            std::hint::black_box(&tok);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect::<Vec<_>>();
    times.sort_by(f64::total_cmp);
    println!(
        "{path}: Tokenizer::from_gguf median {:.1} ms (min {:.1}, max {:.1})",
        times[5], times[0], times[9]
    );
    Ok(())
}
