//! Hostile and broken input: every case is an error (with a useful message), never a
//! panic, an out-of-bounds view or a huge allocation.

mod common;

use proptest::prelude::*;
use thaw_gguf::writer::GgufWriter;
use thaw_gguf::{GgmlType, GgufError, GgufFile};

fn corrupt_msg(bytes: &[u8]) -> String {
    match GgufFile::from_bytes("bad.gguf", bytes) {
        Err(e @ GgufError::Corrupt { .. }) => {
            let s = e.to_string();
            assert!(s.starts_with("bad.gguf: "), "{s}");
            s
        }
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("expected an error, file opened"),
    }
}

/// Byte offset of the header field that follows the first occurrence of `needle`.
fn after(bytes: &[u8], needle: &[u8]) -> usize {
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
        + needle.len()
}

fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// If a (possibly mutated) buffer opens, every view must lie inside it.
fn check_opened(f: &GgufFile) {
    let len = f.bytes().len() as u64;
    for t in f.tensors() {
        assert!(t.offset.checked_add(t.size).unwrap() <= len);
        assert_eq!(f.tensor_data(t).len() as u64, t.size);
    }
    for (_, v) in f.metadata() {
        let _ = v.to_string();
    }
}

#[test]
fn every_truncation_before_the_data_is_an_error() {
    let bytes = common::small_writer().to_bytes();
    let full = GgufFile::from_bytes("full", &bytes).unwrap();
    let data_offset = full.data_offset() as usize;
    assert!(
        data_offset > 200,
        "the header should be non-trivial ({data_offset})"
    );
    for n in 0..data_offset {
        let r = GgufFile::from_bytes("cut.gguf", &bytes[..n]);
        assert!(r.is_err(), "prefix of {n} bytes opened");
    }
    // Cutting into the tensor data is an error too, naming the tensor.
    let last_end = full
        .tensors()
        .iter()
        .map(|t| t.offset + t.size)
        .max()
        .unwrap() as usize;
    for n in data_offset..last_end {
        let msg = corrupt_msg(&bytes[..n]);
        assert!(
            msg.contains("extends past the end of the file") || msg.contains("data section"),
            "{msg}"
        );
    }
    assert!(GgufFile::from_bytes("ok", &bytes[..last_end]).is_ok());
}

#[test]
fn truncated_files_on_disk_are_errors() {
    let bytes = common::small_writer().to_bytes();
    let data_offset = GgufFile::from_bytes("full", &bytes).unwrap().data_offset() as usize;
    let path = common::temp_path("trunc");
    // Every 7th prefix keeps the test quick while covering every header field kind.
    for n in (0..data_offset).step_by(7).chain([0, 1, 3, 4, 23, 24]) {
        std::fs::write(&path, &bytes[..n]).unwrap();
        let err = GgufFile::open(&path).unwrap_err();
        assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");
    }
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn bad_magic_and_versions() {
    let mut bytes = common::small_writer().to_bytes();
    bytes[0] = b'X';
    assert!(matches!(
        GgufFile::from_bytes("m", &bytes),
        Err(GgufError::BadMagic { .. })
    ));
    assert!(matches!(
        GgufFile::from_bytes("m", b"PK\x03"),
        Err(GgufError::BadMagic { .. })
    ));
    assert!(matches!(
        GgufFile::from_bytes("m", b"GG"),
        Err(GgufError::Corrupt { .. })
    ));
    for version in [0u32, 1, 4, 99, u32::MAX, 0x0300_0000] {
        let mut w = common::small_writer();
        w.version(version);
        match GgufFile::from_bytes("v", &w.to_bytes()) {
            Err(GgufError::UnsupportedVersion { version: v, .. }) => assert_eq!(v, version),
            other => panic!("version {version}: {other:?}"),
        }
    }
}

#[test]
fn huge_counts_are_errors_without_allocation() {
    let base = common::small_writer().to_bytes();
    // tensor_count at 8, kv_count at 16.
    for at in [8, 16] {
        for v in [u64::MAX, 1 << 60, 1 << 32] {
            let mut b = base.clone();
            put_u64(&mut b, at, v);
            let msg = corrupt_msg(&b);
            assert!(msg.contains(&v.to_string()), "{msg}");
        }
    }
    // The tokens array's element count.
    let mut b = base.clone();
    let at = after(&b, b"tokenizer.ggml.tokens") + 4 + 4;
    put_u64(&mut b, at, u64::MAX);
    assert!(corrupt_msg(&b).contains("tokenizer.ggml.tokens"));
    // A string length.
    let mut b = base.clone();
    let at = after(&b, b"general.architecture") + 4;
    put_u64(&mut b, at, u64::MAX);
    assert!(corrupt_msg(&b).contains("string length"));
    // A key length.
    let mut b = base.clone();
    put_u64(&mut b, 24, 1 << 62);
    corrupt_msg(&b);
    // A key length that still fits the file: the "key" runs over the next entries'
    // binary fields, and the message names the entry instead of printing them.
    let mut b = base;
    let first = u64::from_le_bytes(b[24..32].try_into().unwrap());
    put_u64(&mut b, 24, first + 40);
    let msg = corrupt_msg(&b);
    assert!(msg.contains("metadata entry #0 is not a key"), "{msg}");
    assert!(!msg.contains('\0') && msg.len() < 300, "{msg}");
}

#[test]
fn tensor_past_eof_names_tensor_and_says_truncated() {
    let mut w = GgufWriter::new();
    w.tensor_f32("ok", &[2], &[1.0, 2.0]);
    // Declares 64×64 f32 (16 KiB) but carries 16 bytes.
    w.tensor(
        "blk.3.attn_q.weight",
        &[64, 64],
        GgmlType::F32,
        vec![0u8; 16],
    );
    let msg = corrupt_msg(&w.to_bytes());
    assert!(msg.contains("tensor `blk.3.attn_q.weight` data ["), "{msg}");
    assert!(msg.contains("extends past the end of the file"), "{msg}");
    assert!(msg.contains("download it again"), "{msg}");
}

#[test]
fn invalid_tensor_shapes() {
    let cases: Vec<(Vec<u64>, GgmlType, &str)> = vec![
        (vec![], GgmlType::F32, "0 dimensions"),
        (vec![1, 1, 1, 1, 1], GgmlType::F32, "5 dimensions"),
        (vec![4, 0], GgmlType::F32, "invalid dimension 1: 0"),
        (vec![1 << 63], GgmlType::F32, "invalid dimension 0"),
        (
            vec![1 << 32, 1 << 32, 2],
            GgmlType::F32,
            "too many elements",
        ),
        (
            vec![33, 2],
            GgmlType::Q8_0,
            "not a multiple of the type's block size 32",
        ),
        (vec![128], GgmlType::Q4K, "block size 256"),
        (vec![1 << 40, 1 << 22], GgmlType::F32, "byte size overflows"),
    ];
    for (dims, ty, want) in cases {
        let mut w = GgufWriter::new();
        w.tensor("t", &dims, ty, vec![0u8; 64]);
        let msg = corrupt_msg(&w.to_bytes());
        assert!(
            msg.contains("tensor `t`") && msg.contains(want),
            "{dims:?}: {msg}"
        );
    }
}

#[test]
fn misaligned_tensor_offset() {
    let mut w = GgufWriter::new();
    w.tensor_f32("a", &[1], &[1.0])
        .tensor_f32("b", &[1], &[2.0]);
    let mut b = w.to_bytes();
    // b's offset is the u64 just before the data section padding; it is 32.
    let at = after(&b, b"\x01\x00\x00\x00\x00\x00\x00\x00b\x01\x00\x00\x00") + 8 + 4;
    assert_eq!(u64::from_le_bytes(b[at..at + 8].try_into().unwrap()), 32);
    put_u64(&mut b, at, 4);
    assert!(corrupt_msg(&b).contains("offset 4 is not a multiple of the alignment 32"));
}

#[test]
fn bad_alignment_values() {
    for a in [0u32, 3, 48] {
        let mut w = common::small_writer();
        w.alignment(a);
        assert!(corrupt_msg(&w.to_bytes()).contains("power of two"), "{a}");
    }
    let mut w = common::small_writer();
    w.kv("general.alignment", 32u64);
    assert!(matches!(
        GgufFile::from_bytes("a", &w.to_bytes()),
        Err(GgufError::WrongType {
            expected: "u32",
            found: "u64",
            ..
        })
    ));
}

#[test]
fn duplicates_are_errors() {
    let mut w = common::small_writer();
    w.kv("llama.block_count", 3u32);
    assert!(corrupt_msg(&w.to_bytes()).contains("`llama.block_count` appears more than once"));
    let mut w = common::small_writer();
    w.tensor_f32("norm.weight", &[1], &[0.0]);
    assert!(corrupt_msg(&w.to_bytes()).contains("tensor `norm.weight` appears more than once"));
}

#[test]
fn invalid_utf8_names_the_key() {
    let mut w = GgufWriter::new();
    w.kv("general.name", "ab");
    let mut b = w.to_bytes();
    let at = after(&b, b"ab") - 2;
    b[at] = 0xff;
    let msg = corrupt_msg(&b);
    assert!(
        msg.contains("`general.name`") && msg.contains("UTF-8"),
        "{msg}"
    );

    let mut w = GgufWriter::new();
    w.kv("tokens", vec!["ok", "zz"]);
    let mut b = w.to_bytes();
    let at = after(&b, b"zz") - 1;
    b[at] = 0xc3;
    assert!(corrupt_msg(&b).contains("`tokens`"));
}

#[test]
fn unknown_value_types_and_deep_nesting() {
    let mut w = GgufWriter::new();
    w.kv("k", 5u32);
    let mut b = w.to_bytes();
    let at = after(&b, b"k");
    b[at] = 13;
    assert!(corrupt_msg(&b).contains("unknown value type 13"));

    // 8 levels are fine, 9 are not.
    let mut v = thaw_gguf::Value::from(vec![1u8]);
    for _ in 0..7 {
        v = thaw_gguf::Value::Array(vec![v]);
    }
    let mut w = GgufWriter::new();
    w.kv("deep", v.clone());
    assert!(GgufFile::from_bytes("d", &w.to_bytes()).is_ok());
    let mut w = GgufWriter::new();
    w.kv("deep", thaw_gguf::Value::Array(vec![v]));
    assert!(corrupt_msg(&w.to_bytes()).contains("more than 8 deep"));
}

#[test]
fn empty_file_is_an_error() {
    let path = common::temp_path("empty");
    std::fs::write(&path, b"").unwrap();
    let err = GgufFile::open(&path).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    assert!(err.to_string().contains("empty"), "{err}");
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Byte { at: usize, v: u8 },
    U64 { at: usize, v: u64 },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop_oneof![
        any::<u64>(),
        Just(0u64),
        Just(u64::MAX),
        Just(1 << 32),
        0u64..64,
        Just(i64::MAX as u64),
    ];
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, v)| Mutation::Byte { at, v }),
        (any::<usize>(), interesting).prop_map(|(at, v)| Mutation::U64 { at, v }),
    ]
}

/// Applies mutations within the first `limit` bytes; half of them land in the first
/// KiB, where the header's counts, types and lengths live.
fn apply(bytes: &mut [u8], muts: &[Mutation], limit: usize) {
    for m in muts {
        let (Mutation::Flip { at, .. } | Mutation::Byte { at, .. } | Mutation::U64 { at, .. }) = *m;
        let limit = if at % 2 == 0 { limit.min(1024) } else { limit }.min(bytes.len());
        match *m {
            Mutation::Flip { at, bit } => bytes[at % limit] ^= 1 << bit,
            Mutation::Byte { at, v } => bytes[at % limit] = v,
            Mutation::U64 { at, v } => {
                let at = at % (limit - 8);
                bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn mutated_writer_files_never_panic(muts in prop::collection::vec(mutation(), 1..6)) {
        let mut bytes = common::small_writer().to_bytes();
        let n = bytes.len();
        apply(&mut bytes, &muts, n);
        if let Ok(f) = GgufFile::from_bytes("mut.gguf", &bytes) {
            check_opened(&f);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn mutated_real_header_prefix_never_panics(muts in prop::collection::vec(mutation(), 1..6)) {
        let Some(path) = common::model_path("smollm2") else { return Ok(()) };
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(std::fs::File::open(&path).unwrap(), 64 * 1024), &mut bytes).unwrap();
        apply(&mut bytes, &muts, 64 * 1024);
        let tmp = common::temp_path("real-mut");
        std::fs::write(&tmp, &bytes).unwrap();
        let r = GgufFile::open(&tmp);
        std::fs::remove_file(&tmp).unwrap();
        match r {
            Ok(f) => check_opened(&f),
            // A 64 KiB prefix of a 98 MB model cannot hold its tensors.
            Err(e) => prop_assert!(e.to_string().contains(tmp.to_str().unwrap())),
        }
    }
}
