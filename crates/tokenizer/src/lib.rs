//! Tokenizers built from GGUF metadata, matching llama.cpp token for token, plus a
//! streaming detokenizer ([`StreamDecoder`]) and Hugging Face–style chat templates
//! ([`chat`]).
//!
//! - `tokenizer.ggml.model = "gpt2"`: byte-level BPE over the GGUF merges (`bpe.rs`,
//!   a flat rank table), after the `tokenizers` crate's pre-tokenizer with the split
//!   rules named by `tokenizer.ggml.pre` (SmolLM2, Llama 3, Qwen2, ...).
//! - `tokenizer.ggml.model = "llama"`: SentencePiece-style BPE (Gemma, Mistral,
//!   Llama 2), implemented directly as llama.cpp runs it: pairs joined by the score of
//!   the token they form, `<0xXX>` byte fallback. (A merge table derived for the
//!   `tokenizers` crate gave identical ids but took seconds to build for Gemma's 262k
//!   vocabulary; this needs only a hash index.)
//!
//! [`Tokenizer::to_frozen`] / [`Tokenizer::from_frozen`] store a built tokenizer as
//! flat bytes (a snapshot's TOKENIZER section) and restore it without rebuilding.
//!
//! Before either runs, special tokens are split out of the text exactly as llama.cpp's
//! `llama_tokenize(add_special, parse_special)` does: control tokens only with
//! `parse_special`, user-defined tokens always, longest first.
#![forbid(unsafe_code)]

use std::collections::HashMap;

use thaw_gguf::{GgufError, GgufFile};

mod bpe;
pub mod chat;
mod frozen;
mod index;
mod models;
mod pretok;
mod shared;
mod special;
mod spm;
mod stream;
mod vocab;

pub use chat::{ChatMessage, ChatTemplate, TemplateError, rfc3339_utc};
pub use shared::Backing;
pub use stream::StreamDecoder;
pub use vocab::ModelKind;

use index::TokenIndex;
use models::{Engine, SPM_SPACE};
use special::{Fragment, SpecialMatcher};
use vocab::{Vocab, attr};

/// Compiles what byte-level BPE tokenizers share process-wide and build lazily on their
/// first `encode` (GPT-2's split rule inside the `tokenizers` crate's byte-level
/// pre-tokenizer: ~2 ms of Unicode-class regex compilation). Run it on another thread
/// while the rest of a model loads, and a cold start's first prompt does not wait for
/// it. `tokenizer_model` is the GGUF's `tokenizer.ggml.model`; others need nothing.
pub fn warm_up(tokenizer_model: &str) {
    use tokenizers::{PreTokenizedString, PreTokenizer};
    if tokenizer_model == "gpt2" {
        let mut s = PreTokenizedString::from("warm up 1");
        // The result is irrelevant: compiling the shared rule is the point.
        let _ = tokenizers::pre_tokenizers::byte_level::ByteLevel::default().pre_tokenize(&mut s);
    }
}

/// Errors from building a tokenizer or encoding text.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("unsupported tokenizer model `{0}` (thaw supports `gpt2` and `llama`)")]
    UnsupportedModel(String),
    #[error("invalid tokenizer metadata: {0}")]
    Invalid(String),
    #[error("building the tokenizer failed: {0}")]
    Build(String),
    #[error("tokenizing failed: {0}")]
    Encode(String),
}

/// A tokenizer for one model. Cheap to share: `Send + Sync`, all methods take `&self`.
pub struct Tokenizer {
    vocab: Vocab,
    index: TokenIndex,
    engine: Engine,
    special: SpecialMatcher,
    /// GPT-2 byte-level char -> byte (empty for SentencePiece vocabularies).
    byte_decoder: HashMap<char, u8>,
    notes: Vec<String>,
}

impl Tokenizer {
    /// Builds the tokenizer described by the GGUF's `tokenizer.*` metadata.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        let (vocab, merges) = Vocab::from_gguf(gguf)?;
        let index = TokenIndex::new(&vocab.tokens);
        let (engine, notes) = Engine::build(&vocab, &index, &merges)?;
        Ok(Self::assemble(vocab, index, engine, notes))
    }

    /// This tokenizer as flat bytes (a snapshot's TOKENIZER section): vocabulary,
    /// hash index and merge table exactly as built, so [`Self::from_frozen`] only
    /// copies them.
    pub fn to_frozen(&self) -> Vec<u8> {
        frozen::freeze(&self.vocab, &self.index, self.engine.bpe(), &self.notes)
    }

    /// Restores a tokenizer from [`Self::to_frozen`] bytes, checking every length,
    /// offset, id and table entry; it encodes exactly as the tokenizer that was frozen.
    /// The arrays are copied: see [`Self::from_frozen_in`] to read them in place.
    pub fn from_frozen(bytes: &[u8]) -> Result<Tokenizer, TokenizerError> {
        Self::thaw(frozen::thaw(bytes, 0..bytes.len(), None)?)
    }

    /// [`Self::from_frozen`] of the bytes `range` of `keep` (a snapshot's mapping),
    /// reading the vocabulary's arrays where they lie instead of copying them.
    pub fn from_frozen_in(
        keep: &Backing,
        range: std::ops::Range<usize>,
    ) -> Result<Tokenizer, TokenizerError> {
        let whole = (**keep).as_ref();
        if range.start > range.end || range.end > whole.len() {
            return Err(TokenizerError::Invalid(
                "frozen tokenizer outside its file".into(),
            ));
        }
        Self::thaw(frozen::thaw(whole, range, Some(keep))?)
    }

    /// Test support: this tokenizer in frozen format `version` (1 is still read).
    #[doc(hidden)]
    pub fn to_frozen_version(&self, version: u32) -> Vec<u8> {
        frozen::freeze_version(
            &self.vocab,
            &self.index,
            self.engine.bpe(),
            &self.notes,
            version,
        )
    }

    fn thaw(t: frozen::Thawed) -> Result<Tokenizer, TokenizerError> {
        // The pre-tokenizer notes were frozen with the rest.
        let mut scratch = Vec::new();
        let engine = Engine::assemble(&t.vocab, &t.index, t.bpe, &mut scratch)?;
        Ok(Self::assemble(t.vocab, t.index, engine, t.notes))
    }

    fn assemble(vocab: Vocab, index: TokenIndex, engine: Engine, notes: Vec<String>) -> Self {
        let special = SpecialMatcher::new(&vocab.tokens, &vocab.attrs);
        let byte_decoder = match vocab.kind {
            ModelKind::ByteLevelBpe => models::byte_level_decoder(),
            ModelKind::SentencePiece => HashMap::new(),
        };
        Tokenizer {
            vocab,
            index,
            engine,
            special,
            byte_decoder,
            notes,
        }
    }

    /// Which algorithm this vocabulary uses.
    pub fn kind(&self) -> ModelKind {
        self.vocab.kind
    }

    /// Warnings found while building (e.g. an unknown pre-tokenizer name replaced by
    /// GPT-2 splitting). Libraries do not print; callers may log these.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Text to token ids, like llama.cpp's `llama_tokenize(text, add_special, parse_special)`:
    /// `add_special` adds BOS/EOS as the model's `add_bos_token`/`add_eos_token` flags
    /// say; `parse_special` turns control-token strings in the text (`<|im_start|>`)
    /// into their ids instead of tokenizing them as plain text. User-defined tokens
    /// are always matched.
    pub fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let v = &self.vocab;
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && v.add_bos {
            out.push(
                v.bos
                    .ok_or_else(|| TokenizerError::Invalid("add_bos set but no BOS".into()))?,
            );
        }
        let frags = self.special.partition(text, parse_special);
        self.encode_fragments(text, &frags, true, &mut out)?;
        if add_special && v.add_eos {
            out.push(
                v.eos
                    .ok_or_else(|| TokenizerError::Invalid("add_eos set but no EOS".into()))?,
            );
        }
        Ok(out)
    }

    /// Tokenizes `frags` of `text` onto `out`; `prev_special` says whether what precedes
    /// the first fragment is the text's start or a special token.
    fn encode_fragments(
        &self,
        text: &str,
        frags: &[Fragment],
        mut prev_special: bool,
        out: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        let v = &self.vocab;
        let spm = v.kind == ModelKind::SentencePiece;
        let mut buf = String::new();
        for frag in frags {
            match *frag {
                Fragment::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Fragment::Text { start, end } => {
                    let piece = &text[start..end];
                    // SentencePiece: a space is prepended to text at the start or after a
                    // special token.
                    if spm && v.add_space_prefix && prev_special {
                        buf.clear();
                        buf.push(' ');
                        buf.push_str(piece);
                        self.engine.encode_fragment(v, &self.index, &buf, out)?;
                    } else {
                        self.engine.encode_fragment(v, &self.index, piece, out)?;
                    }
                    prev_special = false;
                }
            }
        }
        Ok(())
    }

    /// [`Tokenizer::encode`] of a text that may start with what one of `known` token
    /// sequences stands for (stored prompt prefixes, each `encode`d with the same flags
    /// from a text that starts the same way): the fragments up to the last special
    /// token that such a sequence covers are taken from it instead of being tokenized
    /// again. The ids are `encode`'s, token for token: text is tokenized fragment by
    /// fragment between special tokens, so fragments before a special token do not
    /// depend on what follows it. Returns the ids and how many were reused.
    pub fn encode_with_known(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
        known: &[&[u32]],
    ) -> Result<(Vec<u32>, usize), TokenizerError> {
        let v = &self.vocab;
        let frags = self.special.partition(text, parse_special);
        // (known sequence, tokens reused, fragments they cover)
        let mut best: Option<(&[u32], usize, usize)> = None;
        for k in known {
            if let Some((n, f)) = self.known_cover(text, &frags, add_special, k)
                && best.is_none_or(|(_, bn, _)| n > bn)
            {
                best = Some((k, n, f));
            }
        }
        let Some((k, n, f)) = best else {
            return Ok((self.encode(text, add_special, parse_special)?, 0));
        };
        let mut out = Vec::with_capacity(n + text.len() / 3 + 2);
        out.extend_from_slice(&k[..n]);
        self.encode_fragments(text, &frags[f..], true, &mut out)?;
        if add_special && v.add_eos {
            out.push(
                v.eos
                    .ok_or_else(|| TokenizerError::Invalid("add_eos set but no EOS".into()))?,
            );
        }
        Ok((out, n))
    }

    /// How much of `known` can stand for the start of `text`: the number of its tokens
    /// that end exactly after a special-token fragment of `frags` (that token being
    /// that special token) with every byte before matching, and the number of
    /// fragments they cover; `None` if not even one.
    fn known_cover(
        &self,
        text: &str,
        frags: &[Fragment],
        add_special: bool,
        known: &[u32],
    ) -> Option<(usize, usize)> {
        let v = &self.vocab;
        // A space SentencePiece prepends is in the ids but not in the text.
        if v.kind == ModelKind::SentencePiece && v.add_space_prefix {
            return None;
        }
        // The BOS `encode` adds comes first in `known` too.
        let lead = usize::from(add_special && v.add_bos);
        if lead == 1 && known.first().copied() != v.bos {
            return None;
        }
        let bytes = text.as_bytes();
        let (mut off, mut i) = (0, lead);
        let mut best = None;
        let mut pos = 0;
        for (fi, frag) in frags.iter().enumerate() {
            match *frag {
                Fragment::Text { end, .. } => pos = end,
                Fragment::Token(id) => {
                    pos += self.token_text(id).len();
                    // Advance through `known` up to this special token's end.
                    while off < pos && i < known.len() {
                        let b = self.token_bytes(known[i]);
                        if b.is_empty() || !bytes[off..].starts_with(&b) {
                            return best;
                        }
                        off += b.len();
                        i += 1;
                    }
                    if off != pos || known[i - 1] != id {
                        return best;
                    }
                    best = Some((i, fi + 1));
                }
            }
        }
        best
    }

    /// Token ids to text. With `skip_special`, control tokens (BOS, `<|im_end|>`, ...)
    /// produce no text. Invalid UTF-8 (a split multi-byte character) becomes U+FFFD.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        let mut bytes = Vec::new();
        let mut first = true;
        for &id in ids {
            let Some(&a) = self.vocab.attrs.get(id as usize) else {
                continue;
            };
            if skip_special && a & (attr::CONTROL | attr::UNKNOWN) != 0 {
                continue;
            }
            let piece = self.token_bytes(id);
            // llama.cpp drops the space SentencePiece added in front of the first word.
            if first && self.vocab.add_space_prefix && piece.first() == Some(&b' ') {
                bytes.extend_from_slice(&piece[1..]);
            } else {
                bytes.extend_from_slice(&piece);
            }
            first = false;
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The raw bytes a token stands for: byte-level pieces mapped back to bytes,
    /// SentencePiece `▁` to a space, `<0xXX>` byte tokens to that byte; control and
    /// user-defined tokens give their text. Unknown ids give nothing.
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        let v = &self.vocab;
        let Some(text) = v.tokens.get(id as usize) else {
            return Vec::new();
        };
        let a = v.attrs[id as usize];
        if a & (attr::CONTROL | attr::UNKNOWN | attr::USER_DEFINED) != 0 {
            return text.as_bytes().to_vec();
        }
        if let Some(b) = parse_byte_token(text).filter(|_| a & attr::BYTE != 0) {
            return vec![b];
        }
        match v.kind {
            ModelKind::SentencePiece => text.replace(SPM_SPACE, " ").into_bytes(),
            ModelKind::ByteLevelBpe => {
                let mut out = Vec::with_capacity(text.len());
                for c in text.chars() {
                    match self.byte_decoder.get(&c) {
                        Some(&b) => out.push(b),
                        None => {
                            let mut tmp = [0u8; 4];
                            out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
                        }
                    }
                }
                out
            }
        }
    }

    /// The token's text as stored in the GGUF (`Ġhello`, `▁hello`, `<0x0A>`); empty
    /// for an id outside the vocabulary.
    pub fn token_text(&self, id: u32) -> &str {
        self.vocab.tokens.get(id as usize).unwrap_or("")
    }

    /// The id of a token with exactly this GGUF text, if any.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.index.get(&self.vocab.tokens, text)
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab.tokens.len()
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.vocab.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.vocab.eos
    }

    /// End-of-turn token: from metadata, else auto-detected by text as llama.cpp does
    /// (`<|eot_id|>`, `<|im_end|>`, `<end_of_turn>`, ...).
    pub fn eot_id(&self) -> Option<u32> {
        self.vocab.eot
    }

    pub fn pad_id(&self) -> Option<u32> {
        self.vocab.pad
    }

    /// End-of-message token (`<|eom_id|>`), if any.
    pub fn eom_id(&self) -> Option<u32> {
        self.vocab.eom
    }

    pub fn unk_id(&self) -> Option<u32> {
        self.vocab.unk
    }

    /// Whether `encode(_, add_special = true, _)` prepends BOS / appends EOS.
    pub fn add_bos(&self) -> bool {
        self.vocab.add_bos
    }

    pub fn add_eos(&self) -> bool {
        self.vocab.add_eos
    }

    /// End of generation: EOS, EOT, EOM and the tokens llama.cpp recognises by text
    /// (`<|im_end|>`, `<end_of_turn>`, `<|eot_id|>`, `<|endoftext|>`, ...).
    pub fn is_eog(&self, id: u32) -> bool {
        self.vocab.eog.binary_search(&id).is_ok()
    }

    /// All end-of-generation ids, sorted.
    pub fn eog_ids(&self) -> &[u32] {
        &self.vocab.eog
    }

    /// Control or unknown-type token (rendered only when special tokens are shown).
    pub fn is_control(&self, id: u32) -> bool {
        self.vocab
            .attrs
            .get(id as usize)
            .is_some_and(|a| a & (attr::CONTROL | attr::UNKNOWN) != 0)
    }
}

fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Tokenizer>();
        check::<ChatTemplate>();
    }

    #[test]
    fn byte_tokens_parse() {
        assert_eq!(parse_byte_token("<0x0A>"), Some(10));
        assert_eq!(parse_byte_token("<0xff>"), Some(255));
        assert_eq!(parse_byte_token("<0x>"), None);
        assert_eq!(parse_byte_token("hello"), None);
    }

    #[test]
    fn byte_level_map_is_a_bijection() {
        let m = models::byte_level_decoder();
        assert_eq!(m.len(), 256);
        assert_eq!(m[&'Ġ'], b' ');
        assert_eq!(m[&'Ċ'], b'\n');
        assert_eq!(m[&'A'], b'A');
        let mut seen: Vec<u8> = m.values().copied().collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 256);
    }
}
