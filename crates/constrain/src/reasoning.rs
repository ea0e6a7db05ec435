//! Reasoning ("thinking") text of models that write it between `<think>` and
//! `</think>` before their answer (Qwen3, SmolLM3, DeepSeek-R1 distills), split from
//! the answer the way llama.cpp's server does (`reasoning_format: deepseek`): the
//! reasoning goes to `reasoning_content`, the rest is the message content. The block
//! counts only at the start of the output, or from the start when the chat template
//! already opened it at the end of the prompt.

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

/// Text split by [`ReasoningStream`]: what to send as reasoning and as content.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReasoningSplit {
    pub reasoning: String,
    pub content: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing but whitespace yet: the output may still open a block.
    Start,
    /// Inside the block.
    Thinking,
    /// Just after `</think>`: whitespace before the answer is dropped.
    Answer,
    /// The answer (or output that never opened a block).
    Content,
}

/// Splits streamed output text. Text that may still turn out to be a tag, or
/// whitespace that may turn out to end the reasoning, is held back until it is known.
#[derive(Debug, Clone)]
pub struct ReasoningStream {
    state: State,
    held: String,
    /// Reasoning text sent so far is empty (its leading whitespace is dropped).
    fresh: bool,
}

impl ReasoningStream {
    /// `open`: the prompt ends inside a block (the template wrote `<think>`), so the
    /// output starts as reasoning.
    pub fn new(open: bool) -> Self {
        Self {
            state: if open { State::Thinking } else { State::Start },
            held: String::new(),
            fresh: true,
        }
    }

    /// Whether a rendered prompt ends with an opened block (the template started
    /// the reasoning for the model).
    pub fn prompt_opens(prompt_tail: &str) -> bool {
        let t = prompt_tail.trim_end();
        t.ends_with(OPEN)
    }

    /// Feed the next piece of output.
    pub fn push(&mut self, text: &str) -> ReasoningSplit {
        self.held.push_str(text);
        let mut out = ReasoningSplit::default();
        loop {
            match self.state {
                State::Start => {
                    let t = self.held.trim_start();
                    if t.is_empty() || (OPEN.starts_with(t) && t != OPEN) {
                        return out;
                    }
                    if let Some(rest) = t.strip_prefix(OPEN) {
                        self.held = rest.to_string();
                        self.state = State::Thinking;
                    } else {
                        self.state = State::Content;
                    }
                }
                State::Thinking => {
                    if let Some(i) = self.held.find(CLOSE) {
                        let rest = self.held.split_off(i + CLOSE.len());
                        self.held.truncate(i);
                        let r = std::mem::take(&mut self.held);
                        self.emit_reasoning(r.trim_end(), &mut out);
                        self.held = rest;
                        self.state = State::Answer;
                        continue;
                    }
                    // Hold what may begin `</think>`, and trailing whitespace (it may
                    // be followed by `</think>`, and a block's text is trimmed).
                    let keep_tag = (1..CLOSE.len())
                        .rev()
                        .find(|&k| self.held.ends_with(&CLOSE[..k]))
                        .unwrap_or(0);
                    let body = &self.held[..self.held.len() - keep_tag];
                    let cut = body.trim_end().len();
                    let ready: String = self.held.drain(..cut).collect();
                    self.emit_reasoning(&ready, &mut out);
                    return out;
                }
                State::Answer => {
                    let t = self.held.trim_start();
                    if t.is_empty() {
                        self.held.clear();
                        return out;
                    }
                    self.held = t.to_string();
                    self.state = State::Content;
                }
                State::Content => {
                    out.content.push_str(&self.held);
                    self.held.clear();
                    return out;
                }
            }
        }
    }

    /// The end of the output: whatever was held back. An unclosed block (the output
    /// was cut) is all reasoning.
    pub fn finish(&mut self) -> ReasoningSplit {
        let mut out = ReasoningSplit::default();
        let held = std::mem::take(&mut self.held);
        match self.state {
            State::Start | State::Content => out.content = held,
            State::Thinking => self.emit_reasoning(held.trim_end(), &mut out),
            State::Answer => {}
        }
        out
    }

    /// Whether the output has reached its answer (a block was closed or never opened).
    pub fn in_content(&self) -> bool {
        self.state == State::Content
    }

    fn emit_reasoning(&mut self, text: &str, out: &mut ReasoningSplit) {
        let text = if self.fresh { text.trim_start() } else { text };
        if !text.is_empty() {
            self.fresh = false;
            out.reasoning.push_str(text);
        }
    }
}

/// Where the answer starts in output `text` (bytes) of a thinking model: after the
/// `</think>` that closes a block the output opened at its start (or the template
/// opened, `open`), at 0 when the output began without one, `None` while it is still
/// thinking or may yet open a block. Used to keep a tool-call trigger written while
/// thinking from counting.
pub fn answer_start(text: &[u8], open: bool) -> Option<usize> {
    let lead = text.iter().take_while(|b| b.is_ascii_whitespace()).count();
    let t = &text[lead..];
    if !open {
        if t.len() < OPEN.len() && OPEN.as_bytes().starts_with(t) {
            return None;
        }
        if !t.starts_with(OPEN.as_bytes()) {
            return Some(0);
        }
    }
    let close = CLOSE.as_bytes();
    text.windows(close.len())
        .position(|w| w == close)
        .map(|i| i + close.len())
}

/// Counts a thinking model's reasoning tokens (OpenAI's
/// `usage.completion_tokens_details.reasoning_tokens`): the output tokens up to and
/// including the one that completes `</think>` of a block at the start of the output
/// (or opened by the template), all of them while the block is unclosed, none when
/// the output did not open one. Fed each token's bytes as it is generated; keeps only
/// what a tag split across tokens needs.
#[derive(Debug, Clone)]
pub struct ReasoningTokens {
    /// Output bytes not yet ruled out as part of an opening or closing tag.
    tail: Vec<u8>,
    tokens: usize,
    /// Inside a block (its opening seen, or the template's).
    thinking: bool,
    /// The final count, once the block closed or the output began without one.
    settled: Option<usize>,
}

impl ReasoningTokens {
    /// `open`: the prompt ends inside a block (see [`ReasoningStream::new`]).
    pub fn new(open: bool) -> Self {
        Self {
            tail: Vec::new(),
            tokens: 0,
            thinking: open,
            settled: None,
        }
    }

    /// The next output token's bytes.
    pub fn push(&mut self, token: &[u8]) {
        if self.settled.is_some() {
            return;
        }
        self.tokens += 1;
        self.tail.extend_from_slice(token);
        if !self.thinking {
            let lead = self
                .tail
                .iter()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
            let t = &self.tail[lead..];
            if t.len() < OPEN.len() && OPEN.as_bytes().starts_with(t) {
                return;
            }
            if !t.starts_with(OPEN.as_bytes()) {
                self.settled = Some(0);
                return;
            }
            self.tail.drain(..lead + OPEN.len());
            self.thinking = true;
        }
        let close = CLOSE.as_bytes();
        if self.tail.windows(close.len()).any(|w| w == close) {
            self.settled = Some(self.tokens);
            return;
        }
        // Only a partial `</think>` at the end can still matter.
        let keep = self.tail.len().min(close.len() - 1);
        self.tail.drain(..self.tail.len() - keep);
    }

    /// Whether later tokens can still change the count (a caller may stop feeding
    /// them once it cannot).
    pub fn counting(&self) -> bool {
        self.settled.is_none()
    }

    /// Reasoning tokens so far (final once the output ends).
    pub fn count(&self) -> usize {
        match self.settled {
            Some(n) => n,
            None if self.thinking => self.tokens,
            None => 0,
        }
    }
}

/// A whole output split at once: (reasoning, content); `None` when there was no
/// reasoning.
pub fn split_reasoning(text: &str, open: bool) -> (Option<String>, String) {
    let mut s = ReasoningStream::new(open);
    let a = s.push(text);
    let b = s.finish();
    let reasoning = a.reasoning + &b.reasoning;
    (
        (!reasoning.is_empty()).then_some(reasoning),
        a.content + &b.content,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fed in every split into pieces of 1..=4 bytes at char boundaries, the stream
    /// gives what the whole text gives.
    fn pieces_agree(text: &str, open: bool) {
        let whole = split_reasoning(text, open);
        for step in 1..=4 {
            let mut s = ReasoningStream::new(open);
            let (mut r, mut c) = (String::new(), String::new());
            let mut i = 0;
            while i < text.len() {
                let mut j = (i + step).min(text.len());
                while !text.is_char_boundary(j) {
                    j += 1;
                }
                let o = s.push(&text[i..j]);
                r += &o.reasoning;
                c += &o.content;
                i = j;
            }
            let o = s.finish();
            r += &o.reasoning;
            c += &o.content;
            let got = ((!r.is_empty()).then_some(r), c);
            assert_eq!(got, whole, "{text:?} in pieces of {step}");
        }
    }

    #[test]
    fn block_at_start_goes_to_reasoning_and_answer_loses_leading_blank_lines() {
        let t = "<think>\nThe user greets me.\nI greet back.\n</think>\n\nHello!";
        assert_eq!(
            split_reasoning(t, false),
            (
                Some("The user greets me.\nI greet back.".into()),
                "Hello!".into()
            )
        );
        pieces_agree(t, false);
    }

    #[test]
    fn template_opened_block_starts_as_reasoning() {
        let t = "Let me think. 2 + 2 = 4.\n</think>\n\nIt is 4.";
        assert_eq!(
            split_reasoning(t, true),
            (Some("Let me think. 2 + 2 = 4.".into()), "It is 4.".into())
        );
        pieces_agree(t, true);
        assert!(ReasoningStream::prompt_opens(
            "<|im_start|>assistant\n<think>\n"
        ));
        assert!(!ReasoningStream::prompt_opens("<|im_start|>assistant\n"));
        assert!(!ReasoningStream::prompt_opens(
            "<|im_start|>assistant\n<think>\n\n</think>\n\n"
        ));
    }

    /// Reasoning tokens of `tokens` fed one by one.
    fn reasoning_tokens(tokens: &[&str], open: bool) -> usize {
        let mut c = ReasoningTokens::new(open);
        for t in tokens {
            c.push(t.as_bytes());
        }
        c.count()
    }

    #[test]
    fn reasoning_tokens_end_with_the_token_that_closes_the_block() {
        let closed = [
            "<th", "ink>", "\n", "Hmm", ".", "</", "think", ">", "\n\n", "Hi", "!",
        ];
        assert_eq!(reasoning_tokens(&closed, false), 8);
        // The template opened the block; the closing tag is one (special) token.
        assert_eq!(
            reasoning_tokens(&["So", " 4", ".", "</think>", "It", " is"], true),
            4
        );
        // Leading whitespace before the block is part of it.
        assert_eq!(
            reasoning_tokens(&["\n", "<think>", "x", "</think>", "y"], false),
            4
        );
        // Cut while thinking: every token was reasoning.
        assert_eq!(reasoning_tokens(&["<think>", "a", "b", "</th"], false), 4);
        // No block, a block later in the output, or a lookalike tag: none.
        assert_eq!(
            reasoning_tokens(&["Hello", " <think>", "x", "</think>"], false),
            0
        );
        assert_eq!(reasoning_tokens(&["<thinking>", "x"], false), 0);
        assert_eq!(reasoning_tokens(&[" ", "<thi"], false), 0);
        assert_eq!(reasoning_tokens(&[], true), 0);
        // A `</think>` written after the block closed does not move the count.
        assert_eq!(
            reasoning_tokens(&["a", "</think>", "b", "</think>"], true),
            2
        );
    }

    #[test]
    fn output_without_a_leading_block_is_all_content() {
        for t in [
            "Hello <think>not a block</think> there",
            "  <thin",
            "<thinking>x</thinking>",
            "",
            " \n",
        ] {
            assert_eq!(split_reasoning(t, false), (None, t.to_string()), "{t:?}");
            pieces_agree(t, false);
        }
    }

    #[test]
    fn cut_block_is_all_reasoning_and_empty_block_is_none() {
        assert_eq!(
            split_reasoning("<think>\nStill thinking about </thi", false),
            (Some("Still thinking about </thi".into()), String::new())
        );
        assert_eq!(
            split_reasoning("<think>\n\n</think>\n\nAnswer.", false),
            (None, "Answer.".into())
        );
        for t in [
            "<think>\nStill thinking about </thi",
            "<think>\n\n</think>\n\nAnswer.",
            "<think>a</think>",
            "<think>é ü </think> ok </think>",
        ] {
            pieces_agree(t, false);
        }
    }

    #[test]
    fn answer_starts_after_the_block_or_at_once_without_one() {
        assert_eq!(answer_start(b"<think>a <tool_call>", false), None);
        assert_eq!(answer_start(b"  <thi", false), None);
        assert_eq!(answer_start(b"", false), None);
        assert_eq!(
            answer_start(b"<think>a</think>\n<tool_call>", false),
            Some(16)
        );
        assert_eq!(answer_start(b"<tool_call>", false), Some(0));
        assert_eq!(answer_start(b"ok <think>", false), Some(0));
        assert_eq!(answer_start(b"a <tool_call>", true), None);
        assert_eq!(answer_start(b"a</think><tool_call>", true), Some(9));
    }

    #[test]
    fn whitespace_inside_reasoning_is_kept_only_between_words() {
        let mut s = ReasoningStream::new(true);
        assert_eq!(s.push("a  ").reasoning, "a");
        // The held spaces come out once more text follows them.
        assert_eq!(s.push("b\n").reasoning, "  b");
        assert!(!s.in_content());
        let end = s.push("</think>x");
        assert_eq!((end.reasoning.as_str(), end.content.as_str()), ("", "x"));
        assert!(s.in_content());
    }
}
