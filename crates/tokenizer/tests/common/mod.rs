//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use thaw_gguf::GgufFile;
use thaw_tokenizer::Tokenizer;

/// `$THAW_HOME/models/<name>.gguf` (THAW_HOME defaults to ~/.cache/thaw); None (test
/// skipped with a message) when the model is not on disk.
pub fn model_path(name: &str) -> Option<PathBuf> {
    let home = std::env::var_os("THAW_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("thaw"))
        })?;
    let p = home.join("models").join(format!("{name}.gguf"));
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipped: model {name} not found at {}", p.display());
        None
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
