//! The vocabulary as stored in GGUF metadata: token texts, scores, token types,
//! special ids and flags — read once, with llama.cpp's defaults and fix-ups.

use std::collections::HashMap;

use thaw_gguf::{GgufFile, Value};

use crate::TokenizerError;
use crate::shared::Buf;

/// Token attribute bits (the subset of llama.cpp's `llama_token_attr` we need).
pub(crate) mod attr {
    pub const UNKNOWN: u8 = 1 << 0;
    pub const UNUSED: u8 = 1 << 1;
    pub const NORMAL: u8 = 1 << 2;
    pub const CONTROL: u8 = 1 << 3;
    pub const USER_DEFINED: u8 = 1 << 4;
    pub const BYTE: u8 = 1 << 5;
}

/// Which tokenizer algorithm the GGUF asks for (`tokenizer.ggml.model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// `gpt2`: byte-level BPE with merges and a regex pre-tokenizer.
    ByteLevelBpe,
    /// `llama`: SentencePiece-style BPE over scores with byte fallback.
    SentencePiece,
}

/// Token texts in one flat byte string (`offsets[i]..offsets[i + 1]` is token `i`): one
/// allocation instead of one per token, and the exact form the snapshot stores.
///
/// Each token's bytes are UTF-8, checked when built from a GGUF ([`Texts::new`]) but,
/// for a thawed vocabulary ([`Texts::from_frozen`]), only when a token's text is asked
/// for: validating all of Gemma 3's 262k texts took ~7 ms of every snapshot start, and
/// a start looks at a handful of tokens. A damaged snapshot's invalid token reads as
/// missing (`get` gives `None`); `thaw snapshot verify` finds the damage by checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Texts {
    pub blob: Buf<u8>,
    pub offsets: Buf<u32>,
}

impl Texts {
    /// Checks that `offsets` starts at 0, never decreases, ends at `blob.len()` and
    /// cuts `blob` only at character boundaries.
    pub fn new(blob: String, offsets: Vec<u32>) -> Result<Self, TokenizerError> {
        if !offsets.iter().all(|&o| blob.is_char_boundary(o as usize)) {
            return Err(Self::bad_offsets());
        }
        Self::from_frozen(blob.into_bytes().into(), offsets.into())
    }
    /// Like [`Texts::new`] without the UTF-8 checks (see the type's comment).
    pub fn from_frozen(blob: Buf<u8>, offsets: Buf<u32>) -> Result<Self, TokenizerError> {
        let ok = offsets.first() == Some(&0)
            && offsets.last().is_some_and(|&e| e as usize == blob.len())
            && offsets.windows(2).all(|w| w[0] <= w[1]);
        if !ok {
            return Err(Self::bad_offsets());
        }
        Ok(Self { blob, offsets })
    }
    fn bad_offsets() -> TokenizerError {
        TokenizerError::Invalid("token text offsets are out of order or split a character".into())
    }
    /// Texts of `items`, in order (tests).
    #[cfg(test)]
    pub fn from_strs<S: AsRef<str>>(items: &[S]) -> Self {
        let mut blob = String::new();
        let mut offsets = vec![0u32];
        for s in items {
            blob.push_str(s.as_ref());
            offsets.push(blob.len() as u32);
        }
        Self {
            blob: blob.into_bytes().into(),
            offsets: offsets.into(),
        }
    }
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }
    /// Token `i`'s bytes (no UTF-8 check: for comparisons).
    pub fn bytes(&self, i: usize) -> Option<&[u8]> {
        let (&s, &e) = (self.offsets.get(i)?, self.offsets.get(i + 1)?);
        self.blob.get(s as usize..e as usize)
    }
    /// Token `i`'s text; `None` out of range or when its bytes are not UTF-8.
    pub fn get(&self, i: usize) -> Option<&str> {
        std::str::from_utf8(self.bytes(i)?).ok()
    }
    /// Every token's text in order (a token that is not UTF-8 reads as empty).
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.len()).map(|i| self.get(i).unwrap_or(""))
    }
}

pub(crate) struct Vocab {
    pub kind: ModelKind,
    pub pre: String,
    pub tokens: Texts,
    pub scores: Buf<f32>,
    pub attrs: Buf<u8>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
    pub ignore_merges: bool,
    pub eog: Vec<u32>,
}

/// Token texts llama.cpp auto-detects as end-of-turn when no EOT id is in the metadata,
/// in our (deterministic) order of preference.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];

/// Token texts llama.cpp treats as end-of-generation (llama-vocab.cpp's EOG list).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// Fill-in-the-middle pad / repo / file-separator tokens: llama.cpp ends generation on
/// these too.
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];

/// gpt-oss tokens llama.cpp always renders (user-defined, not control).
const GPT_OSS_RENDERED: &[&str] = &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

fn opt_id(gguf: &GgufFile, key: &str) -> Option<u64> {
    gguf.get(key)?;
    gguf.get_u64(key).ok()
}

fn opt_bool(gguf: &GgufFile, key: &str) -> Option<bool> {
    match gguf.get(key)? {
        Value::Bool(b) => Some(*b),
        _ => None,
    }
}

fn value_i64(v: &Value) -> Option<i64> {
    Some(match v {
        Value::U8(x) => *x as i64,
        Value::I8(x) => *x as i64,
        Value::U16(x) => *x as i64,
        Value::I16(x) => *x as i64,
        Value::U32(x) => *x as i64,
        Value::I32(x) => *x as i64,
        Value::U64(x) => *x as i64,
        Value::I64(x) => *x,
        _ => return None,
    })
}

fn value_f32(v: &Value) -> Option<f32> {
    Some(match v {
        Value::F32(x) => *x,
        Value::F64(x) => *x as f32,
        other => value_i64(other)? as f32,
    })
}

impl Vocab {
    /// The vocabulary and, for byte-level BPE, the merges as stored ("a b" strings).
    pub fn from_gguf(gguf: &GgufFile) -> Result<(Self, Vec<String>), TokenizerError> {
        let model = gguf.get_str("tokenizer.ggml.model")?;
        let kind = match model {
            "gpt2" => ModelKind::ByteLevelBpe,
            "llama" => ModelKind::SentencePiece,
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        };
        let pre = match gguf.get("tokenizer.ggml.pre") {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        };

        let raw_tokens = gguf.get_array("tokenizer.ggml.tokens")?;
        let n = raw_tokens.len();
        if n == 0 || n > u32::MAX as usize {
            return Err(TokenizerError::Invalid(format!(
                "vocabulary has {n} tokens"
            )));
        }
        let mut blob = String::new();
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0u32);
        for (i, v) in raw_tokens.iter().enumerate() {
            match v {
                // llama.cpp renames empty tokens so that the text -> id map stays a bijection.
                Value::String(s) if s.is_empty() => blob.push_str(&format!("[EMPTY_{i}]")),
                Value::String(s) => blob.push_str(s),
                _ => {
                    return Err(TokenizerError::Invalid(format!(
                        "token {i} is not a string"
                    )));
                }
            }
            offsets.push(
                u32::try_from(blob.len())
                    .map_err(|_| TokenizerError::Invalid("token texts exceed 4 GiB".into()))?,
            );
        }
        let tokens = Texts::new(blob, offsets)?;

        let scores = match gguf.get("tokenizer.ggml.scores") {
            Some(Value::Array(a)) => {
                if a.len() < n {
                    return Err(TokenizerError::Invalid(format!(
                        "{} scores for {n} tokens",
                        a.len()
                    )));
                }
                a[..n].iter().map(|v| value_f32(v).unwrap_or(0.0)).collect()
            }
            _ => vec![0.0; n],
        };

        let mut attrs = match gguf.get("tokenizer.ggml.token_type") {
            Some(Value::Array(a)) => {
                if a.len() < n {
                    return Err(TokenizerError::Invalid(format!(
                        "{} token types for {n} tokens",
                        a.len()
                    )));
                }
                a[..n]
                    .iter()
                    .map(|v| match value_i64(v).unwrap_or(0) {
                        1 => attr::NORMAL,
                        2 => attr::UNKNOWN,
                        3 => attr::CONTROL,
                        4 => attr::USER_DEFINED,
                        5 => attr::UNUSED,
                        6 => attr::BYTE,
                        _ => 0,
                    })
                    .collect()
            }
            _ => vec![attr::NORMAL; n],
        };

        let merges = if kind == ModelKind::ByteLevelBpe {
            gguf.get_array("tokenizer.ggml.merges")?
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(TokenizerError::Invalid("merge is not a string".into())),
                })
                .collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };

        // Defaults as in llama.cpp's llama_vocab::impl::load.
        let (mut bos, mut eos, mut unk) = match kind {
            ModelKind::SentencePiece => (Some(1u32), Some(2u32), Some(0u32)),
            ModelKind::ByteLevelBpe => (Some(11), Some(11), None),
        };
        let (mut add_bos, mut add_eos, mut add_space_prefix, mut ignore_merges) = match kind {
            ModelKind::SentencePiece => (true, false, true, false),
            ModelKind::ByteLevelBpe => (false, false, false, false),
        };
        if kind == ModelKind::ByteLevelBpe
            && matches!(
                pre.as_str(),
                "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" | "tekken"
            )
        {
            ignore_merges = true;
            add_bos = true;
        }
        if let Some(b) = opt_bool(gguf, "tokenizer.ggml.add_space_prefix") {
            add_space_prefix = b;
        }

        let in_range = |id: u64| (id < n as u64).then_some(id as u32);
        let pick = |key: &str, slot: &mut Option<u32>| {
            if let Some(id) = opt_id(gguf, key) {
                // An out-of-range id keeps the default, as llama.cpp does.
                if let Some(id) = in_range(id) {
                    *slot = Some(id);
                }
            }
        };
        pick("tokenizer.ggml.bos_token_id", &mut bos);
        pick("tokenizer.ggml.eos_token_id", &mut eos);
        pick("tokenizer.ggml.unknown_token_id", &mut unk);
        let mut eot = None;
        let mut eom = None;
        let mut pad = None;
        pick("tokenizer.ggml.eot_token_id", &mut eot);
        pick("tokenizer.ggml.eom_token_id", &mut eom);
        pick("tokenizer.ggml.padding_token_id", &mut pad);
        for slot in [&mut bos, &mut eos, &mut unk] {
            if slot.is_some_and(|id| id as usize >= n) {
                *slot = None;
            }
        }
        if let Some(b) = opt_bool(gguf, "tokenizer.ggml.add_bos_token") {
            add_bos = b;
        }
        if let Some(b) = opt_bool(gguf, "tokenizer.ggml.add_eos_token") {
            add_eos = b;
        }

        let wanted: std::collections::HashSet<&str> = EOT_TEXTS
            .iter()
            .chain(EOG_TEXTS)
            .chain(FIM_PAD_TEXTS)
            .chain(FIM_REP_TEXTS)
            .chain(FIM_SEP_TEXTS)
            .chain(&["<|eom_id|>"])
            .chain(GPT_OSS_RENDERED)
            .copied()
            .collect();
        let mut found: HashMap<&str, u32> = HashMap::new();
        for (i, t) in tokens.iter().enumerate() {
            if wanted.contains(t) {
                found.entry(t).or_insert(i as u32);
            }
        }
        let first_of = |list: &[&str]| list.iter().find_map(|t| found.get(t).copied());
        if eot.is_none() {
            eot = first_of(EOT_TEXTS);
        }
        if eom.is_none() {
            eom = found.get("<|eom_id|>").copied();
        }
        let fim: Vec<u32> = [FIM_PAD_TEXTS, FIM_REP_TEXTS, FIM_SEP_TEXTS]
            .iter()
            .filter_map(|l| first_of(l))
            .collect();
        let mut eog: Vec<u32> = EOG_TEXTS
            .iter()
            .filter_map(|t| found.get(t).copied())
            .collect();
        // llama.cpp forces these auto-detected tokens to be control tokens.
        for &id in eog.iter().chain(&fim).chain(eot.iter()).chain(eom.iter()) {
            attrs[id as usize] |= attr::CONTROL;
        }
        eog.extend(fim);
        eog.extend([eos, eot, eom].into_iter().flatten());
        // gpt-oss / solar-open: `<|end|>` is not an end of generation there.
        let has = |t: &str| found.contains_key(t);
        let harmony = has("<|return|>") && has("<|call|>") || has("<|calls|>") && has("<|flush|>");
        if let Some(&end) = found.get("<|end|>").filter(|_| harmony) {
            eog.retain(|&id| id != end);
            attrs[end as usize] = attr::USER_DEFINED;
        }
        // Gemma 4 / PaddleOCR: `</s>` is not an end of generation there.
        if let Some(&s) = found.get("</s>").filter(|_| has("<|tool_response>")) {
            eog.retain(|&id| id != s);
            attrs[s as usize] = attr::NORMAL;
        }
        eog.sort_unstable();
        eog.dedup();
        // gpt-oss: these are always rendered.
        for t in GPT_OSS_RENDERED {
            if let Some(&i) = found.get(t) {
                attrs[i as usize] = attr::USER_DEFINED;
            }
        }

        // Control tokens named "unused" are unused (llama.cpp's auto-detection).
        for (a, t) in attrs.iter_mut().zip(tokens.iter()) {
            if *a & attr::CONTROL != 0 && t.contains("unused") {
                *a |= attr::UNUSED;
            }
        }

        Ok((
            Vocab {
                kind,
                pre,
                tokens,
                scores: scores.into(),
                attrs: attrs.into(),
                bos,
                eos,
                eot,
                eom,
                unk,
                pad,
                add_bos,
                add_eos,
                add_space_prefix,
                ignore_merges,
                eog,
            },
            merges,
        ))
    }
}
