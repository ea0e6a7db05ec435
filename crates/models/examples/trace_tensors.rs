//! Named intermediate tensors of a prompt evaluated as one batch, then of single-token
//! decode steps, for comparison with llama.cpp's eval callback
//! (`bench/llamacpp_dump.py` + `bench/compare_tensors.py`):
//! `trace_tensors MODEL.gguf OUT.bin PROMPT_IDS [DECODE_IDS]` (ids comma-separated).
//! Each record: u32 name length, name bytes, u32 step (0 = the prompt), u64 count,
//! `count` little-endian f32.

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use thaw_gguf::GgufFile;
use thaw_kernels::ThreadPool;
use thaw_models::{Logits, Model};

static STEP: AtomicU32 = AtomicU32::new(0);

fn ids(s: &str) -> Result<Vec<u32>, std::num::ParseIntError> {
    s.split(',')
        .filter(|t| !t.is_empty())
        .map(str::parse)
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let (path, out, prompt, steps) = match &a[..] {
        [p, o, i] => (p, o, ids(i)?, vec![]),
        [p, o, i, d] => (p, o, ids(i)?, ids(d)?),
        _ => return Err("usage: trace_tensors MODEL.gguf OUT.bin PROMPT_IDS [DECODE_IDS]".into()),
    };
    let f = Mutex::new(std::io::BufWriter::new(std::fs::File::create(out)?));
    thaw_models::set_trace_hook(Box::new(move |name: &str, data: &[f32]| {
        let mut f = f.lock().unwrap();
        let mut rec = Vec::with_capacity(16 + name.len() + 4 * data.len());
        rec.extend((name.len() as u32).to_le_bytes());
        rec.extend(name.as_bytes());
        rec.extend(STEP.load(Ordering::Relaxed).to_le_bytes());
        rec.extend((data.len() as u64).to_le_bytes());
        rec.extend(data.iter().flat_map(|v| v.to_le_bytes()));
        f.write_all(&rec)
            .and_then(|()| f.flush())
            .expect("write trace");
    }));
    let model = Model::load(&GgufFile::open(path)?)?;
    let pool = ThreadPool::new(2);
    let mut cache = model.new_cache(512)?;
    model.forward(&pool, &mut cache, &prompt, Logits::Last)?;
    for (i, &t) in steps.iter().enumerate() {
        STEP.store(i as u32 + 1, Ordering::Relaxed);
        model.forward(&pool, &mut cache, &[t], Logits::Last)?;
    }
    Ok(())
}
