//! SentencePiece-style BPE as llama.cpp runs it (`llm_tokenizer_spm`): start from
//! UTF-8 characters, repeatedly join the adjacent pair whose concatenation is the
//! best-scoring vocabulary token (ties: leftmost), and spell leftover characters that
//! are not tokens as `<0xXX>` byte tokens.
//!
//! No merge table is needed — only text -> id and the scores — so building is a
//! single hash index over the vocabulary (a merge table derived for the `tokenizers`
//! crate's BPE took seconds for Gemma's 262k tokens).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::index::TokenIndex;
use crate::vocab::Vocab;

pub(crate) struct Spm {
    /// Byte -> `<0xXX>` token (or the one-byte token, as llama.cpp's fallback).
    bytes: Vec<Option<u32>>,
}

#[derive(Clone, Copy)]
struct Sym {
    prev: i32,
    next: i32,
    start: usize,
    len: usize,
}

struct Bigram {
    score: f32,
    left: i32,
    right: i32,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Bigram {
    /// Max-heap order: higher score first, then the leftmost pair.
    fn cmp(&self, o: &Self) -> Ordering {
        self.score.total_cmp(&o.score).then(o.left.cmp(&self.left))
    }
}

impl Spm {
    pub fn new(v: &Vocab, index: &TokenIndex) -> Self {
        let mut bytes = vec![None; 256];
        for (b, slot) in bytes.iter_mut().enumerate() {
            *slot = index.get(&v.tokens, &format!("<0x{b:02X}>")).or_else(|| {
                std::str::from_utf8(&[b as u8])
                    .ok()
                    .and_then(|s| index.get(&v.tokens, s))
            });
        }
        Spm { bytes }
    }

    /// Tokenizes already-escaped text (spaces replaced by U+2581) onto `out`.
    pub fn tokenize(&self, v: &Vocab, index: &TokenIndex, text: &str, out: &mut Vec<u32>) {
        let mut syms: Vec<Sym> = Vec::with_capacity(text.len());
        for (i, (start, c)) in text.char_indices().enumerate() {
            let len = c.len_utf8();
            syms.push(Sym {
                prev: i as i32 - 1,
                next: if start + len == text.len() {
                    -1
                } else {
                    i as i32 + 1
                },
                start,
                len,
            });
        }
        if syms.is_empty() {
            return;
        }
        let mut queue = BinaryHeap::new();
        let try_add = |syms: &[Sym], queue: &mut BinaryHeap<Bigram>, left: i32, right: i32| {
            if left < 0 || right < 0 {
                return;
            }
            let (l, r) = (syms[left as usize], syms[right as usize]);
            let piece = &text[l.start..r.start + r.len];
            if let Some(id) = index.get(&v.tokens, piece) {
                queue.push(Bigram {
                    score: v.scores[id as usize],
                    left,
                    right,
                    size: piece.len(),
                });
            }
        };
        for i in 1..syms.len() as i32 {
            try_add(&syms, &mut queue, i - 1, i);
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (syms[b.left as usize], syms[b.right as usize]);
            // Stale: one side was merged away since this pair was queued.
            if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
                continue;
            }
            syms[b.left as usize].len += r.len;
            syms[b.right as usize].len = 0;
            syms[b.left as usize].next = r.next;
            if r.next >= 0 {
                syms[r.next as usize].prev = b.left;
            }
            let lp = syms[b.left as usize].prev;
            let ln = syms[b.left as usize].next;
            try_add(&syms, &mut queue, lp, b.left);
            try_add(&syms, &mut queue, b.left, ln);
        }
        let mut i = 0i32;
        while i >= 0 {
            let s = syms[i as usize];
            let piece = &text[s.start..s.start + s.len];
            match index.get(&v.tokens, piece) {
                Some(id) => out.push(id),
                None => {
                    for &b in piece.as_bytes() {
                        // llama.cpp aborts here; we fall back to the unknown token.
                        if let Some(id) = self.bytes[b as usize].or(v.unk) {
                            out.push(id);
                        }
                    }
                }
            }
            i = s.next;
        }
    }
}
