//! The per-fragment tokenizers: byte-level BPE (`bpe.rs`, GGUF merges after the
//! `tokenizers` crate's pre-tokenizer named by `tokenizer.ggml.pre`) and SentencePiece-style BPE (`spm.rs`, llama.cpp's
//! score-driven algorithm with byte fallback).

use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

use crate::TokenizerError;
use crate::bpe::Bpe;
use crate::index::TokenIndex;
use crate::spm::Spm;
use crate::vocab::{ModelKind, Vocab};

/// SentencePiece's escaped space, U+2581.
pub(crate) const SPM_SPACE: &str = "\u{2581}";

pub(crate) enum Engine {
    ByteLevel {
        pre: Box<PreTokenizerWrapper>,
        bpe: Bpe,
    },
    SentencePiece(Spm),
}

impl Engine {
    /// Builds the engine from the vocabulary and, for byte-level BPE, its merges
    /// ("a b" strings as the GGUF stores them); returns notes about anything dropped
    /// or substituted.
    pub fn build(
        v: &Vocab,
        index: &TokenIndex,
        merges: &[String],
    ) -> Result<(Engine, Vec<String>), TokenizerError> {
        let mut notes = Vec::new();
        let bpe = match v.kind {
            ModelKind::ByteLevelBpe => {
                let (bpe, dropped) = Bpe::from_strings(merges, &v.tokens, index, v.ignore_merges);
                if dropped > 0 {
                    notes.push(format!(
                        "{dropped} merges refer to tokens not in the vocabulary: ignored"
                    ));
                }
                Some(bpe)
            }
            ModelKind::SentencePiece => None,
        };
        Ok((Self::assemble(v, index, bpe, &mut notes)?, notes))
    }

    /// The engine for `v`, given the resolved merges for byte-level BPE.
    pub fn assemble(
        v: &Vocab,
        index: &TokenIndex,
        bpe: Option<Bpe>,
        notes: &mut Vec<String>,
    ) -> Result<Engine, TokenizerError> {
        match (v.kind, bpe) {
            (ModelKind::ByteLevelBpe, Some(bpe)) => {
                let (pre, note) = crate::pretok::build(&v.pre)?;
                notes.extend(note);
                Ok(Engine::ByteLevel {
                    pre: Box::new(pre),
                    bpe,
                })
            }
            (ModelKind::ByteLevelBpe, None) => Err(TokenizerError::Invalid(
                "byte-level BPE without a merge table".into(),
            )),
            (ModelKind::SentencePiece, _) => Ok(Engine::SentencePiece(Spm::new(v, index))),
        }
    }

    /// The merge table (byte-level BPE only).
    pub fn bpe(&self) -> Option<&Bpe> {
        match self {
            Engine::ByteLevel { bpe, .. } => Some(bpe),
            Engine::SentencePiece(_) => None,
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
        match self {
            Engine::ByteLevel { pre, bpe } => {
                let mut pts = PreTokenizedString::from(text);
                pre.pre_tokenize(&mut pts)
                    .map_err(|e| TokenizerError::Encode(e.to_string()))?;
                for (piece, _, _) in pts.get_splits(OffsetReferential::Original, OffsetType::None) {
                    bpe.tokenize(&v.tokens, index, piece, out);
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
