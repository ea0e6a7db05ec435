//! THE KEY TEST: thaw's token ids against llama.cpp's for every line of a 2,400-line
//! mixed corpus (plus multi-line chunks), for both real models, with parse_special off
//! and on, and with add_special. Reference ids come from llama-cpp-python at test time.

mod common;

use std::process::Command;

use serde_json::{Value, json};
use thaw_tokenizer::Tokenizer;

fn cases() -> (Vec<String>, Vec<String>) {
    let lines = common::corpus();
    assert!(lines.len() >= 2000, "corpus has only {} lines", lines.len());
    let mut texts = lines.clone();
    // Multi-line chunks exercise newline handling.
    for chunk in lines.chunks(4).step_by(3) {
        texts.push(chunk.join("\n"));
    }
    texts.push("\n\n\nthree newlines first".into());
    texts.push("ends with newlines\n\n".into());
    texts.push(String::new());
    let bos_texts = lines
        .iter()
        .step_by(37)
        .cloned()
        .chain([String::new()])
        .collect();
    (texts, bos_texts)
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("id list")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn compare(what: &str, texts: &[String], refs: &[Value], ours: impl Fn(&str) -> Vec<u32>) -> usize {
    assert_eq!(texts.len(), refs.len());
    let mut bad = 0;
    for (text, r) in texts.iter().zip(refs) {
        let want = ids(r);
        let got = ours(text);
        if got != want {
            bad += 1;
            if bad <= 8 {
                let at = got
                    .iter()
                    .zip(&want)
                    .position(|(a, b)| a != b)
                    .unwrap_or(got.len().min(want.len()));
                eprintln!(
                    "MISMATCH [{what}] {:?}\n  first difference at token {at}\n  llama.cpp: {:?}\n  thaw:      {:?}",
                    text,
                    &want[at.saturating_sub(2)..want.len().min(at + 6)],
                    &got[at.saturating_sub(2)..got.len().min(at + 6)],
                );
            }
        }
    }
    eprintln!("[{what}] {}/{} match", texts.len() - bad, texts.len());
    bad
}

fn run(model: &str) {
    if !common::python_has("llama_cpp") {
        eprintln!("skipped: llama-cpp-python not installed");
        return;
    }
    let Some(path) = common::model_path(model) else {
        return;
    };
    let Some((_g, tok)) = common::load(model) else {
        return;
    };
    let (texts, bos_texts) = cases();
    let dir = common::scratch_dir(model);
    let cases_path = dir.join("cases.json");
    let out_path = dir.join("ref.json");
    std::fs::write(
        &cases_path,
        json!({"texts": texts, "bos_texts": bos_texts}).to_string(),
    )
    .unwrap();
    let status = Command::new("python3")
        .arg(common::tests_dir().join("llama_ref.py"))
        .arg(&path)
        .arg(&cases_path)
        .arg(&out_path)
        .status()
        .expect("run python3");
    assert!(status.success(), "llama_ref.py failed");
    let refs: Value = serde_json::from_str(&std::fs::read_to_string(&out_path).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);

    let enc = |t: &Tokenizer, s: &str, add: bool, special: bool| t.encode(s, add, special).unwrap();
    let mut bad = 0;
    // Both load paths: built from the GGUF, and thawed from its frozen bytes (what a
    // snapshot stores).
    let thawed = Tokenizer::from_frozen(&tok.to_frozen()).expect("thaw frozen tokenizer");
    for (path, tok) in [("gguf", &tok), ("frozen", &thawed)] {
        bad += compare(
            &format!("{model} {path} plain"),
            &texts,
            refs["plain"].as_array().unwrap(),
            |s| enc(tok, s, false, false),
        );
        bad += compare(
            &format!("{model} {path} parse_special"),
            &texts,
            refs["special"].as_array().unwrap(),
            |s| enc(tok, s, false, true),
        );
        bad += compare(
            &format!("{model} {path} add_special"),
            &bos_texts,
            refs["bos"].as_array().unwrap(),
            |s| enc(tok, s, true, false),
        );
        if let Some(eog) = refs.get("eog") {
            assert_eq!(
                tok.eog_ids(),
                ids(eog).as_slice(),
                "{path}: end-of-generation set differs from llama.cpp"
            );
        }
    }
    assert_eq!(
        bad, 0,
        "{model}: {bad} cases differ from llama.cpp (see stderr)"
    );
}

#[test]
fn smollm2_matches_llama_cpp() {
    run("smollm2");
}

#[test]
fn gemma3_matches_llama_cpp() {
    run("gemma3-270m");
}
