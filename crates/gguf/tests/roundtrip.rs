//! Files built by the writer read back exactly: every value type, nested arrays,
//! versions 2 and 3, custom alignments, tensor placement and contents.

mod common;

use thaw_gguf::writer::GgufWriter;
use thaw_gguf::{GgmlType, GgufError, GgufFile, Value};

fn all_values() -> Vec<(&'static str, Value)> {
    vec![
        ("t.u8", Value::U8(200)),
        ("t.i8", Value::I8(-5)),
        ("t.u16", Value::U16(65_000)),
        ("t.i16", Value::I16(-30_000)),
        ("t.u32", Value::U32(4_000_000_000)),
        ("t.i32", Value::I32(-2_000_000_000)),
        ("t.u64", Value::U64(u64::MAX)),
        ("t.i64", Value::I64(i64::MIN)),
        ("t.f32", Value::F32(1.5e-5)),
        ("t.f64", Value::F64(-2.25e300)),
        ("t.true", Value::Bool(true)),
        ("t.false", Value::Bool(false)),
        ("t.str", Value::from("héllo ✓ <|im_start|>")),
        ("t.empty_str", Value::from("")),
        ("t.arr_u8", Value::from(vec![0u8, 255])),
        ("t.arr_i8", Value::from(vec![-128i8, 127])),
        ("t.arr_u16", Value::from(vec![1u16, 2])),
        ("t.arr_i16", Value::from(vec![-1i16])),
        ("t.arr_u32", Value::from(vec![7u32, 8, 9])),
        ("t.arr_i32", Value::from(vec![-7i32])),
        ("t.arr_u64", Value::from(vec![u64::MAX, 0])),
        ("t.arr_i64", Value::from(vec![i64::MAX])),
        ("t.arr_f32", Value::from(vec![0.5f32, -0.25])),
        ("t.arr_f64", Value::from(vec![1e-300f64])),
        ("t.arr_bool", Value::from(vec![true, false, true])),
        ("t.arr_str", Value::from(vec!["a", "", "ĠHello"])),
        ("t.arr_empty", Value::Array(vec![])),
        (
            "t.nested",
            Value::from(vec![vec![vec![1u32], vec![]], vec![vec![2u32, 3]]]),
        ),
        ("t.nested_str", Value::from(vec![vec!["x", "y"], vec!["z"]])),
    ]
}

fn q8_bytes(blocks: usize) -> Vec<u8> {
    (0..blocks * 34).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn every_value_type_and_tensors_round_trip() {
    for version in [2u32, 3] {
        for alignment in [None, Some(1u32), Some(8), Some(64), Some(4096)] {
            let mut w = GgufWriter::new();
            w.version(version);
            if let Some(a) = alignment {
                w.alignment(a);
            }
            for (k, v) in all_values() {
                w.kv(k, v);
            }
            let f32s: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 1.0).collect();
            w.tensor_f32("a.weight", &[4, 3], &f32s);
            w.tensor("b.q8", &[64, 3], GgmlType::Q8_0, q8_bytes(6));
            w.tensor("c.q4k", &[256], GgmlType::Q4K, vec![9u8; 144]);
            w.tensor(
                "d.f16",
                &[5],
                GgmlType::F16,
                vec![1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10],
            );
            let bytes = w.to_bytes();
            let f = GgufFile::from_bytes("mem.gguf", &bytes).unwrap();

            assert_eq!(f.version(), version);
            let align = u64::from(alignment.unwrap_or(32));
            assert_eq!(f.alignment(), align);
            assert_eq!(f.data_offset() % align, 0);
            assert_eq!(f.bytes(), &bytes[..]);

            // Metadata in file order, values intact.
            let expected = all_values();
            let got: Vec<_> = f
                .metadata()
                .iter()
                .filter(|(k, _)| k != "general.alignment")
                .collect();
            assert_eq!(got.len(), expected.len());
            for ((gk, gv), (ek, ev)) in got.iter().zip(&expected) {
                assert_eq!(gk, ek);
                assert_eq!(gv, ev, "{ek}");
                assert_eq!(f.get(ek), Some(ev));
            }

            let names: Vec<_> = f.tensors().iter().map(|t| t.name.as_str()).collect();
            assert_eq!(names, ["a.weight", "b.q8", "c.q4k", "d.f16"]);
            let a = f.tensor("a.weight").unwrap();
            assert_eq!(
                (a.ty, a.dims.as_slice(), a.size),
                (GgmlType::F32, &[4u64, 3][..], 48)
            );
            let back: Vec<f32> = f
                .tensor_data(a)
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            assert_eq!(back, f32s);
            let b = f.tensor("b.q8").unwrap();
            assert_eq!(
                (b.ty, b.size, b.n_elements(), b.n_rows()),
                (GgmlType::Q8_0, 204, 192, 3)
            );
            assert_eq!(f.tensor_data(b), &q8_bytes(6)[..]);
            let c = f.tensor("c.q4k").unwrap();
            assert_eq!(f.tensor_data(c), &[9u8; 144][..]);
            let d = f.tensor("d.f16").unwrap();
            assert_eq!(f.tensor_data(d), &[1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10][..]);
            for t in f.tensors() {
                assert_eq!(t.offset % align, 0, "{}", t.name);
                assert!(t.offset >= f.data_offset());
            }
        }
    }
}

#[test]
fn typed_getters() {
    let mut w = GgufWriter::new();
    for (k, v) in all_values() {
        w.kv(k, v);
    }
    let f = GgufFile::from_bytes("getters.gguf", &w.to_bytes()).unwrap();

    assert_eq!(f.get_str("t.str").unwrap(), "héllo ✓ <|im_start|>");
    assert_eq!(f.get_u64("t.u8").unwrap(), 200);
    assert_eq!(f.get_u64("t.u64").unwrap(), u64::MAX);
    assert_eq!(f.get_u64("t.u32").unwrap(), 4_000_000_000);
    assert_eq!(f.get_f32("t.f32").unwrap(), 1.5e-5);
    assert_eq!(f.get_f32("t.u16").unwrap(), 65_000.0);
    assert_eq!(f.get_f32("t.i32").unwrap(), -2_000_000_000.0);
    assert!(f.get_bool("t.true").unwrap());
    assert!(!f.get_bool("t.false").unwrap());
    assert_eq!(
        f.get_array("t.arr_u32").unwrap(),
        &[Value::U32(7), Value::U32(8), Value::U32(9)]
    );
    assert_eq!(f.get_str_array("t.arr_str").unwrap(), ["a", "", "ĠHello"]);
    assert!(f.get("nope").is_none());

    match f.get_u64("t.i8") {
        Err(GgufError::WrongType {
            key,
            expected,
            found,
            ..
        }) => {
            assert_eq!(
                (key.as_str(), expected, found),
                ("t.i8", "non-negative integer", "i8")
            );
        }
        other => panic!("{other:?}"),
    }
    let err = f.get_str("t.u32").unwrap_err();
    assert!(
        matches!(err, GgufError::WrongType { found: "u32", .. }),
        "{err}"
    );
    assert!(err.to_string().starts_with("getters.gguf: "), "{err}");
    assert!(matches!(
        f.get_bool("t.u8"),
        Err(GgufError::WrongType { .. })
    ));
    assert!(matches!(
        f.get_f32("t.str"),
        Err(GgufError::WrongType { .. })
    ));
    assert!(matches!(
        f.get_array("t.f64"),
        Err(GgufError::WrongType { .. })
    ));
    assert!(matches!(
        f.get_str_array("t.arr_u8"),
        Err(GgufError::WrongType { .. })
    ));
    let err = f.get_u64("llama.block_count").unwrap_err();
    assert!(matches!(err, GgufError::MissingKey { ref key, .. } if key == "llama.block_count"));
    assert!(err.to_string().contains("getters.gguf"), "{err}");
    assert!(matches!(
        f.tensor("x"),
        Err(GgufError::MissingTensor { .. })
    ));
    assert!(f.tensor_info("x").is_none());
}

#[test]
fn unknown_tensor_type_opens_with_unknown_size() {
    let mut w = GgufWriter::new();
    w.tensor_f32("known", &[2], &[1.0, 2.0]);
    w.tensor("iq_mystery", &[256, 2], GgmlType::Other(99), vec![0u8; 64]);
    let f = GgufFile::from_bytes("unk.gguf", &w.to_bytes()).unwrap();
    let t = f.tensor("iq_mystery").unwrap();
    assert_eq!(t.ty, GgmlType::Other(99));
    assert_eq!(t.size, 0);
    assert!(f.tensor_data(t).is_empty());
    let err = f.unsupported_type(t).to_string();
    assert!(
        err.contains("iq_mystery") && err.contains("ggml type 99"),
        "{err}"
    );
}

#[test]
fn open_from_disk_matches_from_bytes() {
    let w = common::small_writer();
    let path = common::temp_path("disk");
    w.write_to(&path).unwrap();
    let f = GgufFile::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(f.path(), path);
    let m = GgufFile::from_bytes("m", &w.to_bytes()).unwrap();
    assert_eq!(f.metadata(), m.metadata());
    assert_eq!(f.bytes(), m.bytes());
    let t = f.tensor("q8").unwrap();
    assert_eq!(f.tensor_data(t), &(0..68u8).collect::<Vec<_>>()[..]);
    // The mapping outlives the file struct.
    let map = f.mapping();
    let (off, size) = (t.offset as usize, t.size as usize);
    drop(f);
    assert_eq!(
        &map[off..off + size],
        m.tensor_data(m.tensor("q8").unwrap())
    );
}

#[test]
fn foreign_tensor_info_gives_empty_view_not_panic() {
    let f = GgufFile::from_bytes("s", &common::small_writer().to_bytes()).unwrap();
    let mut t = f.tensor("q8").unwrap().clone();
    t.offset = u64::MAX - 1;
    assert!(f.tensor_data(&t).is_empty());
    t.offset = 0;
    t.size = u64::MAX;
    assert!(f.tensor_data(&t).is_empty());
}

#[test]
fn missing_file_is_io_error_naming_path() {
    let err = GgufFile::open("/nonexistent/dir/model.gguf").unwrap_err();
    assert!(matches!(err, GgufError::Io { .. }));
    assert!(
        err.to_string().contains("/nonexistent/dir/model.gguf"),
        "{err}"
    );
}
