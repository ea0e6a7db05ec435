//! Wrapping a constrained output up before it runs out of tokens.
//!
//! A grammar guarantees that whatever is written is a prefix of a valid output, not
//! that the output ever ends: a small model can loop inside a string or an array, or
//! simply run into `max_tokens`, and a call cut off there is no call at all. So once a
//! sequence is close to its token budget, or is seen repeating itself, each step
//! prefers, among the tokens the grammar allows, the ones that close what is open:
//! end of generation when the grammar is complete, else a token that closes a string,
//! array or object, else one that writes a whole value where one starts (`""`, `0`,
//! `false`, `[]`, …), else one that moves on to the next element, else, inside a
//! number that cannot end yet (`0.0` under `exclusiveMinimum: 0`), a non-zero digit.
//! Digits added to a number that could end are not progress: the number would never
//! stop. Where the grammar allows none of them (`minLength` unmet) the model's own
//! choice stands, so the output stays valid either way.

/// The candidates for wrapping up, built once per vocabulary: tokens made only of
/// JSON punctuation (`"`, `]`, `}`, `,`, `:`) and spaces, and the shortest values
/// (`""`, `0`, `false`, `null`, `[]`, `{}`, with or without a leading space). Which of
/// them help depends on where the output is (a `]` inside a string is just text), so
/// they are sorted at each step by [`Depth::progress`].
#[derive(Debug, Default)]
pub(crate) struct Closers(pub Vec<(u32, Box<[u8]>)>);

const SHORT_VALUES: [&[u8]; 16] = [
    b"\"\"", b"0", b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"8", b"9", b"false", b"true",
    b"null", b"[]", b"{}",
];

impl Closers {
    /// From every token's bytes, in id order.
    pub fn new<'a>(tokens: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let punct = |x: &u8| matches!(x, b'"' | b']' | b'}' | b',' | b':' | b' ');
        Closers(
            (0u32..)
                .zip(tokens)
                .filter(|(_, b)| {
                    let value = b.strip_prefix(b" ").unwrap_or(b);
                    !b.is_empty() && (b.iter().all(punct) || SHORT_VALUES.contains(&value))
                })
                .map(|(id, b)| (id, b.into()))
                .collect(),
        )
    }
}

/// How a token moves the output towards its end; sorts best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Progress {
    /// Leaves fewer levels open than before (`Reverse`: closing more is better), and
    /// no separator after the last close.
    Closes(std::cmp::Reverse<usize>),
    /// Leaves as many open and ends on a complete value, where a closer may follow.
    Completes,
    /// Leaves no more open, through a separator: on to the next element (`",`
    /// closes a string but starts another element, so it is here).
    MovesOn,
    /// A non-zero digit inside a number: lets a number that may not end yet (below
    /// a bound) reach one that may.
    Extends,
    None,
}

/// Nesting depth of the JSON written so far (objects and arrays open, plus an open
/// string), to size the reserve of tokens kept for closing them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Depth {
    open: usize,
    in_string: bool,
    escaped: bool,
    /// The last byte written outside strings other than a space (a string's
    /// closing quote included): whether a value starts here.
    last: Option<u8>,
    /// Inside a number (digits, sign, point, exponent written since a value start).
    number: bool,
}

impl Depth {
    pub fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.in_string {
                match b {
                    _ if self.escaped => self.escaped = false,
                    b'\\' => self.escaped = true,
                    b'"' => {
                        self.in_string = false;
                        self.last = Some(b'"');
                    }
                    _ => {}
                }
                continue;
            }
            self.number = match b {
                b'0'..=b'9' | b'-' => self.number || self.at_value(),
                b'.' | b'e' | b'E' | b'+' => self.number,
                _ => false,
            };
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.open += 1,
                b'}' | b']' => self.open = self.open.saturating_sub(1),
                _ => {}
            }
            if b != b' ' {
                self.last = Some(b);
            }
        }
    }

    /// Open levels (objects, arrays, a string).
    fn level(&self) -> usize {
        self.open + self.in_string as usize
    }

    /// Whether a value may start here (after `:`, `[`, `,` or at the very start).
    fn at_value(&self) -> bool {
        !self.in_string && matches!(self.last, None | Some(b':' | b'[' | b','))
    }

    /// What appending `bytes` would do.
    pub fn progress(&self, bytes: &[u8]) -> Progress {
        let mut d = self.clone();
        let mut separator = false;
        let mut last = None;
        for &b in bytes {
            // Text inside a string is content, not progress (`}"` in a string).
            if d.in_string && b != b'"' {
                return Progress::None;
            }
            separator |= b == b',' && !d.in_string;
            d.push(&[b]);
            if b != b' ' {
                last = Some(b);
            }
        }
        let ends_on_value = !d.in_string && !matches!(last, Some(b',' | b':' | b'[' | b'{') | None);
        let ends_on_separator = matches!(last, Some(b',' | b':')) && !d.in_string;
        match d.level().cmp(&self.level()) {
            std::cmp::Ordering::Greater => Progress::None,
            std::cmp::Ordering::Less if !ends_on_separator => {
                Progress::Closes(std::cmp::Reverse(self.level() - d.level()))
            }
            _ if ends_on_value && !separator && self.at_value() => Progress::Completes,
            _ if separator => Progress::MovesOn,
            _ if self.number
                && bytes.iter().all(u8::is_ascii_digit)
                && bytes.iter().any(|&b| b != b'0') =>
            {
                Progress::Extends
            }
            _ => Progress::None,
        }
    }
}

/// The last tokens committed, to notice a model stuck repeating itself.
#[derive(Debug, Clone, Default)]
pub(crate) struct Recent(Vec<u32>);

/// Longest repeating unit looked for, and how many tokens a loop must cover: short
/// units must repeat over `MIN_LOOP` tokens; a unit of `MIN_LOOP / 2` tokens or more
/// (a whole tool call, say) only twice.
const MAX_PERIOD: usize = 64;
const MIN_LOOP: usize = 24;

impl Recent {
    pub fn push(&mut self, token: u32) {
        if self.0.len() == 2 * MAX_PERIOD {
            self.0.remove(0);
        }
        self.0.push(token);
    }

    /// True when the last `max(2p, MIN_LOOP)` tokens repeat with some period `p`.
    pub fn looping(&self) -> bool {
        let t = &self.0;
        (1..=MAX_PERIOD).any(|p| {
            let span = (2 * p).max(MIN_LOOP);
            span <= t.len() && (t.len() - span + p..t.len()).all(|i| t[i] == t[i - p])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Reverse;

    #[test]
    fn depth_ignores_brackets_in_strings() {
        let mut d = Depth::default();
        d.push(br#"{"a": [1, {"b": "x}]\"["#);
        assert_eq!((d.open, d.in_string), (3, true));
        d.push(br#"", "c": []}"#);
        assert_eq!((d.open, d.in_string), (2, false));
        d.push(b"]}");
        assert_eq!(d.level(), 0);
    }

    #[test]
    fn loops_are_seen_and_varied_text_is_not() {
        let mut r = Recent::default();
        for i in 0..100 {
            r.push(i);
            assert!(!r.looping());
        }
        for i in 0..(MIN_LOOP as u32 - 1) {
            r.push(i % 3);
        }
        assert!(!r.looping());
        r.push((MIN_LOOP as u32 - 1) % 3);
        assert!(r.looping());
        // A long unit repeated once is a loop; one token short of that is not.
        let mut r = Recent::default();
        for i in 0..(2 * 40 - 1) {
            r.push(1000 + i % 40);
        }
        assert!(!r.looping());
        r.push(1000 + 39);
        assert!(r.looping());
    }

    #[test]
    fn progress_depends_on_where_the_output_is() {
        let mut d = Depth::default();
        d.push(br#"{"a": ["x"#);
        // In a string only a quote closes; `]` is text.
        assert_eq!(d.progress(b"]"), Progress::None);
        assert_eq!(d.progress(b"\"]"), Progress::Closes(Reverse(2)));
        assert!(d.progress(b"\"]") < d.progress(b"\""));
        assert_eq!(d.progress(b"}\""), Progress::None);
        assert_eq!(d.progress(b"\","), Progress::MovesOn);
        d.push(b"\"");
        assert_eq!(d.progress(b"]}"), Progress::Closes(Reverse(2)));
        assert_eq!(d.progress(b", "), Progress::MovesOn);
        assert_eq!(d.progress(b"\""), Progress::None);
        // At a value: a whole short value completes it; one followed by a comma
        // starts another element.
        d.push(b", \"b\": ");
        assert_eq!(d.progress(b" \"\""), Progress::Completes);
        assert_eq!(d.progress(b"0"), Progress::Completes);
        assert_eq!(d.progress(b" \"\","), Progress::MovesOn);
        assert_eq!(d.progress(b"[]"), Progress::Completes);
        assert_eq!(d.progress(b"["), Progress::None);
        // After a number that may end: more digits are not progress (a number never
        // ends that way), a separator or a closer is; a non-zero digit only helps a
        // number that may not end yet, so it ranks last.
        let mut n = d.clone();
        n.push(b"0.5");
        assert_eq!(n.progress(b"0"), Progress::None);
        assert_eq!(n.progress(b"5"), Progress::Extends);
        assert!(n.progress(b",") < n.progress(b"5"));
        assert_eq!(n.progress(b"}"), Progress::Closes(Reverse(1)));
        // `true` ends in `e` but is not a number.
        let mut t = d.clone();
        t.push(b"true");
        assert_eq!(t.progress(b"5"), Progress::None);
        let vocab: Vec<&[u8]> = vec![b"\"", b"a\"", b"", b", ", b"}]", b" false", b"00"];
        let c = Closers::new(vocab.iter().copied());
        let ids: Vec<u32> = c.0.iter().map(|(i, _)| *i).collect();
        assert_eq!(ids, vec![0, 3, 4, 5]);
    }
}
