//! Text -> token id lookup without cloning the vocabulary: an open-addressing table of
//! ids keyed by FNV-1a hashes of the token texts (the texts stay in `Vocab::tokens`).
//! Building it for Gemma's 262k tokens takes milliseconds.

use crate::shared::Buf;
use crate::vocab::Texts;

pub(crate) struct TokenIndex {
    pub(crate) slots: Buf<u32>,
    mask: usize,
}

const EMPTY: u32 = u32::MAX;

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Mix the high bits down: the table uses the low bits.
    h ^ (h >> 29)
}

impl TokenIndex {
    /// Later duplicates win, as in llama.cpp's text -> id map.
    pub fn new(tokens: &Texts) -> Self {
        let cap = (tokens.len() * 2).next_power_of_two().max(16);
        let mut slots = vec![EMPTY; cap];
        let mask = cap - 1;
        for (id, t) in tokens.iter().enumerate() {
            let mut i = fnv1a(t.as_bytes()) as usize & mask;
            loop {
                let s = slots[i];
                if s == EMPTY || tokens.bytes(s as usize) == Some(t.as_bytes()) {
                    slots[i] = id as u32;
                    break;
                }
                i = (i + 1) & mask;
            }
        }
        TokenIndex {
            slots: slots.into(),
            mask,
        }
    }

    /// A stored table: a power-of-two length, every slot empty or an id below `n`.
    pub fn from_slots(slots: Buf<u32>, n: usize) -> Option<Self> {
        // An empty slot ends every probe of a missing text.
        let ok = slots.len().is_power_of_two()
            && slots.len() > n
            && slots.iter().all(|&s| s == EMPTY || (s as usize) < n)
            && slots.contains(&EMPTY);
        ok.then(|| TokenIndex {
            mask: slots.len() - 1,
            slots,
        })
    }

    pub fn get(&self, tokens: &Texts, text: &str) -> Option<u32> {
        let slots = &*self.slots;
        let mut i = fnv1a(text.as_bytes()) as usize & self.mask;
        loop {
            let s = slots[i];
            if s == EMPTY {
                return None;
            }
            if tokens.bytes(s as usize) == Some(text.as_bytes()) {
                return Some(s);
            }
            i = (i + 1) & self.mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_token_and_rejects_others() {
        let toks: Vec<String> = (0..5000)
            .map(|i| format!("t{i}"))
            .chain(["t7".into()])
            .collect();
        let toks = Texts::from_strs(&toks);
        let idx = TokenIndex::new(&toks);
        assert_eq!(idx.get(&toks, "t7"), Some(5000), "later duplicate wins");
        for i in [0u32, 1, 4999] {
            assert_eq!(idx.get(&toks, &format!("t{i}")), Some(i));
        }
        assert_eq!(idx.get(&toks, "t5000"), None);
        assert_eq!(idx.get(&toks, ""), None);
    }
}
