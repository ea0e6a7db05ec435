//! Cross-check against llama.cpp (through llama-cpp-python) on the real models:
//! last-token logits of a few plain and chat prompts, and free-running greedy
//! continuations, which must agree token for token for at least the first 16 tokens
//! (issue #2). The reference values are computed at test time by `llamacpp_ref.py`;
//! the test is skipped, with the reason printed, when the model or llama_cpp is
//! unavailable. Every supported family is also checked on a small random model
//! (`synthetic_families_match_llama_cpp`), including those with no real model here
//! (qwen2, qwen3, smollm3).

mod common;

use std::path::PathBuf;
use std::process::Command;

use thaw_gguf::GgufFile;
use thaw_kernels::ThreadPool;
use thaw_models::{Logits, Model};

/// Plain prompts; each model adds one chat-formatted prompt in its own template.
const PLAIN: [&str; 3] = [
    "The capital of France is",
    "Once upon a time, there was a little girl who",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
];
const N_GREEDY: usize = 32;
/// Greedy tokens that must agree with llama.cpp.
const MUST_MATCH: usize = 16;
/// A split before `MUST_MATCH` is tolerated only where llama.cpp itself was at a
/// near-tie (top-2 margin < `NEAR_TIE`), for the models not listed in `EXACT`. Both
/// models reproduce llama.cpp's arithmetic bit for bit on these prompts (README,
/// Correctness), so neither gets the tolerance.
const EXACT: &[&str] = &["smollm2", "gemma3-270m"];
/// Logit gap below which two candidates count as tied: quantized kernels that round
/// activations differently from ggml move logits by up to ~1 (RMS ~0.2) on these
/// models, so a smaller gap can flip either way.
const NEAR_TIE: f32 = 1.0;

struct Reference {
    prompt: Vec<u32>,
    logits: Vec<f32>,
    greedy: Vec<u32>,
    /// llama.cpp's top-1 minus top-2 logit before each greedy token.
    margins: Vec<f32>,
}

/// The cached model, fetched by thaw's hub when missing (skipped when offline).
fn model_path(name: &str) -> Option<PathBuf> {
    match thaw_hub::ensure_model(name) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("SKIP: model {name} is not available: {e}");
            None
        }
    }
}

fn reference(model: &PathBuf, prompts: &[&str]) -> Option<Vec<Reference>> {
    let ok = Command::new("python3")
        .args(["-c", "import llama_cpp, numpy"])
        .output();
    if !matches!(&ok, Ok(o) if o.status.success()) {
        eprintln!("SKIP: python3 with llama_cpp and numpy is not available");
        return None;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/llamacpp_ref.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(model)
        .arg(N_GREEDY.to_string())
        .args(prompts)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "reference script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut refs: Vec<Reference> = (0..prompts.len())
        .map(|_| Reference {
            prompt: vec![],
            logits: vec![],
            greedy: vec![],
            margins: vec![],
        })
        .collect();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(kind), Some(i)) = (it.next(), it.next()) else {
            continue;
        };
        let r = &mut refs[i.parse::<usize>().unwrap()];
        match kind {
            "PROMPT" => r.prompt = it.map(|v| v.parse().unwrap()).collect(),
            "LOGITS" => r.logits = it.map(|v| v.parse().unwrap()).collect(),
            "GREEDY" => r.greedy = it.map(|v| v.parse().unwrap()).collect(),
            "MARGIN" => r.margins = it.map(|v| v.parse().unwrap()).collect(),
            _ => {}
        }
    }
    Some(refs)
}

fn argmax(x: &[f32]) -> u32 {
    x.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &v)| if v > b.1 { (i, v) } else { b },
        )
        .0 as u32
}

fn correlation(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len() as f64;
    let ma = a.iter().map(|&v| v as f64).sum::<f64>() / n;
    let mb = b.iter().map(|&v| v as f64).sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (x as f64 - ma, y as f64 - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    sab / (saa * sbb).sqrt()
}

fn check(name: &str, chat: &str) {
    let Some(path) = model_path(name) else { return };
    let mut prompts = PLAIN.to_vec();
    prompts.push(chat);
    let Some(refs) = reference(&path, &prompts) else {
        return;
    };
    let model = Model::load(&GgufFile::open(&path).unwrap()).unwrap();
    let pool = ThreadPool::new(2);
    let n_vocab = model.config().n_vocab;
    let mut failures = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        assert!(
            !r.prompt.is_empty() && r.greedy.len() == N_GREEDY && r.margins.len() == N_GREEDY,
            "incomplete reference for prompt {i}"
        );
        // (a) Last-token logits of the prompt.
        let mut cache = model.new_cache(512).unwrap();
        let logits = model
            .forward(&pool, &mut cache, &r.prompt, Logits::Last)
            .unwrap();
        assert_eq!(logits.len(), r.logits.len(), "vocabulary size");
        let max_abs = logits
            .iter()
            .zip(&r.logits)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        let range = r.logits.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let corr = correlation(&logits, &r.logits);

        // (b) Free-running greedy continuation.
        let mut greedy = Vec::with_capacity(N_GREEDY);
        let mut next = argmax(&logits);
        for _ in 0..N_GREEDY {
            greedy.push(next);
            let l = model
                .forward(&pool, &mut cache, &[next], Logits::Last)
                .unwrap();
            next = argmax(&l);
        }
        let agree = greedy
            .iter()
            .zip(&r.greedy)
            .take_while(|(a, b)| a == b)
            .count();

        // (c) Teacher-forced on llama.cpp's continuation: thaw's top-1 at every step
        // where llama.cpp's choice is not a near-tie.
        let mut forced: Vec<u32> = r.prompt.clone();
        forced.extend_from_slice(&r.greedy[..N_GREEDY - 1]);
        cache.clear();
        let all = model
            .forward(&pool, &mut cache, &forced, Logits::All)
            .unwrap();
        let start = r.prompt.len() - 1;
        let mut forced_mismatch = Vec::new();
        for s in 0..N_GREEDY {
            let row = &all[(start + s) * n_vocab..(start + s + 1) * n_vocab];
            if argmax(row) != r.greedy[s] && r.margins[s] >= NEAR_TIE {
                forced_mismatch.push(s);
            }
        }
        eprintln!(
            "{name} prompt {i} ({} tokens): top-1 thaw {} llama.cpp {}, max |Δlogit| {max_abs:.4} \
             (max |logit| {range:.2}), correlation {corr:.6}, greedy agree {agree}/{N_GREEDY}{}",
            r.prompt.len(),
            argmax(&logits),
            argmax(&r.logits),
            if agree < N_GREEDY {
                format!(" (llama.cpp margin at the split: {:.3})", r.margins[agree])
            } else {
                String::new()
            }
        );
        if argmax(&logits) != argmax(&r.logits) {
            failures.push(format!("prompt {i}: top-1 differs"));
        }
        if corr < 0.995 {
            failures.push(format!("prompt {i}: logit correlation {corr}"));
        }
        if !forced_mismatch.is_empty() {
            failures.push(format!(
                "prompt {i}: teacher-forced top-1 differs at clear-margin steps {forced_mismatch:?}"
            ));
        }
        let tolerated = !EXACT.contains(&name) && r.margins[agree.min(N_GREEDY - 1)] < NEAR_TIE;
        if agree < MUST_MATCH && !tolerated {
            failures.push(format!(
                "prompt {i}: greedy diverges at token {agree} (llama.cpp margin {})\n thaw:      {greedy:?}\n llama.cpp: {:?}",
                r.margins[agree], r.greedy
            ));
        }
    }
    assert!(failures.is_empty(), "{name}: {failures:#?}");
}

#[test]
fn smollm2_matches_llama_cpp() {
    check(
        "smollm2",
        "<|im_start|>user\nWhat is the tallest mountain in the world?<|im_end|>\n<|im_start|>assistant\n",
    );
}

#[test]
fn gemma3_matches_llama_cpp() {
    check(
        "gemma3-270m",
        "<start_of_turn>user\nWhat is the tallest mountain in the world?<end_of_turn>\n<start_of_turn>model\n",
    );
}

/// Random small models of every family (f32 weights, so no quantized kernel is
/// involved) against llama.cpp: last-token logits of 13 token ids. SmolLM3's NoPE
/// layers, Granite's four multipliers, Qwen2's biases and NEOX RoPE, Gemma 3's sliding window and norms, and the
/// experts' routing and weights (Mixtral, Qwen3-MoE) each move logits by 1e-1 or
/// more when wrong; f32 summation order differences stay near 1e-5.
#[test]
fn synthetic_families_match_llama_cpp() {
    let ok = Command::new("python3")
        .args(["-c", "import llama_cpp, numpy"])
        .output();
    if !matches!(&ok, Ok(o) if o.status.success()) {
        eprintln!("SKIP: python3 with llama_cpp and numpy is not available");
        return;
    }
    let dir = std::env::temp_dir().join(format!("thaw-llamacpp-syn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pool = ThreadPool::new(2);
    for spec in [
        common::Spec::llama(),
        common::Spec {
            rope_linear: 4.0,
            ..common::Spec::llama()
        },
        common::Spec {
            yarn: Some((4.0, 256)),
            ..common::Spec::llama()
        },
        common::Spec::qwen2(),
        common::Spec::qwen3(),
        common::Spec {
            yarn: Some((4.0, 256)),
            ..common::Spec::qwen3()
        },
        common::Spec::smollm3(),
        common::Spec::granite(),
        common::Spec::granitemoe(),
        common::Spec::gemma2(),
        common::Spec::gemma3(),
        // Gemma 3 4B and larger: linear RoPE scaling on the global layers only.
        common::Spec {
            rope_linear: 8.0,
            ..common::Spec::gemma3()
        },
        common::Spec::mixtral(),
        common::Spec {
            q8: true,
            ..common::Spec::mixtral()
        },
        common::Spec::qwen3moe(),
        common::Spec {
            q8: true,
            ..common::Spec::qwen3moe()
        },
    ] {
        let mut w = common::writer(&spec, 11);
        // The ids below are fed directly, so any well-formed vocabulary does.
        let nv = spec.n_vocab;
        common::dummy_vocab(&mut w, nv);
        let mut label = match spec.experts.0 {
            0 => spec.arch.to_string(),
            n => format!("{} ({n} experts, {} per token)", spec.arch, spec.experts.1),
        };
        if spec.q8 {
            label.push_str(", Q8_0");
        }
        if spec.rope_linear > 0.0 {
            label.push_str(&format!(", linear RoPE scaling {}", spec.rope_linear));
        }
        if let Some((f, orig)) = spec.yarn {
            label.push_str(&format!(", YaRN {f} from {orig}"));
        }
        let path = dir.join(format!(
            "{}-{}.gguf",
            label.replace([' ', ',', '(', ')'], "_"),
            0
        ));
        w.write_to(&path).unwrap();
        // Longer than Gemma's test window (5), so its local layers really slide.
        let toks: Vec<u32> = (0..13).map(|i| ((i * 17 + 3) % nv) as u32).collect();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/llamacpp_ids.py");
        let want = common::script_logits(script, &path, &toks);
        let model = Model::load(&common::file(&w)).unwrap();
        let mut cache = model.new_cache(32).unwrap();
        let got = model
            .forward(&pool, &mut cache, &toks, Logits::Last)
            .unwrap();
        assert_eq!(got.len(), want.len(), "{}", label);
        let diff = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        let scale = want.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
        eprintln!(
            "{}: max |thaw - llama.cpp| {diff:.2e} (largest logit {scale:.2})",
            label
        );
        assert!(
            diff <= 5e-4 * scale,
            "{}: logits differ from llama.cpp by {diff} (largest {scale})",
            label
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
