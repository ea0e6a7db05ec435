//! Forward-pass invariants on tiny random models (no model file needed): a prompt run
//! at once equals the same prompt run token by token, cache truncation rolls back
//! exactly, and bad input is a typed error.

mod common;

use common::{Spec, argmax, model_file, rel_diff};
use thaw_gguf::GgmlType;
use thaw_kernels::ThreadPool;
use thaw_models::{Logits, Model, ModelError};

fn prompt(n: usize, n_vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 31 + 7) % n_vocab) as u32).collect()
}

fn specs() -> [Spec; 3] {
    [Spec::llama(), Spec::qwen2(), Spec::gemma3()]
}

#[test]
fn batched_prefill_equals_token_by_token() {
    let pool = ThreadPool::new(2);
    for spec in specs() {
        let model = Model::load(&model_file(&spec, 1)).unwrap();
        let toks = prompt(13, spec.n_vocab);
        let mut cache = model.new_cache(64).unwrap();
        let all = model
            .forward(&pool, &mut cache, &toks, Logits::All)
            .unwrap();
        assert_eq!(cache.len(), toks.len());
        let n_vocab = model.config().n_vocab;
        assert_eq!(all.len(), toks.len() * n_vocab);

        let mut inc = model.new_cache(64).unwrap();
        for (i, &t) in toks.iter().enumerate() {
            let one = model.forward(&pool, &mut inc, &[t], Logits::Last).unwrap();
            let row = &all[i * n_vocab..(i + 1) * n_vocab];
            let d = rel_diff(&one, row);
            assert!(
                d < 1e-4,
                "{}: token {i}: relative difference {d}",
                spec.arch
            );
        }
        // Last == last row of All (the last layer's feed-forward block then runs for
        // that row only).
        let mut c3 = model.new_cache(64).unwrap();
        let last = model.forward(&pool, &mut c3, &toks, Logits::Last).unwrap();
        assert!(rel_diff(&last, &all[(toks.len() - 1) * n_vocab..]) < 1e-6);
        // A pass that wants no logits (it skips the last layer after attention) still
        // leaves the whole cache: continuing from it gives the same logits.
        let mut c4 = model.new_cache(64).unwrap();
        assert!(
            model
                .forward(&pool, &mut c4, &toks[..7], Logits::None)
                .unwrap()
                .is_empty()
        );
        let rest = model
            .forward(&pool, &mut c4, &toks[7..], Logits::Last)
            .unwrap();
        assert_eq!(rest, last, "{}", spec.arch);
    }
}

#[test]
fn logits_depend_on_context_and_window() {
    // Guards against attention that ignores earlier positions.
    let pool = ThreadPool::new(2);
    for spec in specs() {
        let model = Model::load(&model_file(&spec, 2)).unwrap();
        let mut a = prompt(8, spec.n_vocab);
        let mut c = model.new_cache(32).unwrap();
        let la = model.forward(&pool, &mut c, &a, Logits::Last).unwrap();
        a[1] = (a[1] + 1) % spec.n_vocab as u32;
        c.clear();
        let lb = model.forward(&pool, &mut c, &a, Logits::Last).unwrap();
        assert!(
            rel_diff(&la, &lb) > 1e-4,
            "{}: earlier token had no effect",
            spec.arch
        );
    }
}

#[test]
fn truncate_and_recompute_gives_the_same_logits() {
    let pool = ThreadPool::new(2);
    for spec in specs() {
        let model = Model::load(&model_file(&spec, 3)).unwrap();
        let toks = prompt(12, spec.n_vocab);
        let mut cache = model.new_cache(32).unwrap();
        let full = model
            .forward(&pool, &mut cache, &toks, Logits::Last)
            .unwrap();
        // Roll back to a prefix, feed different tokens, roll back again, redo.
        cache.truncate(7);
        assert_eq!(cache.len(), 7);
        model
            .forward(&pool, &mut cache, &[1, 2, 3], Logits::Last)
            .unwrap();
        cache.truncate(7);
        let again = model
            .forward(&pool, &mut cache, &toks[7..], Logits::Last)
            .unwrap();
        assert!(rel_diff(&again, &full) < 1e-5, "{}", spec.arch);
        cache.clear();
        assert_eq!(cache.len(), 0);
        let fresh = model
            .forward(&pool, &mut cache, &toks, Logits::Last)
            .unwrap();
        assert!(rel_diff(&fresh, &full) < 1e-6);
    }
}

#[test]
fn prompts_longer_than_a_batch_are_chunked_consistently() {
    let pool = ThreadPool::new(2);
    let spec = Spec::gemma3();
    let model = Model::load(&model_file(&spec, 4)).unwrap();
    let n_vocab = model.config().n_vocab;
    let toks = prompt(600, spec.n_vocab);
    let mut c1 = model.new_cache(640).unwrap();
    let all = model.forward(&pool, &mut c1, &toks, Logits::All).unwrap();
    let mut c2 = model.new_cache(640).unwrap();
    model
        .forward(&pool, &mut c2, &toks[..100], Logits::Last)
        .unwrap();
    let rest = model
        .forward(&pool, &mut c2, &toks[100..], Logits::All)
        .unwrap();
    assert!(rel_diff(&rest, &all[100 * n_vocab..]) < 1e-4);
    assert_eq!(
        argmax(&rest[rest.len() - n_vocab..]),
        argmax(&all[all.len() - n_vocab..])
    );
}

#[test]
fn bad_input_is_a_typed_error() {
    let pool = ThreadPool::new(1);
    let spec = Spec::llama();
    let model = Model::load(&model_file(&spec, 5)).unwrap();
    assert!(matches!(
        model.new_cache(4096),
        Err(ModelError::ContextTooLarge { .. })
    ));
    let mut cache = model.new_cache(8).unwrap();
    let err = model
        .forward(&pool, &mut cache, &[1, 2, 999], Logits::Last)
        .unwrap_err();
    assert!(
        matches!(err, ModelError::BadToken { token: 999, .. }),
        "{err}"
    );
    assert_eq!(cache.len(), 0);
    let err = model
        .forward(&pool, &mut cache, &prompt(9, 67), Logits::Last)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("prompt of 9 tokens does not fit the context of 8"),
        "{err}"
    );
    model
        .forward(&pool, &mut cache, &prompt(6, 67), Logits::Last)
        .unwrap();
    let err = model
        .forward(&pool, &mut cache, &prompt(3, 67), Logits::Last)
        .unwrap_err();
    assert!(matches!(err, ModelError::ContextFull { used: 6, .. }));
    // A cache of another model is refused.
    let other = Model::load(&model_file(&Spec::gemma3(), 5)).unwrap();
    let mut oc = other.new_cache(8).unwrap();
    assert!(matches!(
        model.forward(&pool, &mut oc, &[1], Logits::Last),
        Err(ModelError::CacheMismatch(_))
    ));
}

#[test]
fn malformed_models_are_rejected_with_the_tensor_named() {
    let spec = Spec::llama();
    // Missing tensor.
    let w = common::writer_except(&spec, 6, &["blk.1.attn_k.weight"]);
    let err = Model::load(&common::file(&w)).unwrap_err();
    assert!(
        matches!(err, ModelError::MissingTensor(ref n) if n == "blk.1.attn_k.weight"),
        "{err}"
    );
    // Wrong shape: an FFN matrix of the wrong width.
    let mut w = common::writer_except(&spec, 6, &["blk.0.ffn_up.weight"]);
    let (e, ff) = (spec.n_embd as u64, spec.n_ff as u64 - 8);
    w.tensor_f32(
        "blk.0.ffn_up.weight",
        &[e, ff],
        &vec![0.0; (e * ff) as usize],
    );
    let err = Model::load(&common::file(&w)).unwrap_err();
    assert!(
        matches!(err, ModelError::Shape { ref name, .. } if name == "blk.0.ffn_up.weight"),
        "{err}"
    );
    // Unsupported architecture.
    let mut w = thaw_gguf::writer::GgufWriter::new();
    w.kv("general.architecture", "mamba");
    let err = Model::load(&common::file(&w)).unwrap_err();
    assert!(
        matches!(err, ModelError::UnsupportedArch(ref a) if a == "mamba"),
        "{err}"
    );
    // A mixture of experts whose expert tensors are missing names the tensor; an
    // impossible expert count is a config error; experts in a family without them
    // (gemma3) are refused by name.
    let w = common::writer_except(&Spec::mixtral(), 7, &["blk.1.ffn_up_exps.weight"]);
    let err = Model::load(&common::file(&w)).unwrap_err();
    assert!(
        matches!(err, ModelError::MissingTensor(ref n) if n == "blk.1.ffn_up_exps.weight"),
        "{err}"
    );
    let spec = Spec {
        experts: (4, 5),
        ..Spec::mixtral()
    };
    let w = common::writer(&spec, 7);
    let err = Model::load(&common::file(&w)).unwrap_err();
    assert!(
        matches!(err, ModelError::Config(ref m) if m.contains("expert_used_count 5")),
        "{err}"
    );
    // A Granite file without one of its multipliers names the key (llama.cpp
    // requires all four too).
    let w = common::writer_except(&Spec::granite(), 7, &["logit_scale"]);
    let err = Model::load(&common::file(&w)).unwrap_err();
    assert!(
        matches!(err, ModelError::Config(ref m) if m.contains("granite.logit_scale")),
        "{err}"
    );
    let mut w = common::writer(&Spec::gemma3(), 7);
    w.kv("gemma3.expert_count", 8u32);
    let err = Model::load(&common::file(&w)).unwrap_err();
    assert!(
        matches!(err, ModelError::Config(ref m) if m.contains("8 experts")),
        "{err}"
    );
}

#[test]
fn unsupported_tensor_type_names_tensor_and_type() {
    let spec = Spec {
        tied: true,
        ..Spec::llama()
    };
    let (e, v) = (spec.n_embd, spec.n_vocab);
    let (bs, bb) = common::UNSUPPORTED.block_layout().unwrap();
    let mut w = common::writer(&spec, 7);
    w.tensor(
        "output.weight",
        &[e as u64, v as u64],
        common::UNSUPPORTED,
        vec![0u8; e / bs * bb * v],
    );
    let err = Model::load(&common::file(&w)).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            ModelError::UnsupportedType {
                ty: GgmlType::Q8_1,
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("output.weight") && msg.contains("Q8_1"),
        "{msg}"
    );
}
