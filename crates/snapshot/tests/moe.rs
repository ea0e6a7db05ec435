//! A mixture-of-experts model (Mixtral's shape, Q8_0 matrices including the experts'
//! 3-D tensors) frozen and thawed: the snapshot computes the same logits bit for bit
//! as the GGUF, its 2-D matrices interleaved for the kernels and the experts stored
//! as they were.

mod common;
#[path = "../../models/tests/common/mod.rs"]
mod synth;

use thaw_gguf::{GgmlType, GgufFile};
use thaw_kernels::ThreadPool;
use thaw_models::{Logits, Model};
use thaw_snapshot::{BuildOptions, Snapshot, build};

#[test]
fn moe_snapshot_is_bit_identical() {
    let spec = synth::Spec {
        q8: true,
        ..synth::Spec::mixtral()
    };
    let mut w = synth::writer(&spec, 3);
    let nv = spec.n_vocab;
    synth::dummy_vocab(&mut w, nv);
    let dir = common::TempDir::new("moe");
    let src = dir.join("mixtral.gguf");
    w.write_to(&src).unwrap();
    let out = dir.join("mixtral.thaw");
    build(&src, &out, &BuildOptions::default()).unwrap();

    let original = GgufFile::open(&src).unwrap();
    let exps = original
        .tensor_info("blk.0.ffn_gate_exps.weight")
        .expect("expert tensor");
    assert_eq!((exps.ty, exps.dims.len()), (GgmlType::Q8_0, 3));
    let snap = Snapshot::open(&out).unwrap();
    let thawed = snap.gguf().unwrap();
    let toks: Vec<u32> = (0..9).map(|i| ((i * 11 + 5) % nv) as u32).collect();
    let logits = |f: &GgufFile| {
        let model = Model::load(f).unwrap();
        assert_eq!(model.config().moe.map(|m| m.n_expert), Some(4));
        let mut cache = model.new_cache(32).unwrap();
        model
            .forward(&ThreadPool::new(2), &mut cache, &toks, Logits::Last)
            .unwrap()
    };
    let (want, got) = (logits(&original), logits(&thawed));
    assert!(want.iter().all(|x| x.is_finite()) && want.iter().any(|&x| x != 0.0));
    let same = want
        .iter()
        .zip(&got)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "snapshot logits differ from the GGUF's");
}
