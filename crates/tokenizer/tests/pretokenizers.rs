//! Every byte-level pre-tokenizer thaw knows against llama.cpp's, without a real
//! vocabulary: a synthetic one holds every substring of the test texts, with a merge
//! for every way of splitting each, so BPE turns each pre-tokenizer piece into exactly
//! one token and never joins two. The token ids then spell out the pieces, and
//! llama.cpp's (llama-cpp-python, vocab only) must equal thaw's.

mod common;

use std::collections::HashMap;
use std::process::Command;

use serde_json::{Value, json};
use thaw_gguf::GgufFile;
use thaw_gguf::writer::GgufWriter;
use thaw_tokenizer::Tokenizer;

/// GPT-2's byte-to-character map (printable bytes stand for themselves).
fn byte_char(b: u8) -> char {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        return char::from(b);
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).expect("in range")
}

fn mapped(text: &str) -> Vec<char> {
    text.bytes().map(byte_char).collect()
}

/// Texts that split differently under the rules: case changes inside words,
/// contractions in both cases, digit runs, punctuation runs with newlines and
/// slashes, whitespace runs, and letters of other scripts.
const TEXTS: &[&str] = &[
    "Hello World! ThisIsCamelCase and HTTPServer",
    "don't I'LL we've YOU'RE it's",
    "1234567 12 3.14159 x=42;",
    "a//b\n\n  c\t\td  \n end ",
    "naïve Über café ÀÉÎ straße",
    "東京 2024年 👋🏽 ok",
    // Greek Extended and letterlike signs (DeepSeek LLM's literal letter class),
    // Cyrillic, Hangul, kana, trailing spaces.
    "\u{1F7D}\u{1FD3} \u{2126}hm 5\u{212A} Привет 한국어 カタカナ ひらがな  ",
    "fn main() {\n    println!(\"hi\");\n}",
];

/// Every name thaw's pre-tokenizer table knows (crates/tokenizer/src/pretok.rs).
const PRE_NAMES: &[&str] = &[
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "pixtral",
    "dbrx",
    "smaug-bpe",
    "qwen2",
    "stablelm2",
    "deepseek-r1-qwen",
    "megrez",
    "tekken",
    "gpt-4o",
    "llama4",
    "smollm",
    "starcoder",
    "refact",
    "command-r",
    "codeshell",
    "exaone",
    "minerva-7b",
    "gpt-2",
    "phi-2",
    "mpt",
    "olmo",
    "jais",
    "jina-es",
    "jina-de",
    "jina-v1-en",
    "jina-v2-es",
    "jina-v2-de",
    "jina-v2-code",
    "roberta-bpe",
    "gigachat",
    "trillion",
    "exaone4",
    "deepseek-llm",
    "deepseek-coder",
    "deepseek-v3",
    "hunyuan-dense",
    "seed-coder",
    "poro-chat",
    "bloom",
    "gpt3-finnish",
    "viking",
    "hunyuan",
    "default",
];

/// See [`synthetic_vocab`].
const UNMERGED: &str = "zqzq";

/// A GGUF whose vocabulary is the 256 byte characters plus every substring of the
/// texts, with merges (every split point of every substring).
fn synthetic_vocab(pre: &str) -> GgufWriter {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    let mut index: HashMap<String, usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i))
        .collect();
    let mut merges = Vec::new();
    for text in TEXTS {
        let c = mapped(text);
        for len in 2..=c.len() {
            for start in 0..=c.len() - len {
                let s: String = c[start..start + len].iter().collect();
                if index.contains_key(&s) {
                    continue;
                }
                index.insert(s.clone(), tokens.len());
                tokens.push(s);
                for k in 1..len {
                    let (a, b): (String, String) = (
                        c[start..start + k].iter().collect(),
                        c[start + k..start + len].iter().collect(),
                    );
                    merges.push(format!("{a} {b}"));
                }
            }
        }
    }
    // A whole word in the vocabulary that no merge reaches: only pre-tokenizers that
    // look whole pieces up first (`ignore_merges`) make it one token.
    tokens.push(UNMERGED.into());
    let n = tokens.len();
    let mut w = GgufWriter::new();
    w.kv("general.architecture", "llama")
        .kv("llama.context_length", 256u32)
        .kv("llama.embedding_length", 32u32)
        .kv("llama.block_count", 1u32)
        .kv("llama.feed_forward_length", 64u32)
        .kv("llama.attention.head_count", 4u32)
        .kv("llama.attention.layer_norm_rms_epsilon", 1e-5f32)
        .kv("tokenizer.ggml.model", "gpt2")
        .kv("tokenizer.ggml.pre", pre)
        .kv("tokenizer.ggml.tokens", tokens)
        .kv("tokenizer.ggml.token_type", vec![1i32; n])
        .kv("tokenizer.ggml.merges", merges)
        .kv("tokenizer.ggml.bos_token_id", 0u32)
        .kv("tokenizer.ggml.eos_token_id", 1u32);
    w
}

#[test]
fn pre_tokenizers_split_as_llama_cpp() {
    let ok = Command::new("python3")
        .args(["-c", "import llama_cpp"])
        .output();
    if !matches!(&ok, Ok(o) if o.status.success()) {
        eprintln!("SKIP: python3 with llama_cpp is not available");
        return;
    }
    let dir = std::env::temp_dir().join(format!("thaw-pretok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/llama_ref.py");
    let cases = dir.join("cases.json");
    let texts: Vec<&str> = TEXTS.iter().copied().chain([UNMERGED]).collect();
    std::fs::write(
        &cases,
        json!({"texts": texts, "bos_texts": ["Hi"]}).to_string(),
    )
    .unwrap();
    let mut failures = Vec::new();
    let mut checked = 0;
    for pre in PRE_NAMES {
        let w = synthetic_vocab(pre);
        let path = dir.join(format!("{pre}.gguf"));
        w.write_to(&path).unwrap();
        let out = dir.join(format!("{pre}.json"));
        let run = Command::new("python3")
            .arg(script)
            .args([&path, &cases, &out])
            .output()
            .expect("run python3");
        let stderr = String::from_utf8_lossy(&run.stderr);
        if !run.status.success() && stderr.contains("Failed to load model") {
            // A name this llama.cpp does not know (thaw maps it like one it does).
            eprintln!("{pre}: not known to this llama.cpp, not compared");
            continue;
        }
        assert!(run.status.success(), "{pre} ({}): {stderr}", path.display());
        checked += 1;
        let refs: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        let tok = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
        let piece = |id: u32| String::from_utf8_lossy(&tok.token_bytes(id)).into_owned();
        for (text, want) in texts.iter().zip(refs["plain"].as_array().unwrap()) {
            let want: Vec<String> = want
                .as_array()
                .unwrap()
                .iter()
                .map(|x| piece(x.as_u64().unwrap() as u32))
                .collect();
            let got: Vec<String> = tok
                .encode(text, false, false)
                .unwrap()
                .into_iter()
                .map(piece)
                .collect();
            if got != want {
                failures.push(format!(
                    "{pre} {text:?}\n  llama.cpp: {want:?}\n  thaw:      {got:?}"
                ));
            }
        }
        // Whether the name implies a BOS (the file does not say).
        let want: Vec<u64> = refs["bos"][0]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        let got: Vec<u64> = tok
            .encode("Hi", true, false)
            .unwrap()
            .into_iter()
            .map(u64::from)
            .collect();
        if got != want {
            failures.push(format!("{pre} with BOS: llama.cpp {want:?}, thaw {got:?}"));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 20, "only {checked} names compared");
}
