//! Splitting text at special-token strings, exactly as llama.cpp's
//! `tokenizer_st_partition` does: special tokens are tried longest first, and each one
//! splits every remaining text fragment at all of its occurrences. Control and unknown
//! tokens take part only when `parse_special` is set; user-defined tokens always do.

use crate::vocab::attr;

/// A piece of the input: raw text (byte range) or an already-decided token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fragment {
    Text { start: usize, end: usize },
    Token(u32),
}

struct Node {
    /// Sorted by byte.
    children: Vec<(u8, u32)>,
    /// Index into `SpecialMatcher::order` of the token ending here.
    terminal: Option<u32>,
}

/// The special tokens in priority order plus a byte trie over their texts, used to
/// find quickly which of them occur in a given text at all.
pub(crate) struct SpecialMatcher {
    /// (token id, text, always matched) — longest text first, ties by id.
    order: Vec<(u32, String, bool)>,
    nodes: Vec<Node>,
}

impl SpecialMatcher {
    pub fn new(tokens: &crate::vocab::Texts, attrs: &[u8]) -> Self {
        // Attributes first: only the few special tokens' texts are read (and checked).
        let mut order: Vec<(u32, String, bool)> = attrs
            .iter()
            .enumerate()
            .filter(|(_, a)| **a & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0)
            .filter_map(|(id, a)| {
                let always = *a & (attr::CONTROL | attr::UNKNOWN) == 0;
                Some((id as u32, tokens.get(id)?.to_string(), always))
            })
            .collect();
        order.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));

        let mut nodes = vec![Node {
            children: Vec::new(),
            terminal: None,
        }];
        for (idx, (_, text, _)) in order.iter().enumerate() {
            let mut cur = 0usize;
            for &b in text.as_bytes() {
                cur = match nodes[cur].children.binary_search_by_key(&b, |c| c.0) {
                    Ok(i) => nodes[cur].children[i].1 as usize,
                    Err(i) => {
                        let next = nodes.len() as u32;
                        nodes.push(Node {
                            children: Vec::new(),
                            terminal: None,
                        });
                        nodes[cur].children.insert(i, (b, next));
                        next as usize
                    }
                };
            }
            // Two tokens with the same text: the first (higher priority) one wins.
            if nodes[cur].terminal.is_none() {
                nodes[cur].terminal = Some(idx as u32);
            }
        }
        SpecialMatcher { order, nodes }
    }

    /// Indices into `order` of the special tokens occurring somewhere in `text`,
    /// in priority order.
    fn candidates(&self, text: &[u8], parse_special: bool) -> Vec<usize> {
        let mut found: Vec<usize> = Vec::new();
        for start in 0..text.len() {
            let mut cur = 0usize;
            for &b in &text[start..] {
                match self.nodes[cur].children.binary_search_by_key(&b, |c| c.0) {
                    Ok(i) => cur = self.nodes[cur].children[i].1 as usize,
                    Err(_) => break,
                }
                if let Some(idx) = self.nodes[cur].terminal {
                    let idx = idx as usize;
                    if (parse_special || self.order[idx].2) && !found.contains(&idx) {
                        found.push(idx);
                    }
                }
            }
        }
        found.sort_unstable();
        found
    }

    /// Splits `text` into raw-text fragments and special tokens.
    pub fn partition(&self, text: &str, parse_special: bool) -> Vec<Fragment> {
        if text.is_empty() {
            return Vec::new();
        }
        let mut frags = vec![Fragment::Text {
            start: 0,
            end: text.len(),
        }];
        for idx in self.candidates(text.as_bytes(), parse_special) {
            let (id, pat, _) = &self.order[idx];
            let mut next = Vec::with_capacity(frags.len() + 2);
            for frag in frags {
                let Fragment::Text { mut start, end } = frag else {
                    next.push(frag);
                    continue;
                };
                while let Some(pos) = text[start..end].find(pat.as_str()) {
                    let m = start + pos;
                    if m > start {
                        next.push(Fragment::Text { start, end: m });
                    }
                    next.push(Fragment::Token(*id));
                    start = m + pat.len();
                }
                if start < end {
                    next.push(Fragment::Text { start, end });
                }
            }
            frags = next;
        }
        frags
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher() -> SpecialMatcher {
        let toks: Vec<String> = ["a", "<s>", "<ctl>", "\n", "\n\n", "x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let attrs = [
            attr::NORMAL,
            attr::CONTROL,
            attr::CONTROL,
            attr::USER_DEFINED,
            attr::USER_DEFINED,
            attr::NORMAL,
        ];
        SpecialMatcher::new(&crate::vocab::Texts::from_strs(&toks), &attrs)
    }

    #[test]
    fn control_tokens_only_with_parse_special() {
        let m = matcher();
        let t = "a<s>b";
        assert_eq!(
            m.partition(t, false),
            vec![Fragment::Text { start: 0, end: 5 }]
        );
        assert_eq!(
            m.partition(t, true),
            vec![
                Fragment::Text { start: 0, end: 1 },
                Fragment::Token(1),
                Fragment::Text { start: 4, end: 5 }
            ]
        );
    }

    #[test]
    fn user_defined_always_and_longest_first() {
        let m = matcher();
        assert_eq!(
            m.partition("\n\n\nq", false),
            vec![
                Fragment::Token(4),
                Fragment::Token(3),
                Fragment::Text { start: 3, end: 4 }
            ]
        );
    }
}
