//! The per-fragment tokenizers: byte-level BPE on the `tokenizers` crate (GGUF merges
//! and a named pre-tokenizer) and SentencePiece-style BPE (`spm.rs`, llama.cpp's
//! score-driven algorithm with byte fallback).

use tokenizers::models::bpe::{BPE, Vocab as HfVocab};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{Model, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

use crate::TokenizerError;
use crate::index::TokenIndex;
use crate::spm::Spm;
use crate::vocab::{ModelKind, Vocab};

/// SentencePiece's escaped space, U+2581.
pub(crate) const SPM_SPACE: &str = "\u{2581}";

pub(crate) enum Engine {
    ByteLevel {
        pre: PreTokenizerWrapper,
        bpe: Box<BPE>,
    },
    SentencePiece(Spm),
}

fn hf_vocab(tokens: &[String]) -> HfVocab {
    // Later duplicates win, as in llama.cpp's text -> id map.
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect()
}

fn build_err(e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Build(e.to_string())
}

impl Engine {
    /// Builds the engine; returns notes about anything dropped or substituted.
    pub fn build(v: &Vocab, index: &TokenIndex) -> Result<(Engine, Vec<String>), TokenizerError> {
        let mut notes = Vec::new();
        match v.kind {
            ModelKind::ByteLevelBpe => {
                let (pre, note) = crate::pretok::build(&v.pre)?;
                notes.extend(note);
                let vocab = hf_vocab(&v.tokens);
                let mut merges = Vec::with_capacity(v.merges.len());
                let mut dropped = 0usize;
                for m in &v.merges {
                    // llama.cpp splits at the first space after the first byte.
                    let first = m.chars().next().map_or(0, char::len_utf8);
                    let Some(pos) = m[first..].find(' ').map(|p| p + first) else {
                        dropped += 1;
                        continue;
                    };
                    let (a, b) = (&m[..pos], &m[pos + 1..]);
                    let joined = format!("{a}{b}");
                    if vocab.contains_key(a) && vocab.contains_key(b) && vocab.contains_key(&joined)
                    {
                        merges.push((a.to_string(), b.to_string()));
                    } else {
                        dropped += 1;
                    }
                }
                if dropped > 0 {
                    notes.push(format!(
                        "{dropped} merges refer to tokens not in the vocabulary: ignored"
                    ));
                }
                let bpe = BPE::builder()
                    .vocab_and_merges(vocab, merges)
                    .ignore_merges(v.ignore_merges)
                    .build()
                    .map_err(build_err)?;
                Ok((
                    Engine::ByteLevel {
                        pre,
                        bpe: Box::new(bpe),
                    },
                    notes,
                ))
            }
            ModelKind::SentencePiece => Ok((Engine::SentencePiece(Spm::new(v, index)), notes)),
        }
    }

    /// Tokenizes one raw-text fragment (no special tokens in it) onto `out`.
    pub fn encode_fragment(
        &self,
        v: &Vocab,
        index: &TokenIndex,
        text: &str,
        out: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        let enc =
            |e: Box<dyn std::error::Error + Send + Sync>| TokenizerError::Encode(e.to_string());
        match self {
            Engine::ByteLevel { pre, bpe } => {
                let mut pts = PreTokenizedString::from(text);
                pre.pre_tokenize(&mut pts).map_err(enc)?;
                for (piece, _, _) in pts.get_splits(OffsetReferential::Original, OffsetType::None) {
                    out.extend(bpe.tokenize(piece).map_err(enc)?.iter().map(|t| t.id));
                }
            }
            Engine::SentencePiece(spm) => {
                spm.tokenize(v, index, &text.replace(' ', SPM_SPACE), out);
            }
        }
        Ok(())
    }
}

/// GPT-2's byte -> printable-char map, inverted: char -> byte.
pub(crate) fn byte_level_decoder() -> std::collections::HashMap<char, u8> {
    let mut printable: Vec<u32> = Vec::new();
    printable.extend(u32::from(b'!')..=u32::from(b'~'));
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut map = std::collections::HashMap::with_capacity(256);
    let mut extra = 0u32;
    for b in 0u32..256 {
        let c = if printable.contains(&b) {
            b
        } else {
            extra += 1;
            255 + extra
        };
        if let Some(ch) = char::from_u32(c) {
            map.insert(ch, b as u8);
        }
    }
    map
}
