//! Shared test helpers: temporary directories, a small synthetic model, and byte-level
//! surgery on snapshot files (with the header checksum recomputed, so that a test can
//! reach the checks behind it).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use thaw_gguf::writer::GgufWriter;
use thaw_gguf::{GgmlType, TensorInfo, Value};

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
    // Q4_1, 20 rows: one interleaved group and 4 plain rows in a snapshot (as the
    // embeddings too: rows are looked up through the layout).
    let q4: Vec<u8> = (0..20 * 20).map(|i| (i * 13 % 251) as u8).collect();
    let mut w = GgufWriter::new();
    w.kv("general.architecture", "llama")
        .kv("general.name", "tiny synthetic")
        .kv("llama.block_count", 2u32)
        .kv("tokenizer.ggml.model", "llama")
        .kv("tokenizer.ggml.tokens", vec!["a", "b", "<s>"])
        .tensor_f32("norm", &[8], &[0.5, 1.0, 1.5, 2.0, -1.0, -2.0, 3.0, 4.0])
        .tensor("w", &[32, 2], GgmlType::Q8_0, q8)
        .tensor("wq", &[32, 20], GgmlType::Q4_1, q4.clone())
        .tensor("token_embd.weight", &[32, 20], GgmlType::Q4_1, q4)
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

/// The metadata a snapshot's GGUF section holds: the source's minus `moved`, with
/// `general.alignment` raised to 64 (the snapshot aligns tensors to cache lines).
pub fn expected_metadata(original: &thaw_gguf::GgufFile, moved: &[&str]) -> Vec<(String, Value)> {
    let mut kept: Vec<_> = original
        .metadata()
        .iter()
        .filter(|(k, _)| !moved.contains(&k.as_str()))
        .cloned()
        .collect();
    if original.alignment() < 64 {
        match kept.iter_mut().find(|(k, _)| k == "general.alignment") {
            Some(kv) => kv.1 = Value::U32(64),
            None => kept.push(("general.alignment".into(), Value::U32(64))),
        }
    }
    kept
}

/// A tensor as the snapshot stores it: 64-byte aligned, same name, shape and size;
/// Q4_1 and Q8_0 matrices of 16 rows or more interleaved (their plain rows restored
/// exactly), every other tensor byte for byte.
pub fn assert_stored(a: &TensorInfo, da: &[u8], b: &TensorInfo, db: &[u8]) {
    assert_eq!((&a.name, &a.dims, a.size), (&b.name, &b.dims, b.size));
    assert_eq!(b.offset % 64, 0, "{} is cache-line aligned", b.name);
    let interleaved =
        matches!(a.ty, GgmlType::Q4_1 | GgmlType::Q8_0) && a.dims.len() == 2 && a.dims[1] >= 16;
    if interleaved {
        let want = match a.ty {
            GgmlType::Q4_1 => GgmlType::Q4_1x16,
            _ => GgmlType::Q8_0x16,
        };
        assert_eq!(b.ty, want, "{}", a.name);
        let mut plain = vec![0u8; db.len()];
        let (cols, rows) = (a.dims[0] as usize, a.dims[1] as usize);
        thaw_kernels::interleave::unpack_matrix(a.ty, cols, rows, db, &mut plain);
        assert!(
            plain == da,
            "{}: interleaved rows restore the source's",
            a.name
        );
    } else {
        assert_eq!(a.ty, b.ty, "{}", a.name);
        assert!(da == db, "{}: bytes as in the source", a.name);
    }
}
