//! Shared test helpers.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use thaw_gguf::GgmlType;
use thaw_gguf::writer::GgufWriter;

/// The cached path of a known model, fetched by thaw-hub if missing (once per test
/// process). If it cannot be had (e.g. offline), prints why the caller should skip and
/// returns `None`.
pub fn model_path(name: &str) -> Option<PathBuf> {
    static CACHE: Mutex<Vec<(String, Option<PathBuf>)>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = cache.iter().find(|(n, _)| n == name) {
        return p.clone();
    }
    let path = match thaw_hub::ensure_model(name) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("skipping: model {name} is not available: {e}");
            None
        }
    };
    cache.push((name.to_owned(), path.clone()));
    path
}

/// A path in the temp dir unique to this process and call.
pub fn temp_path(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("thaw-gguf-{}-{tag}-{n}.gguf", std::process::id()))
}

/// A small valid file with metadata of several types and three tensors.
pub fn small_writer() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.kv("general.architecture", "llama")
        .kv("llama.block_count", 2u32)
        .kv("llama.rope.freq_base", 10000.0f32)
        .kv("tokenizer.ggml.tokens", vec!["<s>", "</s>", "a", "b"])
        .kv("tokenizer.ggml.scores", vec![0.0f32, -1.0, -2.0, -3.0])
        .kv("nested", vec![vec![1i32, 2], vec![3]]);
    w.tensor_f32("norm.weight", &[4], &[1.0, 2.0, 3.0, 4.0]);
    w.tensor(
        "q8",
        &[32, 2],
        GgmlType::Q8_0,
        (0..68u8).collect::<Vec<_>>(),
    );
    w.tensor("f16", &[3], GgmlType::F16, vec![1, 2, 3, 4, 5, 6]);
    w
}
