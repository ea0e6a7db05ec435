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

mod reasoning;
mod schema;
mod tools;
mod vocab;
mod wrapup;

pub use reasoning::{
    ReasoningSplit, ReasoningStream, ReasoningTokens, answer_start, split_reasoning,
};

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
use wrapup::{Closers, Depth, Progress, Recent};

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
    closers: Arc<Closers>,
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
/// make the parts contradict each other (nor to an object with an `allOf`, nor to the
/// definitions an `allOf` refers to), nor to objects that require a key their
/// `properties` do not list.
pub fn tighten(schema: &mut Value) {
    let mut under_all_of = std::collections::HashSet::new();
    refs_under_all_of(schema, false, &mut under_all_of);
    tighten_in(schema, &under_all_of);
}

fn tighten_in(schema: &mut Value, skip_defs: &std::collections::HashSet<String>) {
    let Value::Object(m) = schema else { return };
    let listed = |m: &serde_json::Map<String, Value>, key: &str| {
        m.get("properties")
            .and_then(Value::as_object)
            .is_some_and(|p| p.contains_key(key))
    };
    let required_listed = m
        .get("required")
        .and_then(Value::as_array)
        .is_none_or(|r| r.iter().all(|k| k.as_str().is_some_and(|k| listed(m, k))));
    // An object with its own `allOf` gets keys from the parts too.
    let closable = m.contains_key("properties")
        && !m.contains_key("additionalProperties")
        && !m.contains_key("allOf");
    if closable && required_listed {
        m.insert("additionalProperties".into(), Value::Bool(false));
    }
    exclusive_as_inclusive(m, true);
    exclusive_as_inclusive(m, false);
    for (k, v) in m.iter_mut() {
        match k.as_str() {
            "properties" => {
                if let Value::Object(props) = v {
                    props.values_mut().for_each(|p| tighten_in(p, skip_defs));
                }
            }
            "$defs" | "definitions" => {
                if let Value::Object(defs) = v {
                    for (name, d) in defs.iter_mut() {
                        if !skip_defs.contains(&format!("#/{k}/{name}")) {
                            tighten_in(d, skip_defs);
                        }
                    }
                }
            }
            "items" | "additionalProperties" => tighten_in(v, skip_defs),
            "anyOf" | "oneOf" | "prefixItems" => {
                if let Value::Array(list) = v {
                    list.iter_mut().for_each(|p| tighten_in(p, skip_defs));
                }
            }
            _ => {}
        }
    }
}

/// The `$ref`s found anywhere under an `allOf`.
fn refs_under_all_of(v: &Value, inside: bool, out: &mut std::collections::HashSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref"
                    && inside
                    && let Some(r) = x.as_str()
                {
                    out.insert(r.to_string());
                }
                refs_under_all_of(x, inside || k == "allOf", out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs_under_all_of(x, inside, out)),
        _ => {}
    }
}

/// An integer `exclusiveMinimum` X ≥ 0 becomes `minimum` next-double-above-X when the
/// range ends below X + 1 at a non-integer (`exclusiveMinimum: 3, maximum: 3.5`):
/// llguidance 1.9.1 builds that range's regex with the fraction optional, so it let
/// `3` through. Mirrored below 0 (`lower` false): an integer `exclusiveMaximum` X ≤ 0
/// with a non-integer start above X − 1 becomes `maximum` next-double-below-X
/// (`minimum: -3.5, exclusiveMaximum: -3` let `-3` through, `exclusiveMaximum: 0`
/// let `-0`). For clients that read numbers as doubles the two are the same bound (a
/// decimal between X and the next double reads back as X, which the bound forbids).
fn exclusive_as_inclusive(m: &mut serde_json::Map<String, Value>, lower: bool) {
    // Worked out as the lower case on `s · value`.
    let (s, ex, inc, far) = if lower {
        (
            1.0,
            "exclusiveMinimum",
            "minimum",
            ["maximum", "exclusiveMaximum"],
        )
    } else {
        (
            -1.0,
            "exclusiveMaximum",
            "maximum",
            ["minimum", "exclusiveMinimum"],
        )
    };
    let Some(x) = m.get(ex).and_then(Value::as_f64).map(|v| s * v) else {
        return;
    };
    let top = far
        .iter()
        .filter_map(|k| m.get(*k).and_then(Value::as_f64))
        .map(|v| s * v)
        .fold(f64::INFINITY, f64::min);
    let buggy =
        x.is_finite() && x >= 0.0 && x.fract() == 0.0 && top < x + 1.0 && top.fract() != 0.0;
    // At 0 the next double (5e-324) would spell out 324 digits in the range's regex,
    // past the regex engine's nesting limit; 1e-16 excludes only numbers no model
    // writes.
    let next = if x == 0.0 { 1e-16 } else { x.next_up() };
    if !buggy
        || m.get(inc)
            .and_then(Value::as_f64)
            .is_some_and(|v| s * v >= next)
    {
        return;
    }
    m.remove(ex);
    m.insert(inc.into(), json!(s * next));
}

/// Adds the compact-JSON options to a schema (kept if the caller set `x-guidance`),
/// resolves `$ref`s with escaped segments, drops `format`s the grammar engine does
/// not know (an annotation in JSON Schema) and [`tighten`]s it.
pub fn with_json_options(schema: &Value) -> Value {
    let mut schema = schema::normalize(schema);
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
        let trie = env.tok_trie();
        // Control tokens carry a marker byte in the trie, so they never count as closers.
        let closers = Closers::new((0..trie.vocab_size() as u32).map(|id| trie.token(id)));
        Ok(Constrainer {
            factory,
            closers: Arc::new(closers),
            env,
        })
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
            think: None,
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
            closers: self.closers.clone(),
            depth: Depth::default(),
            recent: Recent::default(),
            wrap_up: false,
            close_cost: None,
            peak_cost: 0,
            committed: 0,
        })
    }
}

/// llguidance reports unsupported keywords as `Unimplemented keys: ["a", "b"]`.
fn compile_error(e: anyhow::Error) -> ConstrainError {
    let msg = format!("{e:#}");
    // llguidance's own wording points at an option of its API, not of this one.
    if msg.contains("oneOf constraints are not supported") {
        return ConstrainError::Unsupported {
            keywords: "`oneOf` whose branches can match the same value (write `anyOf`)".into(),
        };
    }
    if [
        "number too large to fit",
        "Invalid range: left",
        "Failed to parse max value",
        "Failed to parse min value",
    ]
    .iter()
    .any(|m| msg.contains(m))
    {
        return ConstrainError::Grammar(format!(
            "a numeric bound is too large for constrained decoding (the grammar engine works within 64-bit integers): {}",
            msg.lines().next().unwrap_or("")
        ));
    }
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
    /// A thinking model (`Some(opened by the template)`): the trigger counts only in
    /// the answer, after its `<think>` block.
    think: Option<bool>,
}

/// One sequence's grammar state. Cloning gives an independent copy (a deep clone:
/// llguidance's plain clone shares parser state).
pub struct Constraint {
    matcher: Matcher,
    env: TokEnv,
    lazy: Option<Lazy>,
    stats: MaskStats,
    closers: Arc<Closers>,
    depth: Depth,
    recent: Recent,
    /// Set once the model is seen looping: from then on every step closes.
    wrap_up: bool,
    /// Tokens it would take to close the output from here (estimated by a dry run)
    /// and `committed` at the time of the estimate.
    close_cost: Option<(usize, usize)>,
    /// The largest closing cost estimated so far: what one more item may need.
    peak_cost: usize,
    /// Tokens committed while active.
    committed: usize,
}

impl Clone for Constraint {
    fn clone(&self) -> Self {
        Constraint {
            matcher: self.matcher.deep_clone(),
            env: self.env.clone(),
            lazy: self.lazy.clone(),
            stats: self.stats,
            closers: self.closers.clone(),
            depth: self.depth.clone(),
            recent: self.recent.clone(),
            wrap_up: self.wrap_up,
            close_cost: self.close_cost,
            peak_cost: self.peak_cost,
            committed: self.committed,
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
    /// For a thinking model's output (`open`: the template opened its `<think>`
    /// block): a lazy constraint's trigger counts only after the block, so a call
    /// written while reasoning is not taken for the answer's.
    pub fn think_first(&mut self, open: bool) {
        if let Some(lazy) = &mut self.lazy {
            lazy.think = Some(open);
        }
    }

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
        self.mask_within(logits, None)
    }

    /// [`Constraint::mask`] for a sequence that may generate at most `budget` more
    /// tokens (this one included). Near the end of the budget, or once the model is
    /// seen looping, the mask also steers towards closing the output (see
    /// [`wrapup`]), so that it ends valid instead of being cut off.
    pub fn mask_within(
        &mut self,
        logits: &mut [f32],
        budget: Option<usize>,
    ) -> Result<(), ConstrainError> {
        self.mask_grammar(logits)?;
        if self.lazy.is_none() && (self.wrap_up || budget.is_some_and(|b| self.near_end(b))) {
            self.steer_to_close(logits);
        }
        Ok(())
    }

    /// Whether `budget` tokens are about all it takes to close the output. The cost
    /// of closing comes from a dry run ([`Constraint::closing_cost`]), redone every
    /// few tokens once the budget is within reach of it.
    fn near_end(&mut self, budget: usize) -> bool {
        /// Dry runs start this close to the limit, and go stale after this many tokens.
        const FIRST_LOOK: usize = 256;
        const STALE: usize = 8;
        /// Slack for what the model writes where nothing closes (digits, a key).
        const MARGIN: usize = 6;
        let due = match self.close_cost {
            None => budget <= FIRST_LOOK,
            Some((cost, at)) => {
                budget <= 2 * cost.max(self.peak_cost) + 4 * STALE && self.committed >= at + STALE
            }
        };
        if due {
            let cost = self.closing_cost();
            self.peak_cost = self.peak_cost.max(cost);
            self.close_cost = Some((cost, self.committed));
        }
        let Some((cost, at)) = self.close_cost else {
            return false;
        };
        if budget <= cost + MARGIN + (self.committed - at) {
            return true;
        }
        // Where the output may end, going on means starting another item (a second
        // tool call, say): only if one as costly as any seen so far still fits.
        budget <= self.peak_cost + MARGIN && self.matcher.is_accepting().unwrap_or(false)
    }

    /// Tokens needed to finish from here if every step closes (the first allowed
    /// token where nothing closes), counted on a copy of the grammar state.
    fn closing_cost(&self) -> usize {
        const MAX: usize = 512;
        let mut dry = self.clone();
        dry.wrap_up = true;
        let n = self.env.tok_trie().vocab_size();
        let mut logits = vec![0.0f32; n];
        for steps in 0..MAX {
            logits.fill(0.0);
            if dry.mask_grammar(&mut logits).is_err() {
                return steps;
            }
            dry.steer_to_close(&mut logits);
            let Some(t) = logits.iter().position(|l| l.is_finite()) else {
                return steps;
            };
            let t = t as u32;
            if self.env.tok_trie().eos_tokens().contains(&t) || dry.commit(t).is_err() {
                return steps;
            }
            if dry.matcher.is_stopped() {
                return steps + 1;
            }
        }
        MAX
    }

    /// Whether the output is being wrapped up (budget nearly spent or a loop seen).
    pub fn is_wrapping_up(&self) -> bool {
        self.wrap_up
    }

    /// Keeps only the allowed tokens of the first non-empty tier: end of generation,
    /// tokens that close an open level, tokens that move on to the next element. All
    /// tiers empty: the mask stays as it is.
    fn steer_to_close(&mut self, logits: &mut [f32]) {
        let allowed =
            |t: u32| (t as usize) < logits.len() && logits[t as usize] > f32::NEG_INFINITY;
        let eos: Vec<u32> = self
            .env
            .tok_trie()
            .eos_tokens()
            .iter()
            .copied()
            .filter(|&t| allowed(t))
            .collect();
        // Allowed candidates by how directly they end the output (best first).
        let mut ranked: Vec<(Progress, u32)> = self
            .closers
            .0
            .iter()
            .filter(|(t, _)| allowed(*t))
            .map(|(t, bytes)| (self.depth.progress(bytes), *t))
            .filter(|(p, _)| *p != Progress::None)
            .collect();
        ranked.sort_unstable();
        let tier: Vec<u32> = if !eos.is_empty() {
            eos
        } else {
            let best = ranked.first().map(|r| r.0);
            ranked
                .iter()
                .take_while(|r| Some(r.0) == best)
                .map(|r| r.1)
                .collect()
        };
        if tier.is_empty() {
            return;
        }
        let keep: Vec<(usize, f32)> = tier
            .iter()
            .map(|&t| (t as usize, logits[t as usize]))
            .collect();
        logits.fill(f32::NEG_INFINITY);
        for (t, l) in keep {
            logits[t] = l;
        }
    }

    fn mask_grammar(&mut self, logits: &mut [f32]) -> Result<(), ConstrainError> {
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
            let from = match lazy.think {
                Some(open) => match reasoning::answer_start(&lazy.text, open) {
                    Some(i) => i,
                    None => return Ok(()),
                },
                None => 0,
            };
            let Some(at) = find(&lazy.text[from..], lazy.trigger.as_bytes()).map(|i| from + i)
            else {
                return Ok(());
            };
            // The trigger may sit inside a token: feed the grammar the output from the
            // trigger on, re-tokenized (the lexer works on bytes, so any split works).
            let tail = lazy.text[at..].to_vec();
            self.lazy = None;
            self.depth.push(&tail);
            let toks = self.env.tokenize_bytes(&tail);
            return self
                .matcher
                .consume_tokens(&toks)
                .map_err(|e| ConstrainError::Violated(e.to_string()));
        }
        if self.matcher.is_stopped() {
            return Ok(());
        }
        self.depth.push(self.env.tok_trie().token(token));
        self.recent.push(token);
        self.committed += 1;
        self.wrap_up |= self.recent.looping();
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
