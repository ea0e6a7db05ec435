//! Prompt-prefix caches: K/V state computed once at snapshot build time for a prompt
//! prefix (a deployment's chat system prompt, or raw text), stored in the snapshot's
//! PREFIXES section, and read in place (from the mapping) by a session whose prompt
//! starts with those tokens instead of prefilling them.

use std::path::Path;
use std::sync::Arc;

use thaw_snapshot::{PrefixInput, Snapshot, StoredPrefix};

use crate::{Engine, EngineError};

/// A prefix to store when building a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrefixSpec {
    /// A chat system prompt: stored are the tokens every conversation with this
    /// system message starts with, after the model's chat template.
    System(String),
    /// Raw text, tokenized as a completion prompt is (BOS per the model, special
    /// tokens parsed).
    Raw(String),
    /// What the chat template puts before the first user message when there is no
    /// system message (SmolLM2's default system prompt, Gemma's `<start_of_turn>user`):
    /// every such conversation starts with it, so a cold replica need not compute it.
    /// Not stored when it is a single token.
    ChatPreamble,
}

/// Label of the stored chat preamble.
pub const CHAT_PREAMBLE_LABEL: &str = "(chat preamble)";

/// The prefixes a model was thawed with (none for a GGUF).
#[derive(Default)]
pub(crate) struct Prefixes {
    snapshot: Option<Arc<Snapshot>>,
    entries: Vec<StoredPrefix>,
}

impl Prefixes {
    /// The snapshot's prefixes, each checked to hold K/V of the right size for
    /// `kv_bytes_per_token` (a snapshot whose prefixes do not fit the model is refused).
    pub fn load(snapshot: Arc<Snapshot>, kv_bytes_per_token: usize) -> Result<Self, EngineError> {
        let entries = snapshot.prefixes()?;
        for p in &entries {
            if p.kv.len() != p.tokens.len() * kv_bytes_per_token {
                return Err(EngineError::BadPrefix {
                    path: snapshot.path().to_path_buf(),
                    what: format!(
                        "prefix {:?} stores {} bytes of K/V for {} tokens; this model needs {} per token",
                        p.label,
                        p.kv.len(),
                        p.tokens.len(),
                        kv_bytes_per_token
                    ),
                });
            }
        }
        Ok(Self {
            snapshot: Some(snapshot),
            entries,
        })
    }

    /// The longest stored prefix that `prompt` starts with and that is longer than
    /// `have` tokens and fits `n_ctx`: its tokens and its K/V in the mapping.
    pub fn best(
        &self,
        prompt: &[u32],
        have: usize,
        n_ctx: usize,
    ) -> Option<(&[u32], Arc<MappedKv>)> {
        let snap = self.snapshot.as_ref()?;
        self.entries
            .iter()
            .filter(|p| {
                p.tokens.len() > have && p.tokens.len() <= n_ctx && prompt.starts_with(&p.tokens)
            })
            .max_by_key(|p| p.tokens.len())
            .map(|p| {
                let kv = MappedKv {
                    snapshot: snap.clone(),
                    range: p.kv.clone(),
                };
                (&p.tokens[..], Arc::new(kv))
            })
    }

    pub fn entries(&self) -> &[StoredPrefix] {
        &self.entries
    }
}

/// A stored prefix's K/V inside the snapshot's mapping, which it keeps alive for as
/// long as a session reads it in place.
pub(crate) struct MappedKv {
    snapshot: Arc<Snapshot>,
    range: std::ops::Range<usize>,
}

impl thaw_models::KvSource for MappedKv {
    fn kv_bytes(&self) -> &[u8] {
        &self.snapshot.mapping()[self.range.clone()]
    }
}

/// How to build a snapshot.
#[derive(Debug, Clone, Default)]
pub struct SnapshotOptions {
    /// Name recorded in META (default: the source file's stem).
    pub name: Option<String>,
    /// Progress bar on stderr.
    pub progress: bool,
    /// Prompt prefixes whose K/V state to store.
    pub prefixes: Vec<PrefixSpec>,
    /// Kernel threads for computing the prefixes (0 = all cores).
    pub threads: usize,
}

/// Build a snapshot of the GGUF at `model` into `out`, computing the K/V state of each
/// prefix with this build's kernels.
pub fn build_snapshot(
    model: &Path,
    out: &Path,
    opts: &SnapshotOptions,
) -> Result<thaw_snapshot::BuildReport, EngineError> {
    let mut prefixes = None;
    if !opts.prefixes.is_empty() {
        let engine = Engine::load(
            model,
            &crate::LoadOptions {
                threads: opts.threads,
            },
        )?;
        let mut inputs = Vec::new();
        for spec in &opts.prefixes {
            let (label, tokens) = match spec {
                PrefixSpec::System(text) => (text.clone(), engine.system_prefix_tokens(text)?),
                PrefixSpec::Raw(text) => (text.clone(), engine.text_tokens(text, true)?),
                PrefixSpec::ChatPreamble => {
                    let tokens = engine.chat_preamble_tokens()?;
                    if tokens.len() < 2 {
                        continue;
                    }
                    (CHAT_PREAMBLE_LABEL.to_string(), tokens)
                }
            };
            if tokens.is_empty() {
                return Err(EngineError::EmptyPrefix { label });
            }
            let mut session = engine.session(tokens.len())?;
            session.prefill(&tokens)?;
            let kv = session.export_kv();
            inputs.push(PrefixInput { label, tokens, kv });
        }
        // No section at all when nothing was worth storing (a one-token preamble).
        if !inputs.is_empty() {
            prefixes = Some(thaw_snapshot::encode_prefixes(&inputs));
        }
    }
    Ok(thaw_snapshot::build(
        model,
        out,
        &thaw_snapshot::BuildOptions {
            name: opts.name.clone(),
            progress: opts.progress,
            prefixes,
        },
    )?)
}
