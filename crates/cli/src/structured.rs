//! `thaw run --json-schema FILE` and `--tools FILE`: the same constrained decoding the
//! server does, for local use.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use thaw_constrain::{
    Constraint, ToolChoice, ToolFormat, ToolSpec, generic_tool_prompt, parse_tool_calls, scan_calls,
};
use thaw_engine::Engine;

/// A `--json-schema`/`--tools` argument: the JSON itself when it starts with `{` or
/// `[` (no file is named like that in practice), else the path of a file holding it.
fn read_json(arg: &Path) -> Result<Value> {
    let inline = arg.to_string_lossy();
    let inline = inline.trim_start();
    if inline.starts_with(['{', '[']) {
        return serde_json::from_str(inline)
            .context("the inline JSON argument is not valid JSON (or pass the path of a file)");
    }
    let text =
        std::fs::read_to_string(arg).with_context(|| format!("reading {}", arg.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", arg.display()))
}

/// Whether a `--json-schema` answer is a whole JSON value (not one cut off by `-n` or
/// a full context before it closed).
pub fn json_closed(answer: &str) -> bool {
    serde_json::from_str::<Value>(answer.trim()).is_ok()
}

pub fn schema_constraint(engine: &Engine, file: &Path) -> Result<Constraint> {
    let schema = read_json(file)?;
    let cons = engine.constrainer()?;
    cons.json_schema(&schema)
        .with_context(|| format!("{}: cannot constrain to this schema", file.display()))
}

/// Tools offered to the model in a `thaw run` chat.
pub struct Tools {
    pub format: ToolFormat,
    pub constraint: Constraint,
    /// Passed to templates with a tools section.
    pub template_tools: Option<Value>,
    /// Generic tool prompt for templates without one.
    pub system: Option<String>,
    /// The answer must be a call (`--tool-choice required` or a tool's name).
    pub call_due: bool,
}

impl Tools {
    /// `{"tool_calls": [{"name", "arguments"}]}` when the answer made calls.
    pub fn calls_line(&self, answer: &str) -> Option<String> {
        let (_, calls) = parse_tool_calls(self.format, answer);
        let calls = calls.filter(|c| !c.is_empty())?;
        let list: Vec<Value> = calls
            .iter()
            .map(|c| {
                let args: Value = serde_json::from_str(&c.arguments)
                    .unwrap_or(Value::String(c.arguments.clone()));
                json!({"name": c.name, "arguments": args})
            })
            .collect();
        Some(json!({"tool_calls": list}).to_string())
    }
}

impl Tools {
    /// Whether an answer that was cut off (by `-n` or a full context) was cut in a
    /// tool call, before its JSON closed: a call was begun and did not close, or none
    /// was begun when one was due (`required`, a named tool), or the answer ends in
    /// the start of the call marker (two bytes or more). A text answer (`auto`) begins
    /// no call.
    pub fn call_unclosed(&self, answer: &str) -> bool {
        let trigger = self.format.trigger();
        match answer.find(trigger) {
            Some(at) => {
                let calls = scan_calls(&answer[at..]);
                calls.is_empty() || calls.iter().any(|c| !c.complete)
            }
            None => {
                let tail = answer.trim_end();
                // Two bytes at least: a text answer may well end in `<` or `{`.
                self.call_due
                    || (2..trigger.len())
                        .any(|k| trigger.is_char_boundary(k) && tail.ends_with(&trigger[..k]))
            }
        }
    }
}

pub fn load_tools(engine: &Engine, file: &Path, choice: &str) -> Result<Tools> {
    let tools = read_json(file)?;
    let Some(list) = tools.as_array() else {
        bail!("{}: expected a JSON array of tools", file.display());
    };
    if list.is_empty() {
        bail!(
            "{}: the tools array is empty; list at least one tool, or leave out --tools",
            file.display()
        );
    }
    let mut specs = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let f = t.get("function").unwrap_or(t);
        let Some(name) = f.get("name").and_then(Value::as_str) else {
            bail!("{}: tools[{i}] has no function name", file.display());
        };
        specs.push(ToolSpec {
            name: name.to_string(),
            parameters: f
                .get("parameters")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object"})),
        });
    }
    let choice = match choice {
        "auto" => ToolChoice::Auto,
        "required" => ToolChoice::Required,
        name if specs.iter().any(|s| s.name == name) => ToolChoice::Named(name.to_string()),
        other => bail!("--tool-choice {other}: not `auto`, `required` or a tool in the file"),
    };
    if let ToolChoice::Named(n) = &choice {
        specs.retain(|s| &s.name == n);
    }
    let detected = ToolFormat::detect(engine.template().source());
    let native = detected.is_some() && engine.template().has_tools_section();
    let format = if native {
        detected.unwrap_or(ToolFormat::Hermes)
    } else {
        ToolFormat::Hermes
    };
    let tok = engine.tokenizer();
    let control = |s: &str| tok.token_id(s).filter(|&id| tok.is_control(id));
    let grammar = format.grammar(&specs, choice.parallel(true), control);
    let cons = engine.constrainer()?;
    let call_due = choice != ToolChoice::Auto;
    let constraint = match choice {
        ToolChoice::Auto => cons.lazy_lark(&grammar, format.trigger()),
        _ => cons.lark(&grammar),
    }
    .with_context(|| format!("{}: cannot constrain to these tools", file.display()))?;
    Ok(Tools {
        format,
        constraint,
        template_tools: native.then(|| tools.clone()),
        system: (!native).then(|| generic_tool_prompt(list, &choice)),
        call_due,
    })
}
