//! `GgufFile::from_mapping`: a GGUF embedded in a larger mapping (a snapshot section)
//! reads like the file itself, with tensor offsets absolute in the mapping, and a range
//! outside the mapping or a truncated embedded file is an error, not a panic.

use std::sync::Arc;

use thaw_gguf::writer::GgufWriter;
use thaw_gguf::{GgufError, GgufFile};

fn sample() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.kv("general.architecture", "llama")
        .kv("general.name", "embedded")
        .tensor_f32("a", &[4], &[1.0, 2.0, 3.0, 4.0])
        .tensor_f32("b", &[2, 3], &[-1.0, -2.0, -3.0, -4.0, -5.0, -6.0]);
    w.to_bytes()
}

/// `prefix` junk bytes, then the GGUF, then `suffix` junk bytes, in a read-only mapping.
fn embedded(gguf: &[u8], prefix: usize, suffix: usize) -> Arc<memmap2::Mmap> {
    let total = prefix + gguf.len() + suffix;
    let mut anon = memmap2::MmapMut::map_anon(total).unwrap();
    anon[..prefix].fill(0xAB);
    anon[prefix..prefix + gguf.len()].copy_from_slice(gguf);
    anon[prefix + gguf.len()..].fill(0xCD);
    Arc::new(anon.make_read_only().unwrap())
}

#[test]
fn embedded_file_reads_like_the_original() {
    let bytes = sample();
    let original = GgufFile::from_bytes("orig.gguf", &bytes).unwrap();
    let prefix = 4096;
    let map = embedded(&bytes, prefix, 100);
    let inner =
        GgufFile::from_mapping("x.thaw", map.clone(), prefix as u64, bytes.len() as u64).unwrap();
    assert_eq!(inner.path(), std::path::Path::new("x.thaw"));
    assert_eq!(inner.get_str("general.name").unwrap(), "embedded");
    assert_eq!(inner.data_offset(), original.data_offset() + prefix as u64);
    assert_eq!(inner.tensors().len(), original.tensors().len());
    for (a, b) in original.tensors().iter().zip(inner.tensors()) {
        assert_eq!(a.name, b.name);
        assert_eq!(b.offset, a.offset + prefix as u64);
        assert_eq!(original.tensor_data(a), inner.tensor_data(b));
        // What thaw-models does: index the shared mapping with the absolute offset.
        let m = inner.mapping();
        assert_eq!(
            &m[b.offset as usize..(b.offset + b.size) as usize],
            original.tensor_data(a)
        );
    }
    assert!(
        Arc::ptr_eq(&inner.mapping(), &map),
        "no copy of the mapping"
    );
}

#[test]
fn range_outside_the_mapping_is_an_error() {
    let bytes = sample();
    let map = embedded(&bytes, 64, 0);
    for (off, len) in [
        (64, bytes.len() as u64 + 1),
        (u64::MAX, 1),
        (0, u64::MAX),
        (map.len() as u64 + 1, 0),
    ] {
        let err = GgufFile::from_mapping("x.thaw", map.clone(), off, len).unwrap_err();
        assert!(matches!(err, GgufError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("x.thaw"), "{err}");
    }
}

#[test]
fn truncated_embedded_range_is_an_error() {
    let bytes = sample();
    // The whole file is mapped, but the declared range stops before the last tensor ends:
    // the tensors must be checked against the range, not the mapping.
    let map = embedded(&bytes, 32, 1024);
    let original = GgufFile::from_bytes("orig.gguf", &bytes).unwrap();
    let data_end = original
        .tensors()
        .iter()
        .map(|t| t.offset + t.size)
        .max()
        .unwrap() as usize;
    for cut in [1, 16, bytes.len() / 2, data_end - 1] {
        let err = GgufFile::from_mapping("x.thaw", map.clone(), 32, cut as u64).unwrap_err();
        assert!(matches!(err, GgufError::Corrupt { .. }), "cut {cut}: {err}");
    }
}

#[test]
fn map_file_maps_the_whole_file_and_names_a_missing_one() {
    let bytes = sample();
    let dir = std::env::temp_dir().join(format!("thaw-gguf-map-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let map = thaw_gguf::map_file(&path).unwrap();
    assert_eq!(&map[..], &bytes[..]);
    let file = GgufFile::from_mapping(&path, map, 0, bytes.len() as u64).unwrap();
    assert_eq!(file.tensors().len(), 2);
    let missing = dir.join("nope.gguf");
    let err = thaw_gguf::map_file(&missing).unwrap_err();
    assert!(err.to_string().contains("nope.gguf"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
