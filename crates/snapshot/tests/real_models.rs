//! Real models frozen and thawed: every tensor byte and metadata value equals the
//! source GGUF, and a model loaded from the snapshot computes bit-identical logits.

mod common;

use common::TempDir;
use thaw_gguf::GgufFile;
use thaw_kernels::ThreadPool;
use thaw_models::{Logits, Model};
use thaw_snapshot::{BuildOptions, SectionKind, Snapshot, build, is_snapshot};

fn model(name: &str) -> std::path::PathBuf {
    thaw_hub::ensure_model(name).unwrap_or_else(|e| panic!("model {name} unavailable: {e}"))
}

fn logits(file: &GgufFile, tokens: &[u32]) -> Vec<f32> {
    let model = Model::load(file).unwrap();
    let mut cache = model.new_cache(64).unwrap();
    model
        .forward(&ThreadPool::new(1), &mut cache, tokens, Logits::Last)
        .unwrap()
}

fn round_trip(name: &str, tokens: &[u32]) {
    let src = model(name);
    let dir = TempDir::new(name);
    let out = dir.join(&format!("{name}.thaw"));
    let report = build(&src, &out, &BuildOptions::default()).unwrap();
    assert!(is_snapshot(&out));
    assert_eq!(
        report.meta.source_size,
        std::fs::metadata(&src).unwrap().len()
    );

    let original = GgufFile::open(&src).unwrap();
    let snap = Snapshot::open(&out).unwrap();
    let thawed = snap.gguf().unwrap();
    let kept = common::expected_metadata(
        &original,
        &[
            "tokenizer.ggml.tokens",
            "tokenizer.ggml.scores",
            "tokenizer.ggml.token_type",
            "tokenizer.ggml.merges",
        ],
    );
    assert_eq!(
        thawed.metadata(),
        &kept[..],
        "metadata minus the tokenizer arrays"
    );
    // The frozen tokenizer encodes like one built from the GGUF.
    let built_tok = thaw_tokenizer::Tokenizer::from_gguf(&original).unwrap();
    let frozen_tok = snap.tokenizer().unwrap();
    for text in [
        "Hello world, 12345!",
        "<|im_start|>user\nnaïve café<|im_end|>",
    ] {
        assert_eq!(
            frozen_tok.encode(text, true, true).unwrap(),
            built_tok.encode(text, true, true).unwrap()
        );
    }
    assert_eq!(thawed.tensors().len(), original.tensors().len());
    for (a, b) in original.tensors().iter().zip(thawed.tensors()) {
        common::assert_stored(a, original.tensor_data(a), b, thawed.tensor_data(b));
    }
    snap.verify(false).unwrap();
    assert_eq!(snap.sections()[0].kind, SectionKind::Gguf);

    let want = logits(&original, tokens);
    let got = logits(&thawed, tokens);
    assert_eq!(want.len(), got.len());
    let differ = want
        .iter()
        .zip(&got)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(
        differ, 0,
        "{differ} logits differ between GGUF and snapshot"
    );
    assert!(want.iter().any(|&x| x != 0.0) && want.iter().all(|x| x.is_finite()));
}

#[test]
fn smollm2_snapshot_is_bit_identical() {
    round_trip("smollm2", &[1, 9690, 28, 1073, 314, 260, 3458, 47, 216]);
}

#[test]
fn gemma3_snapshot_is_bit_identical() {
    round_trip("gemma3-270m", &[2, 9259, 236764, 1217, 659, 611, 236881]);
}
