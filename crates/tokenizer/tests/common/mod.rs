//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use thaw_gguf::GgufFile;
use thaw_tokenizer::Tokenizer;

/// The cached GGUF of a catalog model (fetched by thaw-hub if missing); None, with a
/// "skipped" message, when it cannot be had (e.g. no network).
pub fn model_path(name: &str) -> Option<PathBuf> {
    match thaw_hub::ensure_model(name) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("skipped: model {name} unavailable: {e}");
            None
        }
    }
}

pub fn load(name: &str) -> Option<(GgufFile, Tokenizer)> {
    let path = model_path(name)?;
    let gguf = GgufFile::open(&path).expect("open gguf");
    let t0 = Instant::now();
    let tok = Tokenizer::from_gguf(&gguf).expect("tokenizer from gguf");
    eprintln!(
        "Tokenizer::from_gguf({name}) took {:.1} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    Some((gguf, tok))
}

/// Does `python3 -c "import <module>"` work?
pub fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

pub fn tests_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests"))
}

/// The corpus, one case per line (split on '\n' only: lines may hold '\r').
pub fn corpus() -> Vec<String> {
    let text = std::fs::read_to_string(tests_dir().join("data/corpus.txt")).expect("corpus");
    text.split('\n')
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// A fresh directory per call (tests in one process run in parallel).
pub fn scratch_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("thaw-tokenizer-{tag}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}
