use super::*;
use serde_json::json;

fn conv() -> Vec<serde_json::Value> {
    vec![
        json!({"role": "system", "content": "Be brief."}),
        json!({"role": "user", "content": "Hi"}),
        json!({"role": "assistant", "content": "Hello!"}),
        json!({"role": "user", "content": "Bye"}),
    ]
}

#[test]
fn chatml_fallback_renders() {
    let t = ChatTemplate::chatml("", "");
    let out = t.render(&conv()[1..2], true, None).unwrap();
    assert_eq!(
        out,
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn raise_exception_is_a_typed_error() {
    let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}", "", "").unwrap();
    match t.render(&conv(), false, None) {
        Err(TemplateError::Raised(m)) => assert_eq!(m, "roles must alternate"),
        other => panic!("expected Raised, got {other:?}"),
    }
    // Gemma's template rejects two user turns in a row.
    let g = ChatTemplate::new(GEMMA3_TEMPLATE, "<bos>", "<eos>").unwrap();
    let bad = vec![
        json!({"role": "user", "content": "a"}),
        json!({"role": "user", "content": "b"}),
    ];
    let err = g.render(&bad, false, None).unwrap_err();
    assert!(err.to_string().contains("must alternate"), "{err}");
}

#[test]
fn tojson_prints_like_python() {
    let t = ChatTemplate::new(
        "{{ tools | tojson }}|{{ tools[0] | tojson(indent=2) }}",
        "",
        "",
    )
    .unwrap();
    let tools = json!([{"name": "f", "b": [1, 2.5, true, null], "a": "é<\"\n"}]);
    let out = t.render(&[], false, Some(&tools)).unwrap();
    assert_eq!(
        out,
        "[{\"name\": \"f\", \"b\": [1, 2.5, true, null], \"a\": \"é<\\\"\\n\"}]|{\n  \"name\": \"f\",\n  \"b\": [\n    1,\n    2.5,\n    true,\n    null\n  ],\n  \"a\": \"é<\\\"\\n\"\n}"
    );
}

#[test]
fn python_methods_and_trim_lstrip() {
    let src = "{% for m in messages %}\n  {{ m['content'].strip().upper() }}\n{% endfor %}";
    let t = ChatTemplate::new(src, "", "").unwrap();
    let out = t
        .render(&[json!({"role": "user", "content": "  hi "})], false, None)
        .unwrap();
    assert_eq!(out, "  HI\n");
}

#[test]
fn tools_section_detection() {
    assert!(!ChatTemplate::chatml("", "").has_tools_section());
    let t = ChatTemplate::new("{% if tools %}{{ tools | tojson }}{% endif %}", "", "").unwrap();
    assert!(t.has_tools_section());
    let t = ChatTemplate::new("{{ my_tools_x }}", "", "").unwrap();
    assert!(!t.has_tools_section());
}

#[test]
fn syntax_errors_are_reported() {
    assert!(matches!(
        ChatTemplate::new("{% for %}", "", ""),
        Err(TemplateError::Syntax(_))
    ));
}
