//! Tool calling: the model's native call format detected from its chat template, the
//! grammar that forces a well-formed call, the documented generic prompt for templates
//! without a tools section, and parsing (whole or streamed) of calls out of the text.
//!
//! Formats:
//! - Hermes/Qwen: `<tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>`, one
//!   block per call. Also the generic fallback format.
//! - Llama 3: a bare `{"name": "f", "parameters": {...}}` object.
//! - Mistral: `[TOOL_CALLS][{"name": "f", "arguments": {...}}, ...]`.

use std::ops::Range;

use serde_json::{Value, json};

use crate::with_json_options;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    Hermes,
    Llama3,
    Mistral,
}

/// A function the model may call: its name and JSON-schema parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub parameters: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    None,
    Auto,
    Required,
    Named(String),
}

impl ToolChoice {
    /// Whether the answer may hold several calls: a named tool is exactly one call of
    /// it (as vLLM does); otherwise what the request asked (`parallel_tool_calls`).
    pub fn parallel(&self, requested: bool) -> bool {
        requested && !matches!(self, ToolChoice::Named(_))
    }
}

/// One call parsed from the output; `arguments` is JSON text.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedCall {
    pub name: String,
    pub arguments: String,
}

impl ToolFormat {
    /// The format a chat template writes tool calls in, if it has one we know.
    pub fn detect(template: &str) -> Option<ToolFormat> {
        if template.contains("<tool_call>") {
            Some(ToolFormat::Hermes)
        } else if template.contains("[TOOL_CALLS]") {
            Some(ToolFormat::Mistral)
        } else if template.contains("<|python_tag|>")
            || (template.contains("ipython") && template.contains("parameters"))
        {
            Some(ToolFormat::Llama3)
        } else {
            None
        }
    }

    /// The text that starts a call: with `tool_choice: auto` the grammar switches on
    /// when it appears.
    pub fn trigger(self) -> &'static str {
        match self {
            ToolFormat::Hermes => "<tool_call>",
            ToolFormat::Llama3 => "{\"name\"",
            ToolFormat::Mistral => "[TOOL_CALLS]",
        }
    }

    fn args_key(self) -> &'static str {
        match self {
            ToolFormat::Llama3 => "parameters",
            _ => "arguments",
        }
    }

    /// Lark grammar (llguidance dialect) matching one call, or several when `parallel`.
    /// `control_id` gives the id of a marker that is a control token in the vocabulary
    /// (it must then be written as that token, not spelled out).
    pub fn grammar(
        self,
        tools: &[ToolSpec],
        parallel: bool,
        control_id: impl Fn(&str) -> Option<u32>,
    ) -> String {
        let lit = |s: &str| match control_id(s) {
            Some(id) => format!("<[{id}]>"),
            None => serde_json::to_string(s).unwrap_or_default(),
        };
        let key = self.args_key();
        let mut defs = serde_json::Map::new();
        let variants: Vec<Value> = tools
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let params = if t.parameters.is_null() {
                    json!({"type": "object"})
                } else {
                    hoist_refs(&crate::schema::normalize(&t.parameters), i, &mut defs)
                };
                json!({
                    "type": "object",
                    "properties": {"name": {"const": t.name}, key: params},
                    "required": ["name", key],
                    "additionalProperties": false,
                })
            })
            .collect();
        let mut one = if variants.len() == 1 {
            variants[0].clone()
        } else {
            json!({"anyOf": variants})
        };
        let with_defs = |mut root: Value| {
            if !defs.is_empty() {
                root["$defs"] = Value::Object(defs.clone());
            }
            root
        };
        match self {
            ToolFormat::Hermes => {
                one = with_defs(one);
                let body = with_json_options(&one);
                let more = if parallel { " (\"\\n\" call)*" } else { "" };
                format!(
                    "start: call{more}\ncall: {open} \"\\n\" body \"\\n\" {close}\nbody: %json {body}\n",
                    open = lit("<tool_call>"),
                    close = lit("</tool_call>"),
                )
            }
            ToolFormat::Llama3 => {
                let one = with_defs(one);
                format!("start: body\nbody: %json {}\n", with_json_options(&one))
            }
            ToolFormat::Mistral => {
                let mut arr = json!({"type": "array", "items": one, "minItems": 1});
                if !parallel {
                    arr["maxItems"] = json!(1);
                }
                let arr = with_defs(arr);
                format!(
                    "start: {} body\nbody: %json {}\n",
                    lit("[TOOL_CALLS]"),
                    with_json_options(&arr)
                )
            }
        }
    }

    /// How an assistant message's calls are written back into the conversation when
    /// the template cannot render `tool_calls` itself.
    pub fn render_calls(self, calls: &[ParsedCall]) -> String {
        let obj = |c: &ParsedCall| {
            let args: Value = serde_json::from_str(&c.arguments)
                .unwrap_or_else(|_| Value::String(c.arguments.clone()));
            json!({"name": c.name, self.args_key(): args})
        };
        match self {
            ToolFormat::Hermes => calls
                .iter()
                .map(|c| format!("<tool_call>\n{}\n</tool_call>", py_json(&obj(c))))
                .collect::<Vec<_>>()
                .join("\n"),
            ToolFormat::Llama3 => calls
                .iter()
                .map(|c| py_json(&obj(c)))
                .collect::<Vec<_>>()
                .join("; "),
            ToolFormat::Mistral => {
                let arr = Value::Array(calls.iter().map(obj).collect());
                format!("[TOOL_CALLS]{}", py_json(&arr))
            }
        }
    }
}

/// JSON with `", "` and `": "` separators (what the grammar makes the model write).
fn py_json(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let items: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), py_json(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(py_json).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

/// The system-prompt text that describes tools to a model whose template has no tools
/// section (SmolLM2, Gemma 3). Calls are then written in the Hermes format.
pub fn generic_tool_prompt(tools: &[Value], choice: &ToolChoice) -> String {
    let mut s = String::from(
        "You can call functions (tools) to answer. The available tools, one JSON object per line:\n<tools>\n",
    );
    for t in tools {
        s.push_str(&py_json(t));
        s.push('\n');
    }
    s.push_str("</tools>\n");
    s.push_str(
        "To call a tool, reply with the call and nothing else, in this format:\n<tool_call>\n{\"name\": \"<tool name>\", \"arguments\": {<the arguments as JSON matching the tool's parameters>}}\n</tool_call>\n",
    );
    s.push_str(
        "Results come back in <tool_response></tool_response> tags; use them to answer the user.",
    );
    match choice {
        ToolChoice::Required => s.push_str("\nYou must call at least one tool now."),
        ToolChoice::Named(n) => s.push_str(&format!("\nYou must call the tool `{n}` now.")),
        ToolChoice::None => s.push_str("\nDo not call a tool now: answer in text."),
        ToolChoice::Auto => {}
    }
    s
}

/// Position of each call found in output text (from the first trigger on).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallScan {
    pub name: Option<String>,
    /// Byte range of the arguments value (open-ended while it is still being written).
    pub args: Option<Range<usize>>,
    pub args_complete: bool,
    pub complete: bool,
}

struct Frame {
    is_obj: bool,
    /// Index into the calls when this object is a call.
    call: Option<usize>,
    expect_key: bool,
    key: Option<String>,
    /// This container is the arguments value of call N.
    args_of: Option<usize>,
}

/// A tool's parameters sit inside the call's schema (as `arguments` of `{"name",
/// "arguments"}`), where their local `$ref`s would point into the call: `#` at the
/// call, `#/$defs/A` nowhere. When they use any, the parameters become definition
/// `t{i}` of the call schema's root and their `$defs`/`definitions` `t{i}_NAME` /
/// `t{i}_d_NAME`, with every local `$ref` rewritten to match; the call refers to
/// `t{i}`. Parameters without `$ref` are used as they are.
fn hoist_refs(params: &Value, i: usize, defs: &mut serde_json::Map<String, Value>) -> Value {
    fn has_ref(v: &Value) -> bool {
        match v {
            Value::Object(m) => m.contains_key("$ref") || m.values().any(has_ref),
            Value::Array(a) => a.iter().any(has_ref),
            _ => false,
        }
    }
    fn rewrite(v: &mut Value, i: usize) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get_mut("$ref") {
                    let new = if r == "#" || r.is_empty() {
                        Some(format!("#/$defs/t{i}"))
                    } else if let Some(rest) = r.strip_prefix("#/$defs/") {
                        Some(format!("#/$defs/t{i}_{rest}"))
                    } else if let Some(rest) = r.strip_prefix("#/definitions/") {
                        Some(format!("#/$defs/t{i}_d_{rest}"))
                    } else {
                        r.strip_prefix('#')
                            .map(|rest| format!("#/$defs/t{i}{rest}"))
                    };
                    if let Some(n) = new {
                        *r = n;
                    }
                }
                m.values_mut().for_each(|x| rewrite(x, i));
            }
            Value::Array(a) => a.iter_mut().for_each(|x| rewrite(x, i)),
            _ => {}
        }
    }
    if !has_ref(params) {
        return params.clone();
    }
    let mut p = params.clone();
    if let Value::Object(m) = &mut p {
        for (kind, prefix) in [
            ("$defs", format!("t{i}_")),
            ("definitions", format!("t{i}_d_")),
        ] {
            if let Some(Value::Object(list)) = m.remove(kind) {
                for (name, mut d) in list {
                    rewrite(&mut d, i);
                    defs.insert(format!("{prefix}{name}"), d);
                }
            }
        }
    }
    rewrite(&mut p, i);
    defs.insert(format!("t{i}"), p);
    json!({"$ref": format!("#/$defs/t{i}")})
}

/// Finds call objects (`{"name": ..., "arguments"|"parameters": ...}` not nested in
/// another object) in possibly incomplete JSON-ish text. Tolerant: never fails.
pub fn scan_calls(text: &str) -> Vec<CallScan> {
    let b = text.as_bytes();
    let mut calls: Vec<CallScan> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    let is_args_key = |k: &Option<String>| matches!(k.as_deref(), Some("arguments" | "parameters"));
    // A scalar arguments value in progress: (call, start).
    let mut scalar: Option<(usize, usize)> = None;
    while i < b.len() {
        let c = b[i];
        if let Some((call, start)) = scalar
            && matches!(c, b',' | b'}' | b']')
        {
            calls[call].args = Some(start..i);
            calls[call].args_complete = true;
            scalar = None;
        }
        match c {
            b'"' => {
                let start = i;
                i += 1;
                let mut closed = false;
                while i < b.len() {
                    match b[i] {
                        b'\\' => i += 2,
                        b'"' => {
                            closed = true;
                            break;
                        }
                        _ => i += 1,
                    }
                }
                let end = (i + 1).min(b.len());
                let raw = &text[start..end.min(text.len())];
                if let Some(top) = stack.last_mut()
                    && top.is_obj
                {
                    if top.expect_key {
                        if closed {
                            top.key = serde_json::from_str(raw).ok();
                            top.expect_key = false;
                        }
                    } else if let Some(ci) = top.call {
                        if top.key.as_deref() == Some("name") && closed {
                            calls[ci].name = serde_json::from_str(raw).ok();
                        } else if is_args_key(&top.key) {
                            // Arguments given as a JSON string.
                            calls[ci].args = Some(start..end);
                            calls[ci].args_complete = closed;
                        }
                    }
                }
                if !closed {
                    break;
                }
            }
            b'{' | b'[' => {
                let parent_call = stack
                    .last()
                    .filter(|f| f.is_obj && is_args_key(&f.key))
                    .and_then(|f| f.call);
                let mut frame = Frame {
                    is_obj: c == b'{',
                    call: None,
                    expect_key: c == b'{',
                    key: None,
                    args_of: None,
                };
                if let Some(ci) = parent_call {
                    calls[ci].args = Some(i..b.len());
                    frame.args_of = Some(ci);
                } else if c == b'{' && stack.iter().all(|f| !f.is_obj) {
                    calls.push(CallScan::default());
                    frame.call = Some(calls.len() - 1);
                }
                stack.push(frame);
            }
            b'}' | b']' => {
                if let Some(f) = stack.pop() {
                    if let Some(ci) = f.args_of {
                        let start = calls[ci].args.as_ref().map_or(i, |r| r.start);
                        calls[ci].args = Some(start..i + 1);
                        calls[ci].args_complete = true;
                    }
                    if let Some(ci) = f.call {
                        calls[ci].complete = true;
                    }
                }
            }
            b',' => {
                if let Some(top) = stack.last_mut()
                    && top.is_obj
                {
                    top.expect_key = true;
                    top.key = None;
                }
            }
            b':' => {}
            c if c.is_ascii_whitespace() => {}
            _ => {
                if scalar.is_none()
                    && let Some(top) = stack.last()
                    && let Some(ci) = top.call
                    && is_args_key(&top.key)
                    && calls[ci].args.is_none()
                {
                    scalar = Some((ci, i));
                    calls[ci].args = Some(i..b.len());
                }
            }
        }
        i += 1;
    }
    calls
}

/// The arguments text of a scanned call: a JSON string value is unwrapped (some
/// models quote the arguments object).
fn args_text(text: &str, c: &CallScan) -> String {
    let Some(r) = &c.args else {
        return "{}".into();
    };
    let raw = &text[r.start..r.end.min(text.len())];
    if raw.starts_with('"')
        && let Ok(Value::String(s)) = serde_json::from_str::<Value>(raw)
    {
        return s;
    }
    raw.to_string()
}

/// Splits a finished output into text content and complete tool calls. Returns
/// `None` for the calls part when no call was started.
pub fn parse_tool_calls(format: ToolFormat, text: &str) -> (String, Option<Vec<ParsedCall>>) {
    let Some(at) = text.find(format.trigger()) else {
        return (text.to_string(), None);
    };
    let content = text[..at].trim().to_string();
    let region = &text[at..];
    let calls = scan_calls(region)
        .iter()
        .filter(|c| c.complete && c.name.is_some())
        .map(|c| ParsedCall {
            name: c.name.clone().unwrap_or_default(),
            arguments: args_text(region, c),
        })
        .collect();
    (content, Some(calls))
}

/// What a streamed piece of output turns into.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Content(String),
    /// A call's name is known (sent with its id in the first `tool_calls` delta).
    CallStart {
        index: usize,
        name: String,
    },
    Arguments {
        index: usize,
        fragment: String,
    },
}

/// Incremental version of [`parse_tool_calls`]: content streams out (holding back what
/// may be the start of the trigger), then each call's name and argument fragments.
#[derive(Debug, Clone)]
pub struct ToolCallStream {
    trigger: &'static str,
    buf: String,
    /// Start of the call region in `buf`, once the trigger was seen.
    calls_at: Option<usize>,
    content_sent: usize,
    started: Vec<bool>,
    args_sent: Vec<usize>,
}

impl ToolCallStream {
    pub fn new(format: ToolFormat) -> Self {
        ToolCallStream {
            trigger: format.trigger(),
            buf: String::new(),
            calls_at: None,
            content_sent: 0,
            started: Vec::new(),
            args_sent: Vec::new(),
        }
    }

    /// Number of calls started so far.
    pub fn calls(&self) -> usize {
        self.started.iter().filter(|s| **s).count()
    }

    pub fn push(&mut self, text: &str) -> Vec<StreamEvent> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        if self.calls_at.is_none() {
            let safe = match self.buf.find(self.trigger) {
                Some(at) => {
                    self.calls_at = Some(at);
                    at
                }
                None => self.buf.len() - held_prefix(&self.buf, self.trigger),
            };
            // Trailing whitespace waits: before a call it is dropped (as
            // `parse_tool_calls` trims it), otherwise it goes out with what follows.
            let end = self.buf[..safe].trim_end().len().max(self.content_sent);
            self.content(end, &mut out);
        }
        if let Some(at) = self.calls_at {
            let region = &self.buf[at..];
            for (i, c) in scan_calls(region).iter().enumerate() {
                if self.started.len() <= i {
                    self.started.push(false);
                    self.args_sent.push(0);
                }
                let Some(name) = &c.name else { break };
                if !self.started[i] {
                    self.started[i] = true;
                    out.push(StreamEvent::CallStart {
                        index: i,
                        name: name.clone(),
                    });
                }
                if let Some(r) = &c.args {
                    let end = r.end.min(region.len());
                    // Quoted arguments are sent once complete (they must be unquoted).
                    let quoted = region[r.start..].starts_with('"');
                    let from = r.start + self.args_sent[i];
                    if quoted {
                        if c.args_complete && self.args_sent[i] == 0 {
                            self.args_sent[i] = end - r.start;
                            out.push(StreamEvent::Arguments {
                                index: i,
                                fragment: args_text(region, c),
                            });
                        }
                    } else if end > from && region.is_char_boundary(end) {
                        out.push(StreamEvent::Arguments {
                            index: i,
                            fragment: region[from..end].to_string(),
                        });
                        self.args_sent[i] = end - r.start;
                    }
                }
            }
        }
        out
    }

    /// End of output: held-back text that never became a trigger is content.
    pub fn finish(&mut self) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        if self.calls_at.is_none() {
            self.content(self.buf.len(), &mut out);
        }
        out
    }

    fn content(&mut self, upto: usize, out: &mut Vec<StreamEvent>) {
        if upto > self.content_sent {
            let piece = &self.buf[self.content_sent..upto];
            // Whitespace before a call or before any text is not worth a chunk.
            let leading = self.content_sent == 0 || self.calls_at.is_some();
            if !(leading && piece.trim().is_empty()) {
                out.push(StreamEvent::Content(piece.to_string()));
                self.content_sent = upto;
            } else if self.calls_at.is_some() {
                self.content_sent = upto;
            }
        }
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `trigger`.
fn held_prefix(text: &str, trigger: &str) -> usize {
    let max = text.len().min(trigger.len().saturating_sub(1));
    (1..=max)
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n)
                && trigger
                    .as_bytes()
                    .starts_with(&text.as_bytes()[text.len() - n..])
        })
        .unwrap_or(0)
}
