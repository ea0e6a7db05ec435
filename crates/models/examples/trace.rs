//! Logits of a prompt evaluated as one batch followed by single-token decode steps,
//! the way llama.cpp's greedy loop runs (for debugging against it):
//! `trace MODEL.gguf OUT.f32 PROMPT_IDS DECODE_IDS` (ids comma-separated). Writes the
//! prompt's last-token logits, then each step's, as raw little-endian f32 rows.

use std::io::Write;

use thaw_gguf::GgufFile;
use thaw_kernels::ThreadPool;
use thaw_models::{Logits, Model};

fn ids(s: &str) -> Result<Vec<u32>, std::num::ParseIntError> {
    s.split(',')
        .filter(|t| !t.is_empty())
        .map(str::parse)
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [path, out, prompt, steps] = &a[..] else {
        return Err("usage: trace MODEL.gguf OUT.f32 PROMPT_IDS DECODE_IDS".into());
    };
    let (prompt, steps) = (ids(prompt)?, ids(steps)?);
    let model = Model::load(&GgufFile::open(path)?)?;
    let pool = ThreadPool::new(2);
    let mut cache = model.new_cache(512)?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(out)?);
    let mut write =
        |l: &[f32]| f.write_all(&l.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
    write(&model.forward(&pool, &mut cache, &prompt, Logits::Last)?)?;
    for &t in &steps {
        write(&model.forward(&pool, &mut cache, &[t], Logits::Last)?)?;
    }
    Ok(())
}
