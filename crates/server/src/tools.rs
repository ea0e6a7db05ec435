//! The chat endpoint's tool calling and structured output: checking `tools`,
//! `tool_choice` and `response_format`, rendering tool calls and results in the
//! history, and choosing the grammar the output is constrained to.
//!
//! Templates with a tools section get `tools` and the messages' `tool_calls` as
//! transformers passes them. Templates without one (SmolLM2, Gemma 3) get the generic
//! tool prompt (see [`thaw_constrain::generic_tool_prompt`]) in the system message,
//! calls written back as Hermes `<tool_call>` blocks and tool results as a user turn
//! in `<tool_response>` tags.

use serde_json::{Value, json};
use thaw_constrain::{
    ConstrainError, Constrainer, Constraint, ParsedCall, ToolChoice, ToolFormat, ToolSpec,
    generic_tool_prompt,
};
use thaw_engine::Engine;
use thaw_openai::{ChatCompletionRequest, ResponseFormat, Tool};

use crate::error::ApiError;

/// What the request asks for, checked.
pub struct ToolPlan {
    pub tools: Vec<Tool>,
    pub choice: ToolChoice,
    pub parallel: bool,
    /// Format calls are written and parsed in (None: no tools in play).
    pub format: Option<ToolFormat>,
    /// The template renders `tools` itself.
    pub native: bool,
    pub json: Option<Value>,
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub fn plan(req: &ChatCompletionRequest, engine: &Engine) -> Result<ToolPlan, ApiError> {
    let tools = req.tools.clone().unwrap_or_default();
    for (i, t) in tools.iter().enumerate() {
        if t.kind != "function" {
            return Err(ApiError::invalid(
                format!("tools[{i}].type"),
                format!("Tool type `{}` is not supported (only `function`).", t.kind),
            ));
        }
        if !valid_name(&t.function.name) {
            return Err(ApiError::invalid(
                format!("tools[{i}].function.name"),
                "A function name must be 1-64 characters of a-z, A-Z, 0-9, `_` and `-`.",
            ));
        }
        if let Some(p) = &t.function.parameters
            && !p.is_object()
        {
            return Err(ApiError::invalid(
                format!("tools[{i}].function.parameters"),
                "`parameters` must be a JSON-schema object.",
            ));
        }
        if tools[..i]
            .iter()
            .any(|o| o.function.name == t.function.name)
        {
            return Err(ApiError::invalid(
                format!("tools[{i}].function.name"),
                format!("Duplicate function name `{}`.", t.function.name),
            ));
        }
    }
    let choice = match &req.tool_choice {
        None | Some(Value::Null) if tools.is_empty() => ToolChoice::None,
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => {
                return Err(ApiError::invalid(
                    "tool_choice",
                    format!(
                        "Invalid `tool_choice` `{other}`: expected `none`, `auto`, `required` or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}."
                    ),
                ));
            }
        },
        Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
            Some(n) => ToolChoice::Named(n.to_string()),
            None => {
                return Err(ApiError::invalid(
                    "tool_choice",
                    "`tool_choice` must be a string or {\"type\": \"function\", \"function\": {\"name\": ...}}.",
                ));
            }
        },
    };
    match &choice {
        ToolChoice::Required | ToolChoice::Named(_) if tools.is_empty() => {
            return Err(ApiError::invalid(
                "tool_choice",
                "`tool_choice` requires `tools` to be given.",
            ));
        }
        ToolChoice::Named(n) if !tools.iter().any(|t| &t.function.name == n) => {
            return Err(ApiError::invalid(
                "tool_choice",
                format!("`tool_choice` names `{n}`, which is not in `tools`."),
            ));
        }
        _ => {}
    }
    let json = response_format(req.response_format.as_ref())?;
    if json.is_some() && matches!(choice, ToolChoice::Required | ToolChoice::Named(_)) {
        return Err(ApiError::invalid(
            "response_format",
            "`response_format` cannot be combined with a forced `tool_choice`: the answer is a tool call.",
        ));
    }
    let source = engine.template().source();
    let detected = ToolFormat::detect(source);
    let native = detected.is_some() && engine.template().has_tools_section();
    let calls_possible = !tools.is_empty() && choice != ToolChoice::None && json.is_none();
    // Without a native format the generic prompt asks for Hermes-style calls.
    let format = calls_possible
        .then_some(if native { detected } else { None }.unwrap_or(ToolFormat::Hermes));
    let parallel = choice.parallel(req.parallel_tool_calls.unwrap_or(true));
    Ok(ToolPlan {
        tools,
        choice,
        parallel,
        format,
        native,
        json,
    })
}

/// The schema `response_format` asks for (`json_object`: any object).
fn response_format(f: Option<&ResponseFormat>) -> Result<Option<Value>, ApiError> {
    let Some(f) = f else { return Ok(None) };
    match f.kind.as_str() {
        "text" => Ok(None),
        "json_object" => Ok(Some(json!({"type": "object"}))),
        "json_schema" => {
            let schema = f.json_schema.as_ref().and_then(|j| j.schema.clone());
            match schema {
                Some(s) if s.is_object() => Ok(Some(s)),
                Some(_) => Err(ApiError::invalid(
                    "response_format.json_schema.schema",
                    "`schema` must be a JSON-schema object.",
                )),
                None => Err(ApiError::invalid(
                    "response_format.json_schema",
                    "`response_format` of type `json_schema` needs `json_schema.schema`.",
                )),
            }
        }
        other => Err(ApiError::invalid(
            "response_format",
            format!(
                "`response_format` type `{other}` is not supported (`text`, `json_object`, `json_schema`)."
            ),
        )),
    }
}

fn constrain_error(param: &str, e: ConstrainError) -> ApiError {
    match e {
        ConstrainError::Unsupported { keywords } => ApiError::invalid(
            param,
            format!(
                "The schema uses JSON-schema keyword(s) {keywords} that constrained decoding cannot enforce; remove them."
            ),
        ),
        ConstrainError::Grammar(m) => {
            ApiError::invalid(param, format!("The schema cannot be compiled: {m}"))
        }
        other => ApiError::internal(other.to_string()),
    }
}

/// The grammar for this request, if any. Compiles every tool's schema on its own
/// first so an unsupported keyword is reported against that tool.
pub fn constraint(
    plan: &ToolPlan,
    cons: &Constrainer,
    engine: &Engine,
) -> Result<Option<Constraint>, ApiError> {
    if let Some(schema) = &plan.json {
        return cons
            .json_schema(schema)
            .map(Some)
            .map_err(|e| constrain_error("response_format.json_schema.schema", e));
    }
    let Some(format) = plan.format else {
        return Ok(None);
    };
    let mut specs = Vec::new();
    for (i, t) in plan.tools.iter().enumerate() {
        let params = t
            .function
            .parameters
            .clone()
            .unwrap_or_else(|| json!({"type": "object"}));
        cons.json_schema(&params)
            .map_err(|e| constrain_error(&format!("tools[{i}].function.parameters"), e))?;
        if let ToolChoice::Named(n) = &plan.choice
            && n != &t.function.name
        {
            continue;
        }
        specs.push(ToolSpec {
            name: t.function.name.clone(),
            parameters: params,
        });
    }
    let tok = engine.tokenizer();
    let control = |s: &str| tok.token_id(s).filter(|&id| tok.is_control(id));
    let grammar = format.grammar(&specs, plan.parallel, control);
    let c = match plan.choice {
        ToolChoice::Auto => cons.lazy_lark(&grammar, format.trigger()),
        _ => cons.lark(&grammar),
    };
    c.map(Some).map_err(|e| constrain_error("tools", e))
}

/// Messages as the template sees them: tool calls and results included, rendered
/// natively or through the generic prompt.
pub fn messages(
    req: &ChatCompletionRequest,
    plan: &ToolPlan,
) -> Result<(Vec<Value>, Option<Value>), ApiError> {
    let tools_json =
        (!plan.tools.is_empty()).then(|| serde_json::to_value(&plan.tools).unwrap_or(Value::Null));
    let mut out: Vec<Value> = Vec::with_capacity(req.messages.len() + 1);
    let generic = !plan.native;
    for (i, m) in req.messages.iter().enumerate() {
        // Templates know `system`; `developer` is OpenAI's newer name for it.
        let role = if m.role == "developer" {
            "system"
        } else {
            m.role.as_str()
        };
        let calls: Vec<ParsedCall> = m
            .tool_calls
            .iter()
            .flatten()
            .map(|c| ParsedCall {
                name: c.function.name.clone(),
                arguments: c.function.arguments.clone(),
            })
            .collect();
        if m.tool_calls.is_some() && role != "assistant" {
            return Err(ApiError::invalid(
                format!("messages[{i}].tool_calls"),
                "Only assistant messages carry `tool_calls`.",
            ));
        }
        if generic {
            match role {
                "tool" | "function" => {
                    let piece = format!("<tool_response>\n{}\n</tool_response>", m.content.0);
                    // Consecutive results form one user turn (templates alternate roles).
                    if let Some(last) = out.last_mut()
                        && last.get("tool_results").is_some()
                    {
                        let c = last["content"].as_str().unwrap_or("").to_string();
                        last["content"] = Value::String(format!("{c}\n{piece}"));
                        continue;
                    }
                    out.push(json!({"role": "user", "content": piece, "tool_results": true}));
                }
                "assistant" if !calls.is_empty() => {
                    let text = ToolFormat::Hermes.render_calls(&calls);
                    let content = if m.content.0.is_empty() {
                        text
                    } else {
                        format!("{}\n{text}", m.content.0)
                    };
                    out.push(json!({"role": "assistant", "content": content}));
                }
                _ => out.push(json!({"role": role, "content": m.content.0})),
            }
        } else {
            let mut v = json!({"role": role, "content": m.content.0});
            if !calls.is_empty() {
                // transformers templates expect `arguments` as an object.
                let tc: Vec<Value> = m
                    .tool_calls
                    .iter()
                    .flatten()
                    .map(|c| {
                        let args: Value = serde_json::from_str(&c.function.arguments)
                            .unwrap_or_else(|_| Value::String(c.function.arguments.clone()));
                        json!({"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": args}})
                    })
                    .collect();
                v["tool_calls"] = Value::Array(tc);
            }
            if let Some(id) = &m.tool_call_id {
                v["tool_call_id"] = Value::String(id.clone());
            }
            if let Some(n) = &m.name {
                v["name"] = Value::String(n.clone());
            }
            if let Some(r) = m.reasoning_content.as_ref().filter(|_| role == "assistant") {
                v["reasoning_content"] = Value::String(r.clone());
            }
            out.push(v);
        }
    }
    for m in &mut out {
        if let Some(o) = m.as_object_mut() {
            o.remove("tool_results");
        }
    }
    if generic {
        if let Some(tools) = tools_json.as_ref().and_then(Value::as_array) {
            let prompt = generic_tool_prompt(tools, &plan.choice);
            match out.first_mut() {
                Some(first) if first["role"] == "system" => {
                    let c = first["content"].as_str().unwrap_or("").to_string();
                    first["content"] = Value::String(if c.is_empty() {
                        prompt
                    } else {
                        format!("{c}\n\n{prompt}")
                    });
                }
                _ => out.insert(0, json!({"role": "system", "content": prompt})),
            }
        }
        return Ok((out, None));
    }
    Ok((out, tools_json))
}
