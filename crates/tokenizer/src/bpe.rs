//! Byte-level BPE over merge ranks, as the `tokenizers` crate and llama.cpp run it:
//! start from the characters of a pre-tokenized piece (already in GPT-2's byte-level
//! alphabet), repeatedly apply the lowest-ranked merge (ties: leftmost), emit the ids.
//!
//! The merge table is a flat list of `(left, right, merged)` ids in rank order — the
//! form the snapshot stores — indexed by an open-addressing hash of `(left, right)`,
//! so restoring it is a copy, not 49k string lookups and allocations (building the
//! `tokenizers` crate's BPE took ~90 ms for SmolLM2).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::index::TokenIndex;
use crate::shared::Buf;
use crate::vocab::Texts;

/// Merges by rank plus a hash index of their pairs.
pub(crate) struct Bpe {
    /// `(left, right, merged)` in rank order.
    pub(crate) merges: Buf<[u32; 3]>,
    /// Index into `merges` + 1 (0 = empty); later duplicates of a pair win.
    pub(crate) slots: Buf<u32>,
    mask: usize,
    ignore_merges: bool,
}

fn pair_hash(a: u32, b: u32) -> u64 {
    let x = (u64::from(a) << 32) | u64::from(b);
    // splitmix64 finaliser: spreads nearby ids over the whole table.
    let x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Bpe {
    /// Resolves "a b" merge strings to ids. llama.cpp splits at the first space after
    /// the first character; merges naming a token not in the vocabulary are dropped
    /// (the count is returned).
    pub fn from_strings(
        merges: &[String],
        texts: &Texts,
        index: &TokenIndex,
        ignore_merges: bool,
    ) -> (Self, usize) {
        let mut out = Vec::with_capacity(merges.len());
        let mut dropped = 0usize;
        let mut joined = String::new();
        for m in merges {
            let first = m.chars().next().map_or(0, char::len_utf8);
            let Some(pos) = m[first..].find(' ').map(|p| p + first) else {
                dropped += 1;
                continue;
            };
            let (a, b) = (&m[..pos], &m[pos + 1..]);
            joined.clear();
            joined.push_str(a);
            joined.push_str(b);
            match (
                index.get(texts, a),
                index.get(texts, b),
                index.get(texts, &joined),
            ) {
                (Some(a), Some(b), Some(c)) => out.push([a, b, c]),
                _ => dropped += 1,
            }
        }
        (Self::new(out, ignore_merges), dropped)
    }

    /// From resolved merges in rank order.
    pub fn new(merges: Vec<[u32; 3]>, ignore_merges: bool) -> Self {
        let cap = (merges.len() * 2).next_power_of_two().max(16);
        let mut slots = vec![0u32; cap];
        let mask = cap - 1;
        for (rank, m) in merges.iter().enumerate() {
            let mut i = pair_hash(m[0], m[1]) as usize & mask;
            loop {
                let s = slots[i];
                if s == 0 || merges[s as usize - 1][..2] == m[..2] {
                    slots[i] = rank as u32 + 1;
                    break;
                }
                i = (i + 1) & mask;
            }
        }
        Self {
            merges: merges.into(),
            slots: slots.into(),
            mask,
            ignore_merges,
        }
    }

    /// A stored merge table and its hash index (as [`Self::new`] built them), if
    /// consistent: a power-of-two table with an empty slot (so every probe ends) and
    /// every slot empty or naming a merge.
    pub fn from_parts(merges: Buf<[u32; 3]>, slots: Buf<u32>, ignore_merges: bool) -> Option<Self> {
        let n = merges.len();
        let ok = slots.len().is_power_of_two()
            && slots.iter().all(|&s| s as usize <= n)
            && slots.contains(&0);
        ok.then(|| Self {
            mask: slots.len() - 1,
            merges,
            slots,
            ignore_merges,
        })
    }

    /// `(rank, merged id)` of the pair, if it merges.
    fn lookup(&self, a: u32, b: u32) -> Option<(u32, u32)> {
        let (slots, merges) = (&*self.slots, &*self.merges);
        let mut i = pair_hash(a, b) as usize & self.mask;
        loop {
            let s = slots[i];
            if s == 0 {
                return None;
            }
            let m = merges[s as usize - 1];
            if m[0] == a && m[1] == b {
                return Some((s - 1, m[2]));
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Tokenizes one pre-tokenized piece onto `out`. Characters that are not tokens
    /// are dropped, as the `tokenizers` crate does without an unknown token.
    pub fn tokenize(&self, texts: &Texts, index: &TokenIndex, piece: &str, out: &mut Vec<u32>) {
        if piece.is_empty() {
            return;
        }
        if self.ignore_merges
            && let Some(id) = index.get(texts, piece)
        {
            out.push(id);
            return;
        }
        let mut syms: Vec<Sym> = Vec::with_capacity(piece.len());
        let mut buf = [0u8; 4];
        for c in piece.chars() {
            if let Some(id) = index.get(texts, c.encode_utf8(&mut buf)) {
                let i = syms.len() as i32;
                syms.push(Sym {
                    id,
                    prev: i - 1,
                    next: i + 1,
                    alive: true,
                });
            }
        }
        let Some(last) = syms.last_mut() else {
            return;
        };
        last.next = -1;
        let mut queue: BinaryHeap<Merge> = syms
            .windows(2)
            .enumerate()
            .filter_map(|(pos, w)| {
                self.lookup(w[0].id, w[1].id)
                    .map(|(rank, id)| Merge { rank, pos, id })
            })
            .collect();
        while let Some(top) = queue.pop() {
            let cur = syms[top.pos];
            if !cur.alive || cur.next < 0 {
                continue;
            }
            let next = cur.next as usize;
            let right = syms[next];
            // A stale entry: the pair at `pos` changed since it was queued.
            if self
                .lookup(cur.id, right.id)
                .is_none_or(|(_, id)| id != top.id)
            {
                continue;
            }
            syms[top.pos].id = top.id;
            syms[top.pos].next = right.next;
            syms[next].alive = false;
            if right.next >= 0 {
                syms[right.next as usize].prev = top.pos as i32;
            }
            let cur = syms[top.pos];
            if cur.prev >= 0
                && let Some((rank, id)) = self.lookup(syms[cur.prev as usize].id, cur.id)
            {
                queue.push(Merge {
                    rank,
                    pos: cur.prev as usize,
                    id,
                });
            }
            if cur.next >= 0
                && let Some((rank, id)) = self.lookup(cur.id, syms[cur.next as usize].id)
            {
                queue.push(Merge {
                    rank,
                    pos: top.pos,
                    id,
                });
            }
        }
        out.extend(syms.iter().filter(|s| s.alive).map(|s| s.id));
    }
}

#[derive(Clone, Copy)]
struct Sym {
    id: u32,
    prev: i32,
    next: i32,
    alive: bool,
}

#[derive(PartialEq, Eq)]
struct Merge {
    rank: u32,
    pos: usize,
    id: u32,
}

impl PartialOrd for Merge {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Merge {
    /// Max-heap order: lowest rank first, then the leftmost position.
    fn cmp(&self, o: &Self) -> Ordering {
        o.rank.cmp(&self.rank).then(o.pos.cmp(&self.pos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_lowest_rank_first_and_leftmost_on_ties() {
        let texts = Texts::from_strs(&["a", "b", "c", "ab", "bc", "abc", "aa", "aaa"]);
        let index = TokenIndex::new(&texts);
        let merges = ["b c", "a b", "ab c", "a bc", "a a", "aa a", "x y"]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>();
        let (bpe, dropped) = Bpe::from_strings(&merges, &texts, &index, false);
        assert_eq!(dropped, 1, "x y names unknown tokens");
        let run = |s: &str| {
            let mut out = Vec::new();
            bpe.tokenize(&texts, &index, s, &mut out);
            out
        };
        // "b c" (rank 0) beats "a b": a + bc, then "a bc" -> abc.
        assert_eq!(run("abc"), vec![5]);
        // "a a" (rank 4) everywhere before "aa a" (rank 5), leftmost first.
        assert_eq!(run("aaaa"), vec![6, 6]);
        assert_eq!(run("aaa"), vec![7]);
        assert_eq!(run("ab"), vec![3]);
        // Unknown characters are dropped (the neighbours then merge).
        assert_eq!(run("azb"), vec![3]);
        assert_eq!(run(""), Vec::<u32>::new());
    }
}

#[cfg(test)]
mod frozen_tests {
    use super::*;

    #[test]
    fn a_stored_merge_index_must_fit_its_merges() {
        let merges = vec![[1u32, 2, 3], [3, 4, 5]];
        let built = Bpe::new(merges.clone(), false);
        let slots = built.slots.to_vec();
        let ok =
            Bpe::from_parts(merges.clone().into(), slots.clone().into(), false).expect("as built");
        assert_eq!(ok.lookup(3, 4), Some((1, 5)));
        assert_eq!(ok.lookup(4, 3), None);
        // A slot naming a merge that does not exist, a table with no empty slot (a
        // probe for a missing pair would never end) and a size that is not a power of
        // two are refused.
        let mut past = slots.clone();
        past[0] = 3;
        assert!(Bpe::from_parts(merges.clone().into(), past.into(), false).is_none());
        assert!(
            Bpe::from_parts(merges.clone().into(), vec![1u32; slots.len()].into(), false).is_none()
        );
        assert!(Bpe::from_parts(merges.into(), vec![0u32; 3].into(), false).is_none());
    }
}
