//! The forward pass against an independent float64 numpy implementation
//! (`numpy_ref.py`) on tiny random F32 models of each family, so no quantization
//! noise hides a structural error (RoPE pairing, GQA head mapping, biases, Gemma's
//! norms, sliding window). Skipped, with the reason printed, without python3 + the
//! `gguf` and `numpy` packages.

mod common;

use std::process::Command;

use common::{Spec, rel_diff};
use thaw_kernels::ThreadPool;
use thaw_models::{Logits, Model};

fn python_ready() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import gguf, numpy"])
        .output();
    matches!(ok, Ok(o) if o.status.success())
}

#[test]
fn forward_matches_float64_reference() {
    if !python_ready() {
        eprintln!("SKIP: python3 with the gguf and numpy packages is not available");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/numpy_ref.py");
    let dir = std::env::temp_dir().join(format!("thaw-models-ref-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pool = ThreadPool::new(2);
    for spec in [
        Spec::llama(),
        Spec::qwen2(),
        Spec::qwen3(),
        Spec::smollm3(),
        Spec::gemma3(),
        Spec::mixtral(),
        Spec::qwen3moe(),
    ] {
        let w = common::writer(&spec, 11);
        let path = dir.join(format!("{}-{}.gguf", spec.arch, spec.experts.0));
        w.write_to(&path).unwrap();
        // Longer than Gemma's test window (5), so local layers really slide.
        let toks: Vec<u32> = (0..13)
            .map(|i| ((i * 17 + 3) % spec.n_vocab) as u32)
            .collect();
        let want = common::script_logits(script, &path, &toks);
        let model = Model::load(&common::file(&w)).unwrap();
        let mut cache = model.new_cache(32).unwrap();
        let got = model
            .forward(&pool, &mut cache, &toks, Logits::Last)
            .unwrap();
        let d = rel_diff(&got, &want);
        eprintln!(
            "{} ({} experts): relative max difference to float64 reference {d:.2e}",
            spec.arch, spec.experts.0
        );
        // The f16 KV cache and the f16 rounding of Q and of attention weights (as in
        // llama.cpp) cost up to ~2^-11 relative each; a real bug shows as 1e-2 or more.
        assert!(d < 2e-3, "{}: relative difference {d}", spec.arch);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
