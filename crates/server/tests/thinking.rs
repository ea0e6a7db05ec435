//! A thinking model's `<think>` block through the chat API: a small random model whose
//! vocabulary has the tags and whose template opens the block (as Qwen3's and
//! SmolLM3's do), so its output is split into `reasoning_content` and `content`
//! exactly as `reasoning_format: "none"` shows the raw text would be, streamed or not,
//! and `chat_template_kwargs` reaches the template.

mod common;
#[path = "../../models/tests/common/mod.rs"]
mod synth;

use std::sync::Arc;

use serde_json::{Value, json};
use thaw_engine::{Engine, LoadOptions};
use thaw_server::{AppState, app};

const SPECIALS: [&str; 5] = [
    "<|im_start|>",
    "<|im_end|>",
    "<think>",
    "</think>",
    "<tool_call>",
];

const TEMPLATE: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
{% if add_generation_prompt %}<|im_start|>assistant\n\
{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% else %}<think>\n{% endif %}{% endif %}";

/// GPT-2's byte-level alphabet: printable bytes stand for themselves, the others for
/// the code points from 256 on, in byte order.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        return char::from(b);
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).unwrap()
}

/// A byte-level BPE model: 256 byte tokens, one merge, the chat specials.
fn thinking_model(dir: &std::path::Path) -> Arc<Engine> {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    tokens.push("ab".into());
    tokens.extend(SPECIALS.iter().map(|s| s.to_string()));
    let mut types = vec![1i32; 257];
    // Chat markers are control tokens; the think and call tags are text
    // (user-defined), as in Qwen3's files.
    types.extend([3, 3, 4, 4, 4]);
    let spec = synth::Spec {
        n_vocab: tokens.len(),
        n_ctx_train: 4096,
        tied: true,
        ..synth::Spec::llama()
    };
    let mut w = synth::writer(&spec, 5);
    w.kv("tokenizer.ggml.model", "gpt2")
        .kv("tokenizer.ggml.pre", "default")
        .kv("tokenizer.ggml.tokens", tokens)
        .kv("tokenizer.ggml.token_type", types)
        .kv("tokenizer.ggml.merges", vec!["a b".to_string()])
        .kv("tokenizer.ggml.eos_token_id", 258u32)
        .kv("tokenizer.chat_template", TEMPLATE);
    let path = dir.join("thinker.gguf");
    w.write_to(&path).unwrap();
    Arc::new(Engine::load(&path, &LoadOptions { threads: 2 }).unwrap())
}

/// The answer's message holds `reasoning` and `content`.
fn assert_split(body: &Value, reasoning: &Option<String>, content: &str, what: &str) {
    let m = &body["choices"][0]["message"];
    assert_eq!(
        m["reasoning_content"].as_str(),
        reasoning.as_deref(),
        "{what}"
    );
    assert_eq!(m["content"].as_str(), Some(content), "{what}");
}

fn id_of(engine: &Engine, text: &str) -> u32 {
    engine.tokenizer().token_id(text).unwrap()
}

#[tokio::test]
async fn think_block_goes_to_reasoning_content_streamed_or_not() {
    let dir = std::env::temp_dir().join(format!("thaw-thinking-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let engine = thinking_model(&dir);
    assert!(engine.thinks());
    // Room for the generic tool prompt, one byte per token in this vocabulary.
    let cfg = thaw_server::ServeConfig {
        ctx_size: 2048,
        ..common::config()
    };
    let state = AppState::new(engine.clone(), &cfg).unwrap();
    let app = app(state);

    // Printable ASCII only (no broken UTF-8 from random bytes), `</think>` likely
    // within a few tokens, no end of generation.
    let mut bias = serde_json::Map::new();
    for b in (0..=255u8).filter(|b| !(b' '..=b'~').contains(b)) {
        bias.insert(
            id_of(&engine, &byte_char(b).to_string()).to_string(),
            json!(-100),
        );
    }
    bias.insert(id_of(&engine, "</think>").to_string(), json!(3));
    bias.insert(id_of(&engine, "<|im_end|>").to_string(), json!(-100));
    bias.insert(id_of(&engine, "<|im_start|>").to_string(), json!(-100));
    let request = |seed: u64, extra: Value, bias: &serde_json::Map<String, Value>| {
        let mut r = json!({
            "model": common::MODEL,
            "messages": [{"role": "user", "content": "What is 2+2?"}],
            "max_tokens": 24, "temperature": 1.0, "seed": seed, "logit_bias": bias,
        });
        r.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        r
    };

    let mut split_seen = false;
    for seed in 1..=6u64 {
        let (status, raw) = common::post(
            &app,
            "/v1/chat/completions",
            request(
                seed,
                json!({"reasoning_format": "none", "logprobs": true}),
                &bias,
            ),
        )
        .await;
        assert_eq!(status, 200, "{raw}");
        let text = raw["choices"][0]["message"]["content"].as_str().unwrap();
        // Reasoning tokens: up to and including `</think>` (one token here), all of
        // them when the block stays open.
        let tokens: Vec<&str> = raw["choices"][0]["logprobs"]["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["token"].as_str().unwrap())
            .collect();
        assert_eq!(tokens.len() as u64, raw["usage"]["completion_tokens"]);
        let want_reasoning = tokens
            .iter()
            .position(|t| *t == "</think>")
            .map_or(tokens.len(), |i| i + 1);
        assert_eq!(
            raw["usage"]["completion_tokens_details"]["reasoning_tokens"],
            json!(want_reasoning),
            "seed {seed}: {tokens:?}"
        );
        assert!(
            raw["choices"][0]["message"]
                .get("reasoning_content")
                .is_none()
        );
        // The template opened the block: the raw text is reasoning up to `</think>`.
        let (want_r, want_c) = thaw_constrain::split_reasoning(text, true);
        split_seen |= want_r.is_some() && text.contains("</think>") && !want_c.is_empty();

        let (status, body) = common::post(
            &app,
            "/v1/chat/completions",
            request(seed, json!({}), &bias),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_split(&body, &want_r, &want_c, &format!("seed {seed}: {text:?}"));
        let details = |v: &Value| v["usage"]["completion_tokens_details"].clone();
        assert_eq!(details(&body), details(&raw), "seed {seed}");

        let (status, events) = common::sse_events(
            &app,
            "/v1/chat/completions",
            request(
                seed,
                json!({"stream": true, "stream_options": {"include_usage": true}}),
                &bias,
            ),
        )
        .await;
        assert_eq!(status, 200);
        let (mut r, mut c) = (String::new(), String::new());
        let mut usage_chunks = 0;
        for e in events.iter().filter(|e| e.as_str() != "[DONE]") {
            let v: Value = serde_json::from_str(e).unwrap();
            if !v["usage"].is_null() {
                usage_chunks += 1;
                assert_eq!(details(&v), details(&raw), "seed {seed} streamed usage");
            }
            let d = &v["choices"][0]["delta"];
            r += d["reasoning_content"].as_str().unwrap_or("");
            c += d["content"].as_str().unwrap_or("");
        }
        assert_eq!(
            Some(r).filter(|r| !r.is_empty()),
            want_r,
            "seed {seed} streamed"
        );
        assert_eq!(c, want_c, "seed {seed} streamed");
        assert_eq!(usage_chunks, 1, "seed {seed}: one usage chunk");
    }
    assert!(
        split_seen,
        "no seed closed the block before content: the test tests nothing"
    );

    // With tools offered (`tool_choice: auto`, a lazy grammar) the block is split too.
    let tools = json!({"tools": [{"type": "function", "function": {"name": "add",
        "parameters": {"type": "object", "properties": {"a": {"type": "number"}}}}}]});
    let mut raw_req = request(2, tools.clone(), &bias);
    raw_req["reasoning_format"] = json!("none");
    let (_, raw) = common::post(&app, "/v1/chat/completions", raw_req).await;
    let text = raw["choices"][0]["message"]["content"].as_str().unwrap();
    let (want_r, want_c) = thaw_constrain::split_reasoning(text, true);
    assert!(want_r.is_some(), "{text:?}");
    let (status, body) = common::post(
        &app,
        "/v1/chat/completions",
        request(2, tools.clone(), &bias),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_split(&body, &want_r, &want_c, &format!("with tools: {text:?}"));

    // A call written while thinking does not count (the lazy grammar waits for the
    // block to close); one in the answer does. `<tool_call>` is likely everywhere.
    let mut call_bias = bias.clone();
    call_bias.insert(id_of(&engine, "<tool_call>").to_string(), json!(2));
    let mut ignored_then_called = false;
    for seed in 1..=8u64 {
        let mut req = request(seed, tools.clone(), &call_bias);
        req["max_tokens"] = json!(400);
        let (status, body) = common::post(&app, "/v1/chat/completions", req).await;
        assert_eq!(status, 200, "{body}");
        let c = &body["choices"][0];
        let reasoning = c["message"]["reasoning_content"].as_str().unwrap_or("");
        if let Some(calls) = c["message"]["tool_calls"].as_array() {
            assert_eq!(c["finish_reason"], "tool_calls", "{body}");
            assert_eq!(calls[0]["function"]["name"], "add", "{body}");
            ignored_then_called |= reasoning.contains("<tool_call>");
        }
    }
    assert!(
        ignored_then_called,
        "no answer made a call after a <tool_call> inside its reasoning"
    );

    // JSON output: the grammar applies from the first token, so the block the
    // template opened is closed in the prompt and the answer is the JSON.
    let (_, plain) = common::post(&app, "/v1/chat/completions", request(4, json!({}), &bias)).await;
    let json_req = request(
        4,
        json!({"response_format": {"type": "json_object"}}),
        &bias,
    );
    let (status, body) = common::post(&app, "/v1/chat/completions", json_req).await;
    assert_eq!(status, 200, "{body}");
    let m = &body["choices"][0]["message"];
    assert!(m.get("reasoning_content").is_none(), "{m}");
    let closing = engine
        .tokenizer()
        .encode("\n</think>\n\n", false, true)
        .unwrap();
    assert_eq!(
        body["usage"]["prompt_tokens"].as_u64().unwrap(),
        plain["usage"]["prompt_tokens"].as_u64().unwrap() + closing.len() as u64
    );

    // `enable_thinking: false` reaches the template, which closes the block itself:
    // the output (with `<think>` banned) is all content.
    bias.insert(id_of(&engine, "<think>").to_string(), json!(-100));
    let (status, body) = common::post(
        &app,
        "/v1/chat/completions",
        request(
            3,
            json!({"chat_template_kwargs": {"enable_thinking": false}}),
            &bias,
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let m = &body["choices"][0]["message"];
    assert!(m.get("reasoning_content").is_none(), "{m}");
    assert!(!m["content"].as_str().unwrap().is_empty());
    // A thinking model that did not think: zero reasoning tokens, still reported.
    assert_eq!(
        body["usage"]["completion_tokens_details"]["reasoning_tokens"],
        0
    );

    let (status, body) = common::post(
        &app,
        "/v1/chat/completions",
        request(3, json!({"reasoning_format": "hidden"}), &bias),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "reasoning_format");
    let _ = std::fs::remove_dir_all(&dir);
}
