//! Request bodies. Unknown fields are ignored (SDKs send extras); known fields are typed,
//! so a wrong type fails deserialization at that field's path.

use std::collections::BTreeMap;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub seed: Option<i64>,
    pub stop: Option<StopSpec>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub logit_bias: Option<BTreeMap<String, f32>>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<u32>,
    pub n: Option<u32>,
    pub user: Option<String>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub response_format: Option<ResponseFormat>,
    pub tools: Option<Vec<Tool>>,
    /// `"none"`, `"auto"`, `"required"` or `{"type": "function", "function": {"name": ..}}`;
    /// checked by the server so a bad value gets a precise message.
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    /// llama.cpp-style extensions.
    pub top_k: Option<u32>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    /// Keep generating past end-of-generation tokens (llama.cpp/vLLM extension,
    /// for benchmarks with a fixed token count).
    pub ignore_eos: Option<bool>,
    /// llama.cpp extension: `"auto"` (default) or `"deepseek"` put a thinking model's
    /// `<think>` block in `reasoning_content`; `"none"` leaves it in `content`.
    pub reasoning_format: Option<String>,
    /// Extra variables for the chat template (vLLM/llama.cpp extension), e.g.
    /// `{"enable_thinking": false}` for Qwen3.
    pub chat_template_kwargs: Option<serde_json::Map<String, Value>>,
    /// Deprecated forms of `tools` / `tool_choice`, and audio output: read only to be
    /// refused by name (ignoring them would answer without the calls or audio asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub functions: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_call: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modalities: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio: Option<Value>,
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: Option<Prompt>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub seed: Option<i64>,
    pub stop: Option<StopSpec>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub logit_bias: Option<BTreeMap<String, f32>>,
    /// Number of most likely tokens to list per position (0–5 in OpenAI; the sampled
    /// token's log-probability is always reported when this is set).
    pub logprobs: Option<u32>,
    pub echo: Option<bool>,
    pub n: Option<u32>,
    pub best_of: Option<u32>,
    pub suffix: Option<String>,
    pub user: Option<String>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub top_k: Option<u32>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    /// Keep generating past end-of-generation tokens (llama.cpp/vLLM extension,
    /// for benchmarks with a fixed token count).
    pub ignore_eos: Option<bool>,
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

/// `response_format`: `text`, `json_object`, or `json_schema` with its schema.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: String,
    pub json_schema: Option<JsonSchemaFormat>,
}

/// `response_format.json_schema`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JsonSchemaFormat {
    pub name: Option<String>,
    pub description: Option<String>,
    pub schema: Option<Value>,
    pub strict: Option<bool>,
}

/// One entry of `tools`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionDef,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionDef {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// A tool call, in an assistant message of the history or in a response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    #[serde(default)]
    pub id: String,
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_kind() -> String {
    "function".into()
}

/// `arguments` is JSON text (an object sent by a lenient client is accepted and
/// printed back to text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    #[serde(deserialize_with = "arguments_text")]
    pub arguments: String,
}

fn arguments_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Null => Ok("{}".into()),
        v @ Value::Object(_) => Ok(v.to_string()),
        other => Err(de::Error::custom(format!(
            "invalid type: {}, expected a JSON string",
            kind_of(&other)
        ))),
    }
}

/// One chat message. `content` may be a string, a list of content parts, or null
/// (an assistant message that only carried tool calls).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: MessageContent,
    pub name: Option<String>,
    /// Assistant messages: the calls it made.
    pub tool_calls: Option<Vec<ToolCall>>,
    /// Tool messages: which call this is the result of.
    pub tool_call_id: Option<String>,
    /// Assistant messages: the reasoning of a thinking model, as it was returned
    /// (templates such as Qwen3's place it back in the conversation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
}

/// Message content: text, or text parts concatenated.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct MessageContent(pub String);

impl<'de> Deserialize<'de> for MessageContent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(MessageContent(String::new())),
            Value::String(s) => Ok(MessageContent(s)),
            Value::Array(parts) => {
                let mut text = String::new();
                for (i, part) in parts.iter().enumerate() {
                    let kind = part.get("type").and_then(Value::as_str);
                    match (kind, part.get("text")) {
                        (Some("text"), Some(Value::String(t))) => text.push_str(t),
                        (Some("text"), _) => {
                            return Err(de::Error::custom(format!(
                                "content part {i}: a text part needs a string `text`"
                            )));
                        }
                        (Some(other), _) => {
                            return Err(de::Error::custom(format!(
                                "content part {i}: type `{other}` is not supported (only `text`)"
                            )));
                        }
                        (None, _) => {
                            return Err(de::Error::custom(format!(
                                "content part {i}: expected an object with a string `type`"
                            )));
                        }
                    }
                }
                Ok(MessageContent(text))
            }
            other => Err(de::Error::custom(format!(
                "invalid type: {}, expected a string or an array of content parts",
                kind_of(&other)
            ))),
        }
    }
}

/// `stop`: one string or a list of strings.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct StopSpec(pub Vec<String>);

impl<'de> Deserialize<'de> for StopSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(StopSpec(Vec::new())),
            Value::String(s) => Ok(StopSpec(vec![s])),
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    other => Err(de::Error::custom(format!(
                        "invalid type in list: {}, expected a string",
                        kind_of(&other)
                    ))),
                })
                .collect::<Result<_, _>>()
                .map(StopSpec),
            other => Err(de::Error::custom(format!(
                "invalid type: {}, expected a string or an array of strings",
                kind_of(&other)
            ))),
        }
    }
}

/// `prompt` of the completions endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Prompt {
    /// One or more texts (OpenAI runs one completion per text).
    Texts(Vec<String>),
    /// One or more token-id sequences.
    Tokens(Vec<Vec<u32>>),
}

impl<'de> Deserialize<'de> for Prompt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bad = |what: &str| {
            de::Error::custom(format!(
                "invalid type: {what}, expected a string, an array of strings, an array of token ids or an array of token-id arrays"
            ))
        };
        let token = |v: &Value| v.as_u64().and_then(|t| u32::try_from(t).ok());
        match Value::deserialize(d)? {
            Value::String(s) => Ok(Prompt::Texts(vec![s])),
            Value::Array(items) if items.is_empty() => Ok(Prompt::Texts(Vec::new())),
            Value::Array(items) => {
                if items.iter().all(Value::is_string) {
                    Ok(Prompt::Texts(
                        items
                            .into_iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect(),
                    ))
                } else if items.iter().all(|v| token(v).is_some()) {
                    Ok(Prompt::Tokens(vec![
                        items.iter().filter_map(token).collect(),
                    ]))
                } else if items.iter().all(|v| {
                    v.as_array()
                        .is_some_and(|a| a.iter().all(|t| token(t).is_some()))
                }) {
                    Ok(Prompt::Tokens(
                        items
                            .iter()
                            .filter_map(Value::as_array)
                            .map(|a| a.iter().filter_map(token).collect())
                            .collect(),
                    ))
                } else {
                    Err(bad("an array of mixed or invalid items"))
                }
            }
            other => Err(bad(kind_of(&other))),
        }
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chat_request_ignores_unknown_fields_and_parses_parts() {
        let r: ChatCompletionRequest = serde_json::from_value(json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": null}
            ],
            "stop": "x",
            "some_new_field": {"nested": true}
        }))
        .unwrap();
        assert_eq!(r.messages[1].content.0, "ab");
        assert_eq!(r.messages[2].content.0, "");
        assert_eq!(r.stop, Some(StopSpec(vec!["x".into()])));
    }

    #[test]
    fn wrong_types_are_errors() {
        let bad = [
            json!({"model": "m", "messages": [], "temperature": "hot"}),
            json!({"model": "m", "messages": [], "stop": 3}),
            json!({"model": "m", "messages": [], "stop": ["a", 1]}),
            json!({"model": "m", "messages": [{"role": "user", "content": 5}]}),
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
            json!({"model": "m", "messages": [], "max_tokens": -1}),
            json!({"messages": []}),
        ];
        for b in bad {
            assert!(
                serde_json::from_value::<ChatCompletionRequest>(b.clone()).is_err(),
                "{b}"
            );
        }
    }

    #[test]
    fn prompt_forms() {
        let p = |v: Value| serde_json::from_value::<Prompt>(v);
        assert_eq!(p(json!("hi")).unwrap(), Prompt::Texts(vec!["hi".into()]));
        assert_eq!(
            p(json!(["a", "b"])).unwrap(),
            Prompt::Texts(vec!["a".into(), "b".into()])
        );
        assert_eq!(p(json!([1, 2])).unwrap(), Prompt::Tokens(vec![vec![1, 2]]));
        assert_eq!(
            p(json!([[1], [2]])).unwrap(),
            Prompt::Tokens(vec![vec![1], vec![2]])
        );
        assert!(p(json!(["a", 1])).is_err());
        assert!(p(json!({"a": 1})).is_err());
        assert!(p(json!([-1])).is_err());
    }
}
