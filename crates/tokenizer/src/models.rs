//! The per-fragment tokenizers, built on the `tokenizers` crate's BPE model:
//! byte-level BPE (GGUF merges + a named pre-tokenizer) and SentencePiece-style BPE
//! (merges derived from the vocabulary and its scores, with byte fallback).

use tokenizers::models::bpe::{BPE, Vocab as HfVocab};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{Model, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

use crate::TokenizerError;
use crate::vocab::{ModelKind, Vocab, attr};

/// SentencePiece's escaped space, U+2581.
pub(crate) const SPM_SPACE: &str = "\u{2581}";

pub(crate) enum Engine {
    ByteLevel { pre: PreTokenizerWrapper, bpe: BPE },
    SentencePiece { bpe: BPE },
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
    pub fn build(v: &Vocab) -> Result<(Engine, Vec<String>), TokenizerError> {
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
                Ok((Engine::ByteLevel { pre, bpe }, notes))
            }
            ModelKind::SentencePiece => {
                let vocab = hf_vocab(&v.tokens);
                let merges = spm_merges(v, &vocab);
                let bpe = BPE::builder()
                    .vocab_and_merges(vocab, merges)
                    .byte_fallback(true)
                    .build()
                    .map_err(build_err)?;
                Ok((Engine::SentencePiece { bpe }, notes))
            }
        }
    }

    pub fn token_to_id(&self, text: &str) -> Option<u32> {
        match self {
            Engine::ByteLevel { bpe, .. } | Engine::SentencePiece { bpe } => bpe.token_to_id(text),
        }
    }

    /// Tokenizes one raw-text fragment (no special tokens in it) onto `out`.
    pub fn encode_fragment(&self, text: &str, out: &mut Vec<u32>) -> Result<(), TokenizerError> {
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
            Engine::SentencePiece { bpe } => {
                let escaped = text.replace(' ', SPM_SPACE);
                out.extend(bpe.tokenize(&escaped).map_err(enc)?.iter().map(|t| t.id));
            }
        }
        Ok(())
    }
}

/// Merges for SentencePiece-style BPE, derived like Hugging Face's
/// `SentencePieceExtractor`: every split of a token into two tokens is a merge, ranked
/// by the merged token's score (highest first). llama.cpp's SPM tokenizer greedily joins
/// the adjacent pair whose concatenation is the best-scoring token, which these ranks
/// reproduce. Work is O(total token length) hash lookups.
fn spm_merges(v: &Vocab, vocab: &HfVocab) -> Vec<(String, String)> {
    // (score, merged id, split byte offset)
    let mut cands: Vec<(f32, u32, u32)> = Vec::new();
    for (id, text) in v.tokens.iter().enumerate() {
        if v.attrs[id] & attr::BYTE != 0 {
            continue;
        }
        for (k, _) in text.char_indices().skip(1) {
            if vocab.contains_key(&text[..k]) && vocab.contains_key(&text[k..]) {
                cands.push((v.scores[id], id as u32, k as u32));
            }
        }
    }
    cands.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    cands
        .into_iter()
        .map(|(_, id, k)| {
            let t = &v.tokens[id as usize];
            (t[..k as usize].to_string(), t[k as usize..].to_string())
        })
        .collect()
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
