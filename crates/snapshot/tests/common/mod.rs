//! Shared test helpers: temporary directories, a small synthetic model, and byte-level
//! surgery on snapshot files (with the header checksum recomputed, so that a test can
//! reach the checks behind it).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use thaw_gguf::GgmlType;
use thaw_gguf::writer::GgufWriter;

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("thaw-snapshot-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A small GGUF with metadata of several types and tensors of several types.
pub fn synthetic_gguf(path: &Path) {
    let q8: Vec<u8> = (0..2 * 34).map(|i| (i * 7 % 251) as u8).collect();
    let mut w = GgufWriter::new();
    w.kv("general.architecture", "llama")
        .kv("general.name", "tiny synthetic")
        .kv("llama.block_count", 2u32)
        .kv("tokenizer.ggml.model", "llama")
        .kv("tokenizer.ggml.tokens", vec!["a", "b", "<s>"])
        .tensor_f32("norm", &[8], &[0.5, 1.0, 1.5, 2.0, -1.0, -2.0, 3.0, 4.0])
        .tensor("w", &[32, 2], GgmlType::Q8_0, q8)
        .tensor_f32("v", &[3], &[9.0, 8.0, 7.0]);
    w.write_to(path).unwrap();
}

pub const HEADER_LEN: usize = 40;
pub const ENTRY_LEN: usize = 56;

/// FNV-1a 64 over header + table with bytes 32..40 (the checksum) read as zero —
/// written from the format description, independently of the crate's code.
pub fn fix_checksum(bytes: &mut [u8]) {
    let n = u32::from_le_bytes(bytes[24..28].try_into().unwrap()) as usize;
    let end = HEADER_LEN + n * ENTRY_LEN;
    let mut h: u64 = 0xcbf29ce484222325;
    for (i, &b) in bytes[..end].iter().enumerate() {
        let b = if (32..40).contains(&i) { 0 } else { b };
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    bytes[32..40].copy_from_slice(&h.to_le_bytes());
}

/// Byte offset of field `at` of table entry `i`.
pub fn entry_field(i: usize, at: usize) -> usize {
    HEADER_LEN + i * ENTRY_LEN + at
}

pub fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
pub fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
pub fn get_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}
