//! The token trie llguidance needs, built from our own vocabulary (no HF tokenizer
//! file): each token's raw bytes; control tokens are marked special (0xFF + text) so
//! grammar text never matches them by spelling.

use std::sync::Arc;

use thaw_tokenizer::Tokenizer;
use toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};

use crate::ConstrainError;

struct Env {
    tok: Arc<Tokenizer>,
    trie: TokTrie,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        match std::str::from_utf8(s) {
            Ok(text) => self
                .tok
                .encode(text, false, false)
                .unwrap_or_else(|_| self.trie.greedy_tokenize(s)),
            Err(_) => self.trie.greedy_tokenize(s),
        }
    }

    fn tokenize_bytes_special(&self, s: &[u8]) -> Vec<TokenId> {
        match std::str::from_utf8(s) {
            Ok(text) => self
                .tok
                .encode(text, false, true)
                .unwrap_or_else(|_| self.trie.greedy_tokenize(s)),
            Err(_) => self.trie.greedy_tokenize(s),
        }
    }
}

pub(crate) fn tok_env(tok: Arc<Tokenizer>) -> Result<TokEnv, ConstrainError> {
    let n = tok.vocab_size();
    let eos = tok
        .eos_id()
        .or(tok.eot_id())
        .or(tok.eog_ids().first().copied())
        .ok_or_else(|| ConstrainError::Vocab("the model has no end-of-generation token".into()))?;
    let words: Vec<Vec<u8>> = (0..n as u32)
        .map(|id| {
            let bytes = tok.token_bytes(id);
            if tok.is_control(id) || tok.is_eog(id) {
                let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                w.extend_from_slice(&bytes);
                w
            } else {
                bytes
            }
        })
        .collect();
    let info = TokRxInfo::new(n as u32, eos);
    let trie = TokTrie::from(&info, &words).with_eos_tokens(tok.eog_ids());
    Ok(Arc::new(Env { tok, trie }))
}
