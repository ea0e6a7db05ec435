//! Build, open, verify and inspect on a small synthetic model, and every way a damaged
//! or foreign file is refused: a clear error naming the file, never a panic.

mod common;

use common::*;
use thaw_gguf::GgufFile;
use thaw_snapshot::{
    BuildOptions, FORMAT_VERSION, KERNEL_LAYOUT, SECTION_ALIGN, SectionKind, Snapshot,
    SnapshotError, build, is_snapshot,
};

/// A temp dir holding `model.gguf` and its snapshot `model.thaw`.
fn built() -> (TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = TempDir::new("syn");
    let src = dir.join("model.gguf");
    synthetic_gguf(&src);
    let out = dir.join("model.thaw");
    build(&src, &out, &BuildOptions::default()).unwrap();
    (dir, src, out)
}

/// Write `bytes` as a snapshot file and open it.
fn open_bytes(dir: &TempDir, bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
    let p = dir.join("crafted.thaw");
    std::fs::write(&p, bytes).unwrap();
    let r = Snapshot::open(&p);
    if let Err(e) = &r {
        assert!(
            e.to_string().contains("crafted.thaw"),
            "error names the file: {e}"
        );
    }
    r
}

#[test]
fn round_trip_metadata_and_tensor_bytes() {
    let (_dir, src, out) = built();
    let original = GgufFile::open(&src).unwrap();
    let snap = Snapshot::open(&out).unwrap();
    assert_eq!(snap.format_version(), FORMAT_VERSION);
    assert_eq!(snap.kernel_layout(), KERNEL_LAYOUT);
    let g = snap.gguf().unwrap();
    // The tokenizer arrays moved to the TOKENIZER section; the rest is unchanged.
    assert_eq!(
        g.metadata(),
        &common::expected_metadata(&original, &["tokenizer.ggml.tokens"])[..]
    );
    assert_eq!(snap.tokenizer().unwrap().vocab_size(), 3);
    assert_eq!(g.tensors().len(), original.tensors().len());
    let mut interleaved = 0;
    for (a, b) in original.tensors().iter().zip(g.tensors()) {
        assert!(!g.tensor_data(b).is_empty());
        common::assert_stored(a, original.tensor_data(a), b, g.tensor_data(b));
        interleaved += usize::from(b.ty != a.ty);
        // Absolute offsets into the snapshot's own mapping (what thaw-models uses).
        let m = g.mapping();
        assert_eq!(
            &m[b.offset as usize..(b.offset + b.size) as usize],
            g.tensor_data(b)
        );
        assert!(std::sync::Arc::ptr_eq(&m, snap.mapping()));
    }
    assert_eq!(
        interleaved, 2,
        "wq and the embeddings are interleaved, w (2 rows) not"
    );
}

#[test]
fn layout_sections_aligned_meta_and_info() {
    let (_dir, src, out) = built();
    let snap = Snapshot::open(&out).unwrap();
    let sections = snap.sections();
    let kinds: Vec<_> = sections.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [SectionKind::Gguf, SectionKind::Meta, SectionKind::Tokenizer]
    );
    for s in &sections {
        assert_eq!(s.offset % SECTION_ALIGN, 0, "{s:?}");
        assert!(s.offset > 0);
    }
    let src_bytes = std::fs::read(&src).unwrap();
    let meta = snap.meta().unwrap();
    assert_eq!(meta.name, "model");
    assert_eq!(meta.source_size, src_bytes.len() as u64);
    assert_eq!(sections[0].kind, SectionKind::Gguf);
    use sha2::Digest;
    let sha: String = sha2::Sha256::digest(&src_bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(meta.source_sha256, sha);
    assert!(meta.source_path.ends_with("model.gguf"));
    assert!(meta.built_unix > 1_600_000_000);
    let info = snap.info().unwrap();
    assert_eq!(info.architecture.as_deref(), Some("llama"));
    assert_eq!(info.model_name.as_deref(), Some("tiny synthetic"));
    assert_eq!(info.n_tensors, 5);
    let text = info.to_string();
    assert!(
        text.contains("GGUF") && text.contains("META") && text.contains("llama"),
        "{text}"
    );
    let report = snap.verify(false).unwrap();
    assert_eq!(report.bytes, sections.iter().map(|s| s.length).sum::<u64>());
}

#[test]
fn build_records_the_given_name() {
    let dir = TempDir::new("name");
    let src = dir.join("m.gguf");
    synthetic_gguf(&src);
    let out = dir.join("named.thaw");
    let opts = BuildOptions {
        name: Some("my-model".into()),
        ..Default::default()
    };
    let report = build(&src, &out, &opts).unwrap();
    assert_eq!(report.meta.name, "my-model");
    assert_eq!(report.size, std::fs::metadata(&out).unwrap().len());
    assert_eq!(
        Snapshot::open(&out).unwrap().meta().unwrap().name,
        "my-model"
    );
}

#[test]
fn is_snapshot_checks_the_magic() {
    let (dir, src, out) = built();
    assert!(is_snapshot(&out));
    assert!(!is_snapshot(&src));
    assert!(!is_snapshot(dir.join("missing.thaw")));
    let empty = dir.join("empty");
    std::fs::write(&empty, b"").unwrap();
    assert!(!is_snapshot(&empty));
    std::fs::write(&empty, b"THAWSNA").unwrap();
    assert!(!is_snapshot(&empty));
}

#[test]
fn build_refuses_a_bad_source_and_leaves_nothing_behind() {
    let dir = TempDir::new("badsrc");
    let src = dir.join("junk.gguf");
    std::fs::write(&src, b"this is not a model at all").unwrap();
    let out = dir.join("out.thaw");
    let err = build(&src, &out, &BuildOptions::default()).unwrap_err();
    assert!(matches!(err, SnapshotError::Gguf(_)), "{err}");
    assert!(err.to_string().contains("junk.gguf"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "only the source remains: {left:?}");

    let err = build(dir.join("missing.gguf"), &out, &BuildOptions::default()).unwrap_err();
    assert!(err.to_string().contains("missing.gguf"), "{err}");

    let good = dir.join("good.gguf");
    synthetic_gguf(&good);
    let err = build(&good, &good, &BuildOptions::default()).unwrap_err();
    assert!(matches!(err, SnapshotError::OutputIsSource { .. }), "{err}");
    assert!(GgufFile::open(&good).is_ok(), "source untouched");

    let err = build(
        &good,
        dir.join("no/such/dir/x.thaw"),
        &BuildOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, SnapshotError::Io { .. }), "{err}");
}

#[test]
fn truncated_files_are_refused_with_sizes() {
    let (dir, _src, out) = built();
    let bytes = std::fs::read(&out).unwrap();
    let gguf_off = get_u64(&bytes, entry_field(0, 8)) as usize;
    let n = bytes.len() as u64;
    for cut in [
        4,
        10,
        20,
        39,
        41,
        HEADER_LEN + ENTRY_LEN + 3,
        4096,
        gguf_off + 100,
        bytes.len() - 1,
    ] {
        let err = open_bytes(&dir, &bytes[..cut]).unwrap_err();
        match &err {
            SnapshotError::Truncated {
                expected, actual, ..
            } => {
                assert_eq!(*actual, cut as u64, "{err}");
                assert!(*expected > cut as u64 && *expected <= n, "{err}");
            }
            other => panic!("cut at {cut}: expected Truncated, got {other}"),
        }
        assert!(err.to_string().contains("truncated"), "{err}");
    }
    // Cut inside the GGUF section: the message names the section.
    let err = open_bytes(&dir, &bytes[..gguf_off + 100]).unwrap_err();
    assert!(err.to_string().contains("section GGUF"), "{err}");
    assert!(matches!(
        open_bytes(&dir, &[]).unwrap_err(),
        SnapshotError::NotSnapshot { .. }
    ));
}

#[test]
fn wrong_magic_version_and_layout_say_how_to_rebuild() {
    let (dir, src, out) = built();
    let bytes = std::fs::read(&out).unwrap();

    let mut b = bytes.clone();
    b[0] = b'X';
    assert!(matches!(
        open_bytes(&dir, &b).unwrap_err(),
        SnapshotError::NotSnapshot { .. }
    ));
    // A GGUF is not a snapshot.
    let err = Snapshot::open(&src).unwrap_err();
    assert!(matches!(err, SnapshotError::NotSnapshot { .. }), "{err}");

    for version in [0u32, 1, 99] {
        let mut b = bytes.clone();
        put_u32(&mut b, 8, version);
        fix_checksum(&mut b);
        let err = open_bytes(&dir, &b).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, SnapshotError::IncompatibleFormat { found, .. } if found == version));
        assert!(
            msg.contains(&format!("format {version}, this thaw reads 2")),
            "{msg}"
        );
        assert!(msg.contains("thaw snapshot build"), "{msg}");
    }

    for fix in [true, false] {
        let mut b = bytes.clone();
        put_u32(&mut b, 12, 7);
        if fix {
            fix_checksum(&mut b);
        }
        let err = open_bytes(&dir, &b).unwrap_err();
        assert!(
            matches!(
                err,
                SnapshotError::IncompatibleLayout {
                    found: 7,
                    supported: thaw_snapshot::KERNEL_LAYOUT,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("thaw snapshot build"), "{err}");
    }

    // Layout 1 (earlier thaw: GGUF bytes verbatim) is still read.
    let mut b = bytes.clone();
    put_u32(&mut b, 12, thaw_snapshot::LAYOUT_GGML_BLOCKS_V1);
    fix_checksum(&mut b);
    let old = open_bytes(&dir, &b).unwrap();
    assert_eq!(old.kernel_layout(), thaw_snapshot::LAYOUT_GGML_BLOCKS_V1);

    let mut b = bytes.clone();
    put_u64(&mut b, 16, 1 << 5);
    fix_checksum(&mut b);
    let err = open_bytes(&dir, &b).unwrap_err();
    assert!(
        matches!(err, SnapshotError::UnknownFlags { flags: 32, .. }),
        "{err}"
    );
}

#[test]
fn flipped_header_or_table_byte_is_a_corrupt_header() {
    let (dir, _src, out) = built();
    let bytes = std::fs::read(&out).unwrap();
    let table_end = HEADER_LEN + 3 * ENTRY_LEN;
    // Flags, reserved, checksum, then every byte of the table.
    let positions = [16usize, 23, 28, 31, 32, 39]
        .into_iter()
        .chain(HEADER_LEN..table_end);
    for at in positions {
        let mut b = bytes.clone();
        b[at] ^= 0x10;
        let err = open_bytes(&dir, &b).unwrap_err();
        assert!(
            matches!(err, SnapshotError::CorruptHeader { .. }),
            "byte {at}: {err}"
        );
        assert!(err.to_string().contains("corrupt snapshot header"), "{err}");
    }
}

#[test]
fn flipped_section_byte_opens_but_fails_verify_naming_the_section() {
    let (dir, _src, out) = built();
    let bytes = std::fs::read(&out).unwrap();
    for (entry, kind) in [
        (0, SectionKind::Gguf),
        (1, SectionKind::Meta),
        (2, SectionKind::Tokenizer),
    ] {
        let off = get_u64(&bytes, entry_field(entry, 8)) as usize;
        let len = get_u64(&bytes, entry_field(entry, 16)) as usize;
        for at in [off, off + len / 2, off + len - 1] {
            let mut b = bytes.clone();
            b[at] ^= 0x01;
            let snap = open_bytes(&dir, &b).expect("open is lazy: sections are not hashed");
            let err = snap.verify(false).unwrap_err();
            match &err {
                SnapshotError::ChecksumMismatch { kind: k, .. } => assert_eq!(*k, kind, "{err}"),
                other => panic!("expected ChecksumMismatch, got {other}"),
            }
            assert!(
                err.to_string().contains(&format!("section {kind}")),
                "{err}"
            );
        }
    }
    // A byte in the padding between sections belongs to no section: verify passes.
    let mut b = bytes.clone();
    b[HEADER_LEN + 3 * ENTRY_LEN + 10] = 0xFF;
    open_bytes(&dir, &b).unwrap().verify(false).unwrap();
}

#[test]
fn crafted_tables_are_refused() {
    let (dir, _src, out) = built();
    let bytes = std::fs::read(&out).unwrap();
    let gguf_off = get_u64(&bytes, entry_field(0, 8));
    let meta_off = get_u64(&bytes, entry_field(1, 8));
    let tok_off = get_u64(&bytes, entry_field(2, 8));
    let n = bytes.len() as u64;
    type Craft = Box<dyn Fn(&mut Vec<u8>)>;
    type Expect = fn(&SnapshotError) -> bool;
    let cases: Vec<(&str, Craft, Expect)> = vec![
        (
            "overlap",
            Box::new(move |b| put_u64(b, entry_field(1, 8), gguf_off)),
            |e| matches!(e, SnapshotError::CorruptHeader { what, .. } if what.contains("overlap")),
        ),
        (
            "misaligned",
            Box::new(move |b| put_u64(b, entry_field(1, 8), meta_off + 8)),
            |e| matches!(e, SnapshotError::CorruptHeader { what, .. } if what.contains("multiple")),
        ),
        (
            "over the header",
            Box::new(|b| put_u64(b, entry_field(0, 8), 0)),
            |e| matches!(e, SnapshotError::CorruptHeader { what, .. } if what.contains("header")),
        ),
        (
            "past the end",
            Box::new(move |b| put_u64(b, entry_field(1, 16), n)),
            |e| matches!(e, SnapshotError::Truncated { what, .. } if what.contains("META")),
        ),
        (
            "offset past the end",
            Box::new(move |b| put_u64(b, entry_field(1, 8), 1 << 40)),
            |e| matches!(e, SnapshotError::Truncated { .. }),
        ),
        (
            "overflow",
            Box::new(|b| put_u64(b, entry_field(0, 16), u64::MAX - 4096)),
            |e| matches!(e, SnapshotError::CorruptHeader { what, .. } if what.contains("overflow")),
        ),
        (
            "no META",
            Box::new(|b| put_u32(b, entry_field(1, 0), 3)),
            |e| {
                matches!(
                    e,
                    SnapshotError::MissingSection {
                        kind: SectionKind::Meta,
                        ..
                    }
                )
            },
        ),
        (
            "two GGUF",
            Box::new(|b| put_u32(b, entry_field(1, 0), 1)),
            |e| matches!(e, SnapshotError::CorruptHeader { what, .. } if what.contains("more than once")),
        ),
        (
            "zero sections",
            Box::new(|b| put_u32(b, 24, 0)),
            |e| matches!(e, SnapshotError::CorruptHeader { what, .. } if what.contains("count")),
        ),
        (
            "huge count",
            Box::new(|b| put_u32(b, 24, u32::MAX)),
            |e| matches!(e, SnapshotError::CorruptHeader { what, .. } if what.contains("count")),
        ),
    ];
    for (name, craft, ok) in cases {
        let mut b = bytes.clone();
        craft(&mut b);
        if name != "zero sections" && name != "huge count" {
            fix_checksum(&mut b);
        }
        let err = open_bytes(&dir, &b).unwrap_err();
        assert!(ok(&err), "{name}: unexpected error {err}");
    }
    // An unknown kind is skipped, the rest still works.
    let mut b = bytes.clone();
    put_u32(&mut b, 24, 4);
    let mut extra = vec![0u8; ENTRY_LEN];
    extra[0..4].copy_from_slice(&77u32.to_le_bytes());
    extra[8..16].copy_from_slice(&(tok_off + SECTION_ALIGN).to_le_bytes());
    b.splice(
        HEADER_LEN + 3 * ENTRY_LEN..HEADER_LEN + 4 * ENTRY_LEN,
        extra,
    );
    b.resize((tok_off + SECTION_ALIGN) as usize, 0);
    fix_checksum(&mut b);
    let snap = open_bytes(&dir, &b).unwrap();
    assert_eq!(snap.sections()[3].kind, SectionKind::Other(77));
    assert_eq!(snap.tokenizer().unwrap().vocab_size(), 3);
    assert_eq!(snap.gguf().unwrap().tensors().len(), 5);
}

#[test]
fn corrupt_meta_json_is_an_error_from_meta_not_a_panic() {
    let (dir, _src, out) = built();
    let mut b = std::fs::read(&out).unwrap();
    let meta_off = get_u64(&b, entry_field(1, 8)) as usize;
    b[meta_off] = b'#';
    let snap = open_bytes(&dir, &b).unwrap();
    let err = snap.meta().unwrap_err();
    assert!(matches!(err, SnapshotError::BadMeta { .. }), "{err}");
    assert!(snap.info().is_err());
}

#[test]
fn corrupt_embedded_gguf_is_a_damaged_section_naming_the_snapshot_and_the_fix() {
    let (dir, _src, out) = built();
    let mut b = std::fs::read(&out).unwrap();
    let gguf_off = get_u64(&b, entry_field(0, 8)) as usize;
    b[gguf_off] = b'X'; // GGUF magic
    let snap = open_bytes(&dir, &b).unwrap();
    let err = snap.gguf().unwrap_err();
    assert!(matches!(err, SnapshotError::DamagedGguf { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("crafted.thaw"), "{msg}");
    assert!(
        msg.contains("thaw snapshot verify") && msg.contains("rebuild"),
        "{msg}"
    );
}

#[test]
fn corrupt_tokenizer_section_is_an_error_saying_how_to_rebuild() {
    let (dir, _src, out) = built();
    let mut b = std::fs::read(&out).unwrap();
    let off = get_u64(&b, entry_field(2, 8)) as usize;
    let len = get_u64(&b, entry_field(2, 16)) as usize;
    for at in [off, off + 9, off + len - 1] {
        let mut c = b.clone();
        c[at] ^= 0x5a;
        let snap = open_bytes(&dir, &c).unwrap();
        let err = snap
            .tokenizer()
            .err()
            .expect("a damaged tokenizer is refused");
        assert!(
            matches!(
                err,
                SnapshotError::BadSection {
                    kind: SectionKind::Tokenizer,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("thaw snapshot build"), "{err}");
    }
    // Without a TOKENIZER section the snapshot is refused at open.
    put_u32(&mut b, entry_field(2, 0), 99);
    fix_checksum(&mut b);
    let err = open_bytes(&dir, &b).unwrap_err();
    assert!(
        matches!(
            err,
            SnapshotError::MissingSection {
                kind: SectionKind::Tokenizer,
                ..
            }
        ),
        "{err}"
    );
}
