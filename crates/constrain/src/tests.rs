use super::*;

#[test]
fn detects_formats_from_templates() {
    assert_eq!(
        ToolFormat::detect("{{ '<tool_call>\\n' }}{{ tools }}"),
        Some(ToolFormat::Hermes)
    );
    assert_eq!(
        ToolFormat::detect("{{ '[TOOL_CALLS]' }}"),
        Some(ToolFormat::Mistral)
    );
    assert_eq!(
        ToolFormat::detect("<|python_tag|>{{ x }}"),
        Some(ToolFormat::Llama3)
    );
    assert_eq!(ToolFormat::detect("{{ messages }}"), None);
}

#[test]
fn parses_hermes_calls_with_content_before() {
    let text = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": [1, 2]}}\n</tool_call>\n<tool_call>\n{\"name\": \"t\", \"arguments\": {}}\n</tool_call>";
    let (content, calls) = parse_tool_calls(ToolFormat::Hermes, text);
    assert_eq!(content, "Let me check.");
    let calls = calls.unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].name, "get_weather");
    assert_eq!(
        calls[0].arguments,
        "{\"city\": \"Paris\", \"days\": [1, 2]}"
    );
    assert_eq!(calls[1].arguments, "{}");
}

#[test]
fn parses_mistral_llama_and_quoted_arguments() {
    let (_, calls) = parse_tool_calls(
        ToolFormat::Mistral,
        "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"x\": \"}\"}}, {\"arguments\": \"{\\\"y\\\": 1}\", \"name\": \"b\"}]",
    );
    let calls = calls.unwrap();
    assert_eq!(calls[0].arguments, "{\"x\": \"}\"}");
    assert_eq!(calls[1].name, "b");
    assert_eq!(calls[1].arguments, "{\"y\": 1}");
    let (c, calls) = parse_tool_calls(
        ToolFormat::Llama3,
        "{\"name\": \"f\", \"parameters\": {\"q\": 3}}",
    );
    assert_eq!(c, "");
    assert_eq!(calls.unwrap()[0].arguments, "{\"q\": 3}");
    // No trigger: plain text.
    let (c, calls) = parse_tool_calls(ToolFormat::Hermes, "just text");
    assert_eq!((c.as_str(), calls), ("just text", None));
}

#[test]
fn incomplete_calls_are_not_returned() {
    let (_, calls) = parse_tool_calls(
        ToolFormat::Hermes,
        "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": [1, 2",
    );
    assert_eq!(calls.unwrap(), vec![]);
}

/// Streaming any split of the text gives the same content, names and arguments as
/// parsing it whole.
#[test]
fn stream_matches_whole_parse_for_every_split() {
    let text = "Sure <tool_ok \n\n<tool_call>\n{\"name\": \"get\", \"arguments\": {\"a\": \"x}y\", \"b\": {\"c\": [1, {\"d\": 2}]}}}\n</tool_call>\n<tool_call>\n{\"name\": \"h\", \"arguments\": {\"n\": -1.5}}\n</tool_call>";
    let (content, calls) = parse_tool_calls(ToolFormat::Hermes, text);
    let calls = calls.unwrap();
    for step in [1, 2, 3, 5, 7, 11, 1000] {
        let mut s = ToolCallStream::new(ToolFormat::Hermes);
        let mut events = Vec::new();
        let chars: Vec<char> = text.chars().collect();
        for chunk in chars.chunks(step) {
            events.extend(s.push(&chunk.iter().collect::<String>()));
        }
        events.extend(s.finish());
        let mut got_content = String::new();
        let mut names = Vec::new();
        let mut args = vec![String::new(); 2];
        for e in events {
            match e {
                StreamEvent::Content(c) => got_content.push_str(&c),
                StreamEvent::CallStart { index, name } => {
                    assert_eq!(index, names.len());
                    names.push(name)
                }
                StreamEvent::Arguments { index, fragment } => args[index].push_str(&fragment),
            }
        }
        // Streamed content is what the whole parse returns, trailing newline and all
        // (a client must not see a `\n` streamed that the non-streamed answer lacks).
        assert_eq!(got_content.trim_start(), content, "step {step}");
        assert_eq!(names, vec!["get", "h"]);
        assert_eq!(args[0], calls[0].arguments, "step {step}");
        assert_eq!(args[1], calls[1].arguments, "step {step}");
    }
}

#[test]
fn stream_without_trigger_is_all_content() {
    let mut s = ToolCallStream::new(ToolFormat::Hermes);
    let mut out = String::new();
    for piece in ["Hello <", "tool", " world"] {
        for e in s.push(piece) {
            if let StreamEvent::Content(c) = e {
                out.push_str(&c)
            }
        }
    }
    for e in s.finish() {
        if let StreamEvent::Content(c) = e {
            out.push_str(&c)
        }
    }
    assert_eq!(out, "Hello <tool world");
    // Whitespace held back before a possible call still ends up in plain text.
    let mut s = ToolCallStream::new(ToolFormat::Hermes);
    let mut out = String::new();
    let mut events: Vec<StreamEvent> = ["Hi \n", "\nthere\n"]
        .iter()
        .flat_map(|p| s.push(p))
        .collect();
    events.extend(s.finish());
    for e in events {
        if let StreamEvent::Content(c) = e {
            out.push_str(&c)
        }
    }
    assert_eq!(out, "Hi \n\nthere\n");
    assert_eq!(s.calls(), 0);
}

#[test]
fn grammars_name_control_tokens_by_id() {
    let tools = [ToolSpec {
        name: "f".into(),
        parameters: json!({"type": "object", "properties": {"a": {"type": "integer"}}}),
    }];
    let g = ToolFormat::Mistral.grammar(&tools, false, |s| (s == "[TOOL_CALLS]").then_some(5));
    assert!(g.starts_with("start: <[5]> body"), "{g}");
    assert!(g.contains("\"maxItems\":1"), "{g}");
    let g = ToolFormat::Hermes.grammar(&tools, true, |_| None);
    assert!(g.contains("\"<tool_call>\""), "{g}");
    assert!(g.contains("(\"\\n\" call)*"), "{g}");
}

#[test]
fn rendered_calls_parse_back() {
    let calls = vec![
        ParsedCall {
            name: "a".into(),
            arguments: "{\"x\":1}".into(),
        },
        ParsedCall {
            name: "b".into(),
            arguments: "{}".into(),
        },
    ];
    for f in [ToolFormat::Hermes, ToolFormat::Mistral] {
        let text = f.render_calls(&calls);
        let (_, back) = parse_tool_calls(f, &text);
        let back = back.unwrap();
        assert_eq!(back.len(), 2, "{text}");
        assert_eq!(back[0].arguments, "{\"x\": 1}");
    }
}

#[test]
fn tighten_closes_objects_but_not_under_all_of() {
    let mut s = json!({
        "type": "object",
        "properties": {"a": {"type": "object", "properties": {"b": {}}}},
        "$defs": {"d": {"properties": {"x": {}}, "additionalProperties": true}},
        "allOf": [{"properties": {"y": {}}}]
    });
    tighten(&mut s);
    // The root has an allOf: its parts add keys, so it stays open.
    assert!(s.get("additionalProperties").is_none());
    assert_eq!(s["properties"]["a"]["additionalProperties"], json!(false));
    assert_eq!(s["$defs"]["d"]["additionalProperties"], json!(true));
    assert!(s["allOf"][0].get("additionalProperties").is_none());

    // Pydantic's inheritance shape: a definition used under allOf stays open, others
    // close; an object requiring a key it does not list stays open.
    let mut s = json!({
        "$defs": {
            "base": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]},
            "other": {"type": "object", "properties": {"z": {}}},
            "loose": {"type": "object", "properties": {"a": {}}, "required": ["a", "b"]}
        },
        "allOf": [{"$ref": "#/$defs/base"}, {"properties": {"name": {"type": "string"}}, "required": ["name"]}]
    });
    tighten(&mut s);
    assert!(s["$defs"]["base"].get("additionalProperties").is_none());
    assert_eq!(s["$defs"]["other"]["additionalProperties"], json!(false));
    assert!(s["$defs"]["loose"].get("additionalProperties").is_none());
}
