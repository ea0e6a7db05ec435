//! Chat templates rendered by thaw (minijinja) against Python's jinja2 with Hugging
//! Face semantics, on the real SmolLM2 template, Gemma 3's template and a tool-calling
//! template exercising `tojson`. References are rendered at test time.

mod common;

use std::process::Command;

use serde_json::{Value, json};
use thaw_tokenizer::chat::{ChatTemplate, GEMMA3_TEMPLATE, TemplateError};

fn conversation() -> Vec<Value> {
    vec![
        json!({"role": "system", "content": "You are a terse assistant. Réponds en français si besoin."}),
        json!({"role": "user", "content": "What is 2+2?  "}),
        json!({"role": "assistant", "content": "4."}),
        json!({"role": "user", "content": "And in words? 🤔\nExplain."}),
    ]
}

struct Case {
    template: String,
    messages: Vec<Value>,
    add_generation_prompt: bool,
    bos: String,
    eos: String,
    tools: Option<Value>,
}

/// Renders every case with jinja2; None when jinja2 is missing.
fn reference(cases: &[Case]) -> Option<Vec<Value>> {
    if !common::python_has("jinja2") {
        eprintln!("skipped: python jinja2 not installed");
        return None;
    }
    let dir = common::scratch_dir("jinja");
    let input = dir.join("cases.json");
    let output = dir.join("out.json");
    let list: Vec<Value> = cases
        .iter()
        .map(|c| {
            json!({"template": c.template, "messages": c.messages,
                   "add_generation_prompt": c.add_generation_prompt,
                   "bos_token": c.bos, "eos_token": c.eos, "tools": c.tools})
        })
        .collect();
    std::fs::write(&input, Value::Array(list).to_string()).unwrap();
    let status = Command::new("python3")
        .arg(common::tests_dir().join("jinja_ref.py"))
        .arg(&input)
        .arg(&output)
        .status()
        .expect("run python3");
    assert!(status.success(), "jinja_ref.py failed");
    let out: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&output).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    Some(out)
}

fn check(cases: Vec<Case>) {
    let Some(refs) = reference(&cases) else {
        return;
    };
    for (i, (c, r)) in cases.iter().zip(&refs).enumerate() {
        let t = ChatTemplate::new(c.template.clone(), c.bos.clone(), c.eos.clone()).unwrap();
        let ours = t.render(&c.messages, c.add_generation_prompt, c.tools.as_ref());
        match (r.get("ok").and_then(Value::as_str), ours) {
            (Some(want), Ok(got)) => {
                assert_eq!(got, want, "case {i}: rendering differs from jinja2")
            }
            (None, Err(TemplateError::Raised(msg))) => {
                let want = r["error"].as_str().unwrap();
                assert_eq!(msg, want, "case {i}: raise_exception message");
            }
            (want, got) => panic!("case {i}: jinja2 gave {r}, thaw gave {got:?} (want {want:?})"),
        }
    }
}

#[test]
fn smollm2_template_matches_jinja2() {
    let Some((gguf, tok)) = common::load("smollm2") else {
        return;
    };
    let t = ChatTemplate::from_gguf(&gguf, &tok).expect("SmolLM2 ships a chat template");
    let src = t.source().to_string();
    let conv = conversation();
    check(vec![
        Case {
            template: src.clone(),
            messages: conv.clone(),
            add_generation_prompt: true,
            bos: "<|im_start|>".into(),
            eos: "<|im_end|>".into(),
            tools: None,
        },
        // No system message: the template inserts its default one.
        Case {
            template: src.clone(),
            messages: conv[1..].to_vec(),
            add_generation_prompt: false,
            bos: "<|im_start|>".into(),
            eos: "<|im_end|>".into(),
            tools: None,
        },
    ]);
    // And the rendered prompt tokenizes with the turn markers as single tokens.
    let text = t.render(&conv, true, None).unwrap();
    let ids = tok.encode(&text, false, true).unwrap();
    assert_eq!(ids[0], tok.bos_id().unwrap());
    assert_eq!(
        ids.iter().filter(|&&i| i == tok.eos_id().unwrap()).count(),
        4
    );
}

#[test]
fn gemma3_template_matches_jinja2() {
    let conv = conversation();
    let case = |messages: Vec<Value>, generation: bool| Case {
        template: GEMMA3_TEMPLATE.into(),
        messages,
        add_generation_prompt: generation,
        bos: "<bos>".into(),
        eos: "<eos>".into(),
        tools: None,
    };
    check(vec![
        case(conv.clone(), true),
        case(conv[1..3].to_vec(), false),
        // Two user turns in a row: both sides raise the same exception.
        case(vec![conv[1].clone(), conv[1].clone()], true),
    ]);
}

#[test]
fn gemma3_gguf_falls_back_to_builtin_template() {
    let Some((gguf, tok)) = common::load("gemma3-270m") else {
        return;
    };
    assert!(
        ChatTemplate::from_gguf(&gguf, &tok).is_none(),
        "this GGUF has no template"
    );
    let (t, fallback) = ChatTemplate::from_gguf_or_fallback(&gguf, &tok).unwrap();
    assert!(fallback);
    let text = t.render(&conversation()[1..2], true, None).unwrap();
    assert_eq!(
        text,
        "<bos><start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n"
    );
    let ids = tok.encode(&text, false, true).unwrap();
    assert_eq!(
        &ids[..2],
        &[
            tok.bos_id().unwrap(),
            tok.token_id("<start_of_turn>").unwrap()
        ]
    );
}

#[test]
fn tool_template_tojson_matches_python() {
    let template = "{% if tools is defined %}{% for t in tools %}{{ t | tojson }}\n{{ t | tojson(indent=4) }}\n{% endfor %}{% endif %}\
{% for m in messages %}{{ m['role'] }}: {% if m.tool_calls %}{{ m.tool_calls | tojson }}{% else %}{{ m['content'] }}{% endif %}\n{% endfor %}";
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "description": "Wetter für einen Ort — «heute» <b>",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"},
            "days": {"type": "integer", "minimum": 1, "maximum": 14},
            "ratio": {"type": "number", "default": 0.5}, "big": 12345678901234567i64,
            "tiny": 1.5e-7, "whole": 3.0, "esc": "tab\tquote\"back\\slash\u{1}"},
            "required": ["city"]}}}]);
    let messages = vec![
        json!({"role": "user", "content": "Weather in Zürich?"}),
        json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": {"city": "Zürich", "days": 2}}}]}),
        json!({"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "{\"temp\": 21}"}),
    ];
    check(vec![
        Case {
            template: template.into(),
            messages: messages.clone(),
            add_generation_prompt: true,
            bos: String::new(),
            eos: String::new(),
            tools: Some(tools),
        },
        Case {
            template: template.into(),
            messages,
            add_generation_prompt: true,
            bos: String::new(),
            eos: String::new(),
            tools: None,
        },
    ]);
}
