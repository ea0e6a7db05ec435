//! Streaming detokenization: ids arrive one at a time, text leaves only as complete
//! UTF-8, so a character split across byte tokens is never shown half-way.

use crate::Tokenizer;

/// Turns a stream of token ids into text chunks. Bytes of an unfinished multi-byte
/// character are held back until the character completes; bytes that can never form a
/// valid character are emitted as U+FFFD. A character still unfinished when the
/// stream ends (`max_tokens` reached half-way through an emoji) is dropped, so answers
/// do not end in U+FFFD.
/// It holds no reference to the tokenizer (pass it to [`StreamDecoder::push`]), so it
/// can live in a session next to an `Arc<Tokenizer>`.
#[derive(Debug, Clone)]
pub struct StreamDecoder {
    skip_special: bool,
    pending: Vec<u8>,
    first: bool,
}

impl StreamDecoder {
    /// `skip_special`: control tokens produce no text (as in [`Tokenizer::decode`]).
    pub fn new(skip_special: bool) -> Self {
        StreamDecoder {
            skip_special,
            pending: Vec::new(),
            first: true,
        }
    }

    /// For generated text that continues a prompt: no token is "first", so a leading
    /// space of the first generated token is kept (llama.cpp's streaming does not
    /// lstrip), unlike decoding a whole text from its start.
    pub fn continuation(skip_special: bool) -> Self {
        StreamDecoder {
            first: false,
            ..Self::new(skip_special)
        }
    }

    /// Adds one token; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> String {
        if self.skip_special && tok.is_control(id) {
            return String::new();
        }
        let piece = tok.token_bytes(id);
        if self.first && tok.vocab.add_space_prefix && piece.first() == Some(&b' ') {
            self.pending.extend_from_slice(&piece[1..]);
        } else {
            self.pending.extend_from_slice(&piece);
        }
        self.first = false;
        self.drain(false)
    }

    /// Ends the stream: returns whatever is held back (invalid bytes as U+FFFD, the
    /// first bytes of a character that never completed dropped).
    pub fn finish(&mut self) -> String {
        self.drain(true)
    }

    fn drain(&mut self, all: bool) -> String {
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    // Valid by construction.
                    out.push_str(std::str::from_utf8(good).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            out.push('\u{FFFD}');
                            rest = &bad[n..];
                        }
                        // An incomplete sequence at the end: wait for more bytes.
                        None if !all => {
                            rest = bad;
                            break;
                        }
                        None => {
                            rest = &[];
                            break;
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decoder fed raw bytes (the piece of every token is its bytes here).
    fn drain_bytes(chunks: &[&[u8]]) -> String {
        let mut d = StreamDecoder::new(false);
        let mut out = String::new();
        for c in chunks {
            d.pending.extend_from_slice(c);
            out.push_str(&d.drain(false));
        }
        out + &d.finish()
    }

    #[test]
    fn split_characters_wait_and_unfinished_ones_are_dropped_at_the_end() {
        let globe = "🌍".as_bytes();
        assert_eq!(drain_bytes(&[b"a", &globe[..2], &globe[2..]]), "a🌍");
        // Cut half-way through the last character: the finished text only.
        assert_eq!(drain_bytes(&[b"ok ", globe, &globe[..3]]), "ok 🌍");
        // Bytes that can never be a character still show as U+FFFD.
        assert_eq!(drain_bytes(&[b"x", &[0xff], b"y"]), "x\u{FFFD}y");
        assert_eq!(drain_bytes(&[&[0xc3, 0x28]]), "\u{FFFD}(");
    }
}
