//! Constrained decoding: JSON schemas, `json_object` and tool-call grammars turned into
//! a token mask per step with `llguidance`, so the model can only write output that
//! parses and validates.
//!
//! [`Constrainer`] is built once per model (token trie from our own vocabulary: about
//! 0.1 s) and compiles grammars into [`Constraint`]s, one per sequence. Each step the
//! caller masks the logits with [`Constraint::mask`] before sampling and reports the
//! sampled token with [`Constraint::commit`]. A lazy constraint (tool calls with
//! `tool_choice: auto`) stays inactive until its trigger text (e.g. `<tool_call>`)
//! appears in the output, then constrains the rest of the call.

mod tools;
mod vocab;

pub use tools::{
    CallScan, ParsedCall, StreamEvent, ToolCallStream, ToolChoice, ToolFormat, ToolSpec,
    generic_tool_prompt, parse_tool_calls, scan_calls,
};

use std::sync::Arc;
use std::time::{Duration, Instant};

use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use serde_json::{Value, json};
use thaw_tokenizer::Tokenizer;
use toktrie::TokEnv;

#[derive(Debug, thiserror::Error)]
pub enum ConstrainError {
    /// The schema uses keywords the grammar engine cannot enforce.
    #[error("unsupported JSON-schema keyword(s): {keywords}")]
    Unsupported { keywords: String },
    /// The schema or grammar is malformed.
    #[error("invalid grammar: {0}")]
    Grammar(String),
    /// The token trie could not be built from the vocabulary.
    #[error("vocabulary: {0}")]
    Vocab(String),
    /// The sampled token broke the grammar (only if the mask was not applied).
    #[error("constraint violated: {0}")]
    Violated(String),
}

/// Per-model grammar compiler (holds the token trie).
pub struct Constrainer {
    factory: ParserFactory,
    env: TokEnv,
}

impl std::fmt::Debug for Constrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constrainer")
            .field("vocab", &self.env.tok_trie().vocab_size())
            .finish()
    }
}

/// How compact constrained JSON is. Fixed separators and no free whitespace: small
/// models otherwise pad with newlines/spaces until `max_tokens` runs out.
fn json_options() -> Value {
    json!({
        "whitespace_flexible": false,
        "item_separator": ", ",
        "key_separator": ": ",
    })
}

/// Objects that list `properties` but say nothing of `additionalProperties` get
/// `additionalProperties: false` (what OpenAI's strict mode requires anyway): the
/// output stays valid against the original schema, and a small model cannot ramble on
/// with invented keys until `max_tokens`. Not applied under `allOf`, where it would
/// make the parts contradict each other.
pub fn tighten(schema: &mut Value) {
    let Value::Object(m) = schema else { return };
    if m.contains_key("properties") && !m.contains_key("additionalProperties") {
        m.insert("additionalProperties".into(), Value::Bool(false));
    }
    for (k, v) in m.iter_mut() {
        match k.as_str() {
            "properties" | "$defs" | "definitions" => {
                if let Value::Object(props) = v {
                    props.values_mut().for_each(tighten);
                }
            }
            "items" | "additionalProperties" => tighten(v),
            "anyOf" | "oneOf" | "prefixItems" => {
                if let Value::Array(list) = v {
                    list.iter_mut().for_each(tighten);
                }
            }
            _ => {}
        }
    }
}

/// Adds the compact-JSON options to a schema (kept if the caller set `x-guidance`)
/// and [`tighten`]s it.
pub fn with_json_options(schema: &Value) -> Value {
    let mut schema = schema.clone();
    tighten(&mut schema);
    match schema {
        Value::Object(mut m) if !m.contains_key("x-guidance") => {
            m.insert("x-guidance".into(), json_options());
            Value::Object(m)
        }
        // `true` or already configured: leave as is.
        Value::Bool(true) => json!({"x-guidance": json_options()}),
        other => other,
    }
}

impl Constrainer {
    pub fn new(tok: Arc<Tokenizer>) -> Result<Self, ConstrainError> {
        let env = vocab::tok_env(tok)?;
        let mut factory =
            ParserFactory::new_simple(&env).map_err(|e| ConstrainError::Vocab(e.to_string()))?;
        factory.quiet();
        Ok(Constrainer { factory, env })
    }

    /// Output must be JSON valid against `schema` (OpenAI `json_schema`).
    pub fn json_schema(&self, schema: &Value) -> Result<Constraint, ConstrainError> {
        if !schema.is_object() && !schema.is_boolean() {
            return Err(ConstrainError::Grammar(
                "the schema must be a JSON object".into(),
            ));
        }
        self.compile(TopLevelGrammar::from_json_schema(with_json_options(schema)))
    }

    /// Output must be a JSON object (OpenAI `json_object`).
    pub fn json_object(&self) -> Result<Constraint, ConstrainError> {
        self.json_schema(&json!({"type": "object"}))
    }

    /// Output must match a Lark grammar (llguidance dialect).
    pub fn lark(&self, grammar: &str) -> Result<Constraint, ConstrainError> {
        self.compile(TopLevelGrammar::from_lark(grammar.to_string()))
    }

    /// Like [`Constrainer::lark`], but inactive until `trigger` appears in the output;
    /// the grammar then has to match the output from the trigger on.
    pub fn lazy_lark(&self, grammar: &str, trigger: &str) -> Result<Constraint, ConstrainError> {
        let mut c = self.lark(grammar)?;
        c.lazy = Some(Lazy {
            trigger: trigger.to_string(),
            text: Vec::new(),
        });
        Ok(c)
    }

    fn compile(&self, g: TopLevelGrammar) -> Result<Constraint, ConstrainError> {
        let parser = self.factory.create_parser(g).map_err(compile_error)?;
        Ok(Constraint {
            matcher: Matcher::new(Ok(parser)),
            env: self.env.clone(),
            lazy: None,
            stats: MaskStats::default(),
        })
    }
}

/// llguidance reports unsupported keywords as `Unimplemented keys: ["a", "b"]`.
fn compile_error(e: anyhow::Error) -> ConstrainError {
    let msg = format!("{e:#}");
    if let Some(i) = msg.find("Unimplemented keys: [") {
        let rest = &msg[i + "Unimplemented keys: [".len()..];
        let keys = rest.split(']').next().unwrap_or("").replace('"', "`");
        return ConstrainError::Unsupported { keywords: keys };
    }
    ConstrainError::Grammar(msg)
}

/// Time spent computing masks, for the per-token cost figure.
#[derive(Debug, Clone, Copy, Default)]
pub struct MaskStats {
    pub masks: u64,
    pub time: Duration,
}

#[derive(Clone)]
struct Lazy {
    trigger: String,
    /// Output so far (bytes), searched for the trigger.
    text: Vec<u8>,
}

/// One sequence's grammar state. Cloning gives an independent copy (a deep clone:
/// llguidance's plain clone shares parser state).
pub struct Constraint {
    matcher: Matcher,
    env: TokEnv,
    lazy: Option<Lazy>,
    stats: MaskStats,
}

impl Clone for Constraint {
    fn clone(&self) -> Self {
        Constraint {
            matcher: self.matcher.deep_clone(),
            env: self.env.clone(),
            lazy: self.lazy.clone(),
            stats: self.stats,
        }
    }
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("active", &self.is_active())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Constraint {
    /// Whether the grammar is enforcing (false while a lazy one waits for its trigger).
    pub fn is_active(&self) -> bool {
        self.lazy.is_none()
    }

    pub fn stats(&self) -> MaskStats {
        self.stats
    }

    /// Sets the logits of every token the grammar forbids to -inf. Logits past the
    /// vocabulary (padded output heads) are forbidden too.
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<(), ConstrainError> {
        if self.lazy.is_some() {
            return Ok(());
        }
        let t = Instant::now();
        let allowed = self
            .matcher
            .compute_mask_or_eos()
            .map_err(|e| ConstrainError::Violated(e.to_string()))?;
        let mut any = false;
        for (i, l) in logits.iter_mut().enumerate() {
            if i < allowed.len() && allowed.is_allowed(i as u32) {
                any |= l.is_finite() || *l == f32::INFINITY;
            } else {
                *l = f32::NEG_INFINITY;
            }
        }
        self.stats.masks += 1;
        self.stats.time += t.elapsed();
        if !any {
            return Err(ConstrainError::Violated(
                "the grammar allows no token of this vocabulary".into(),
            ));
        }
        Ok(())
    }

    /// Advances the grammar by the sampled token. End-of-generation tokens end it.
    pub fn commit(&mut self, token: u32) -> Result<(), ConstrainError> {
        if let Some(lazy) = &mut self.lazy {
            let trie = self.env.tok_trie();
            lazy.text.extend_from_slice(trie.token(token));
            let Some(at) = find(&lazy.text, lazy.trigger.as_bytes()) else {
                return Ok(());
            };
            // The trigger may sit inside a token: feed the grammar the output from the
            // trigger on, re-tokenized (the lexer works on bytes, so any split works).
            let tail = lazy.text[at..].to_vec();
            self.lazy = None;
            let toks = self.env.tokenize_bytes(&tail);
            return self
                .matcher
                .consume_tokens(&toks)
                .map_err(|e| ConstrainError::Violated(e.to_string()));
        }
        if self.matcher.is_stopped() {
            return Ok(());
        }
        self.matcher
            .consume_token(token)
            .map_err(|e| ConstrainError::Violated(e.to_string()))
    }

    /// True once the grammar is complete and nothing but end-of-generation may follow.
    pub fn is_finished(&mut self) -> bool {
        self.lazy.is_none() && self.matcher.is_stopped()
    }

    /// Whether the output so far is a complete match (EOS allowed now).
    pub fn is_accepting(&mut self) -> bool {
        self.lazy.is_some()
            || self.matcher.is_stopped()
            || self.matcher.is_accepting().unwrap_or(false)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests;
