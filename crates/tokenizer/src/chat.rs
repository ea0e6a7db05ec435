//! Chat templates: the model's Jinja template (`tokenizer.chat_template`) rendered with
//! Hugging Face `transformers` semantics — `trim_blocks` + `lstrip_blocks`, loop
//! controls, Python string/dict methods, the `raise_exception` and `strftime_now`
//! globals and a `tojson` filter that prints like Python's `json.dumps`.
//!
//! FALLBACK: a model without a template gets ChatML
//! (`<|im_start|>{role}\n{content}<|im_end|>\n` per message, then
//! `<|im_start|>assistant\n` when a generation prompt is asked for), except that a
//! vocabulary with Gemma's `<start_of_turn>`/`<end_of_turn>` tokens gets the Gemma 3
//! template (see [`ChatTemplate::from_gguf_or_fallback`]).

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};
use thaw_gguf::{GgufFile, Value as GgufValue};

use crate::Tokenizer;

mod json;
mod time;

pub use time::rfc3339_utc;

/// ChatML, used when a model ships no template.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Gemma 3's chat template (Gemma GGUFs often ship without one).
pub const GEMMA3_TEMPLATE: &str = include_str!("templates/gemma3.jinja");

/// Marks errors raised by the template's own `raise_exception(...)`.
const RAISED: &str = "\u{1}raise_exception\u{1}";

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("chat template does not compile: {0}")]
    Syntax(String),
    /// The template called `raise_exception(message)`.
    #[error("chat template refused the conversation: {0}")]
    Raised(String),
    #[error("chat template failed to render: {0}")]
    Render(String),
    #[error("messages could not be converted for the template: {0}")]
    Input(String),
}

/// One chat message as templates expect it (OpenAI / Hugging Face shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: serde_json::Value::String(content.into()),
            tool_calls: None,
            tool_call_id: None,
            name: None,
        }
    }
}

/// A compiled chat template with the model's BOS/EOS strings.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos: String,
    eos: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bytes", &self.source.len())
            .finish()
    }
}

fn raise_exception(msg: String) -> Result<Value, Error> {
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!("{RAISED}{msg}"),
    ))
}

fn strftime_now(fmt: String) -> String {
    time::strftime_utc_now(&fmt)
}

fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    // Accepted for compatibility; Python's defaults are what we print.
    let _: Option<Value> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) if v.kind() == ValueKind::String => Some(v.as_str().unwrap_or("").to_string()),
        Some(v) => {
            let n = i64::try_from(v)?;
            Some(" ".repeat(n.max(0) as usize))
        }
    };
    let opts = json::Options {
        indent,
        sort_keys: sort_keys.unwrap_or(false),
        ensure_ascii: ensure_ascii.unwrap_or(false),
    };
    let mut out = String::new();
    json::write(&value, &opts, 0, &mut out)?;
    // The result is inserted verbatim (no HTML escaping, as in transformers).
    Ok(Value::from_safe_string(out))
}

impl ChatTemplate {
    /// Compiles `source` with Hugging Face semantics.
    pub fn new(
        source: impl Into<String>,
        bos: impl Into<String>,
        eos: impl Into<String>,
    ) -> Result<ChatTemplate, TemplateError> {
        let source = source.into();
        let mut env = Environment::new();
        let syntax = env
            .syntax()
            .to_builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| TemplateError::Syntax(e.to_string()))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat", source.clone())
            .map_err(|e| TemplateError::Syntax(describe(&e)))?;
        Ok(ChatTemplate {
            env,
            source,
            bos: bos.into(),
            eos: eos.into(),
        })
    }

    /// ChatML (the documented fallback for models without a template).
    pub fn chatml(bos: impl Into<String>, eos: impl Into<String>) -> ChatTemplate {
        Self::new(CHATML_TEMPLATE, bos, eos).expect("built-in ChatML template compiles")
    }

    /// The model's own template (`tokenizer.chat_template`), with BOS/EOS strings taken
    /// from the tokenizer. `None` if the model has none or it does not compile; use
    /// [`ChatTemplate::try_from_gguf`] to see the compile error.
    pub fn from_gguf(gguf: &GgufFile, tok: &Tokenizer) -> Option<ChatTemplate> {
        Self::try_from_gguf(gguf, tok).ok().flatten()
    }

    /// Like [`ChatTemplate::from_gguf`], but a template that fails to compile is an error.
    pub fn try_from_gguf(
        gguf: &GgufFile,
        tok: &Tokenizer,
    ) -> Result<Option<ChatTemplate>, TemplateError> {
        let Some(GgufValue::String(src)) = gguf.get("tokenizer.chat_template") else {
            return Ok(None);
        };
        let (bos, eos) = special_strings(tok);
        Self::new(src.clone(), bos, eos).map(Some)
    }

    /// The model's template if it has one, else Gemma 3's when the vocabulary has
    /// `<start_of_turn>`/`<end_of_turn>`, else ChatML. The flag says whether a
    /// fallback was used.
    pub fn from_gguf_or_fallback(
        gguf: &GgufFile,
        tok: &Tokenizer,
    ) -> Result<(ChatTemplate, bool), TemplateError> {
        if let Some(t) = Self::try_from_gguf(gguf, tok)? {
            return Ok((t, false));
        }
        let (bos, eos) = special_strings(tok);
        let gemma =
            tok.token_id("<start_of_turn>").is_some() && tok.token_id("<end_of_turn>").is_some();
        let src = if gemma {
            GEMMA3_TEMPLATE
        } else {
            CHATML_TEMPLATE
        };
        Ok((Self::new(src, bos, eos)?, true))
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Does the template mention `tools` (so it can render tool definitions)?
    pub fn has_tools_section(&self) -> bool {
        let b = self.source.as_bytes();
        let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        self.source.match_indices("tools").any(|(i, _)| {
            let before = i == 0 || !ident(b[i - 1]);
            let after = i + 5 >= b.len() || !ident(b[i + 5]);
            before && after
        })
    }

    /// Renders a conversation. `messages` are JSON objects with `role`, `content` and
    /// optionally `tool_calls`, `tool_call_id`, `name`; `tools` is a JSON list or
    /// `None` (then `tools` is undefined in the template, as in transformers).
    pub fn render(
        &self,
        messages: &[serde_json::Value],
        add_generation_prompt: bool,
        tools: Option<&serde_json::Value>,
    ) -> Result<String, TemplateError> {
        self.render_with_vars(messages, add_generation_prompt, tools, None)
    }

    /// [`Self::render`] with extra template variables (a request's
    /// `chat_template_kwargs`, e.g. `enable_thinking`); they cannot replace
    /// `messages`, `tools`, `add_generation_prompt` or the special tokens.
    pub fn render_with_vars(
        &self,
        messages: &[serde_json::Value],
        add_generation_prompt: bool,
        tools: Option<&serde_json::Value>,
        vars: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<String, TemplateError> {
        let mut ctx = vars.cloned().unwrap_or_default();
        ctx.remove("tools");
        ctx.insert(
            "messages".into(),
            serde_json::Value::Array(messages.to_vec()),
        );
        ctx.insert("add_generation_prompt".into(), add_generation_prompt.into());
        ctx.insert("bos_token".into(), self.bos.clone().into());
        ctx.insert("eos_token".into(), self.eos.clone().into());
        if let Some(t) = tools {
            ctx.insert("tools".into(), t.clone());
        }
        let ctx = Value::from(minijinja::value::Serde(serde_json::Value::Object(ctx)));
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| TemplateError::Render(describe(&e)))?;
        tmpl.render(ctx).map_err(|e| match raised_message(&e) {
            Some(msg) => TemplateError::Raised(msg),
            None => TemplateError::Render(describe(&e)),
        })
    }

    /// [`ChatTemplate::render`] for typed messages.
    pub fn render_messages(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        tools: Option<&serde_json::Value>,
    ) -> Result<String, TemplateError> {
        let msgs = messages
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TemplateError::Input(e.to_string()))?;
        self.render(&msgs, add_generation_prompt, tools)
    }
}

fn special_strings(tok: &Tokenizer) -> (String, String) {
    let text = |id: Option<u32>| {
        id.map(|i| tok.token_text(i).to_string())
            .unwrap_or_default()
    };
    (text(tok.bos_id()), text(tok.eos_id()))
}

fn raised_message(e: &Error) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let detail = err.downcast_ref::<Error>().and_then(|me| me.detail());
        if let Some(msg) = detail.and_then(|d| d.strip_prefix(RAISED)) {
            return Some(msg.to_string());
        }
        cur = err.source();
    }
    None
}

fn describe(e: &Error) -> String {
    let mut s = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(err) = cur {
        s.push_str(": ");
        s.push_str(&err.to_string());
        cur = err.source();
    }
    s
}

#[cfg(test)]
mod tests;
