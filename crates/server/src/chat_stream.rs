//! A chat answer's text taken apart for the response: a thinking model's reasoning,
//! the content, and tool calls, both streamed (deltas) and whole.

use thaw_constrain::{
    ReasoningSplit, ReasoningStream, StreamEvent, ToolCallStream, ToolFormat, parse_tool_calls,
    split_reasoning,
};
use thaw_openai::{
    ChatDelta, FunctionCall, FunctionCallDelta, ResponseMessage, ToolCall, ToolCallDelta,
};

pub(crate) struct ChatStream {
    /// Tool calls possible: their format and the streaming parser.
    tools: Option<(ToolFormat, ToolCallStream)>,
    /// A thinking model: whether the prompt opened the block, and the splitter.
    reasoning: Option<(bool, ReasoningStream)>,
}

impl ChatStream {
    /// `reasoning`: `Some(open)` for a thinking model whose `<think>` block goes to
    /// `reasoning_content` (`open`: the prompt already opened it).
    pub fn new(tools: Option<ToolFormat>, reasoning: Option<bool>) -> Self {
        Self {
            tools: tools.map(|f| (f, ToolCallStream::new(f))),
            reasoning: reasoning.map(|open| (open, ReasoningStream::new(open))),
        }
    }

    /// The delta for the next piece of text; `None` while it is held back (it may
    /// be part of a tag or of a tool call's markup).
    pub fn push(&mut self, text: &str) -> Option<ChatDelta> {
        let split = match &mut self.reasoning {
            Some((_, r)) => r.push(text),
            None => ReasoningSplit {
                reasoning: String::new(),
                content: text.to_string(),
            },
        };
        let events = self.content_events(&split.content);
        delta(events, split.reasoning)
    }

    /// The last delta (what was held back) and how many tool calls were made.
    pub fn finish(&mut self) -> (ChatDelta, usize) {
        let held = match &mut self.reasoning {
            Some((_, r)) => r.finish(),
            None => ReasoningSplit::default(),
        };
        let mut events = self.content_events(&held.content);
        let calls = match &mut self.tools {
            Some((_, parser)) => {
                events.extend(parser.finish());
                parser.calls()
            }
            None => 0,
        };
        (delta(events, held.reasoning).unwrap_or_default(), calls)
    }

    /// The whole answer as one message, and whether it made tool calls.
    pub fn whole(&self, text: &str) -> (ResponseMessage, bool) {
        let (reasoning, text) = match &self.reasoning {
            Some((open, _)) => split_reasoning(text, *open),
            None => (None, text.to_string()),
        };
        let mut message = ResponseMessage {
            role: "assistant".into(),
            content: Some(text.clone()),
            reasoning_content: reasoning,
            refusal: None,
            tool_calls: None,
        };
        if let Some((format, _)) = &self.tools
            && let (content, Some(calls)) = parse_tool_calls(*format, &text)
            && !calls.is_empty()
        {
            // An unfinished call (max_tokens) stays in `content` as text.
            message.content = (!content.is_empty()).then_some(content);
            message.tool_calls = Some(
                calls
                    .into_iter()
                    .map(|c| ToolCall {
                        id: format!("call_{}", crate::new_id()),
                        kind: "function".into(),
                        function: FunctionCall {
                            name: c.name,
                            arguments: c.arguments,
                        },
                    })
                    .collect(),
            );
            return (message, true);
        }
        (message, false)
    }

    /// Content text as parser events: through the tool-call parser when calls are
    /// possible.
    fn content_events(&mut self, content: &str) -> Vec<StreamEvent> {
        match &mut self.tools {
            _ if content.is_empty() => Vec::new(),
            Some((_, parser)) => parser.push(content),
            None => vec![StreamEvent::Content(content.to_string())],
        }
    }
}

/// A delta from parser events and reasoning text; `None` when there is nothing to
/// send.
fn delta(events: Vec<StreamEvent>, reasoning: String) -> Option<ChatDelta> {
    let mut d = ChatDelta {
        reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
        ..ChatDelta::default()
    };
    let mut calls: Vec<ToolCallDelta> = Vec::new();
    for e in events {
        match e {
            StreamEvent::Content(c) => d.content.get_or_insert_with(String::new).push_str(&c),
            StreamEvent::CallStart { index, name } => calls.push(ToolCallDelta {
                index: index as u32,
                id: Some(format!("call_{}", crate::new_id())),
                kind: Some("function".into()),
                function: FunctionCallDelta {
                    name: Some(name),
                    arguments: Some(String::new()),
                },
            }),
            StreamEvent::Arguments { index, fragment } => {
                match calls.iter_mut().find(|c| c.index == index as u32) {
                    Some(c) => c
                        .function
                        .arguments
                        .get_or_insert_with(String::new)
                        .push_str(&fragment),
                    None => calls.push(ToolCallDelta {
                        index: index as u32,
                        function: FunctionCallDelta {
                            name: None,
                            arguments: Some(fragment),
                        },
                        ..ToolCallDelta::default()
                    }),
                }
            }
        }
    }
    if !calls.is_empty() {
        d.tool_calls = Some(calls);
    }
    (d.content.is_some() || d.tool_calls.is_some() || d.reasoning_content.is_some()).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every delta of `text` fed in pieces of `step` bytes (at char boundaries),
    /// merged: (reasoning, content, tool calls as (name, arguments)).
    fn streamed(
        s: &mut ChatStream,
        text: &str,
        step: usize,
    ) -> (String, String, Vec<(String, String)>) {
        let (mut r, mut c, mut calls) =
            (String::new(), String::new(), Vec::<(String, String)>::new());
        let mut add = |d: ChatDelta| {
            r += d.reasoning_content.as_deref().unwrap_or("");
            c += d.content.as_deref().unwrap_or("");
            for t in d.tool_calls.into_iter().flatten() {
                let i = t.index as usize;
                if calls.len() <= i {
                    calls.push((String::new(), String::new()));
                }
                calls[i].0 += t.function.name.as_deref().unwrap_or("");
                calls[i].1 += t.function.arguments.as_deref().unwrap_or("");
            }
        };
        let mut i = 0;
        while i < text.len() {
            let mut j = (i + step).min(text.len());
            while !text.is_char_boundary(j) {
                j += 1;
            }
            if let Some(d) = s.push(&text[i..j]) {
                add(d);
            }
            i = j;
        }
        add(s.finish().0);
        (r, c, calls)
    }

    #[test]
    fn reasoning_then_tool_call_streams_as_the_whole_message_reads() {
        let text = "<think>\nThe user wants the weather; call the tool.\n</think>\n\n\
                    <tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
        let (msg, calls) = ChatStream::new(Some(ToolFormat::Hermes), Some(false)).whole(text);
        assert!(calls);
        assert_eq!(
            msg.reasoning_content.as_deref(),
            Some("The user wants the weather; call the tool.")
        );
        assert_eq!(msg.content, None);
        let call = &msg.tool_calls.as_ref().unwrap()[0].function;
        assert_eq!(call.name, "get_weather");
        for step in [1, 3, 7, 64] {
            let mut s = ChatStream::new(Some(ToolFormat::Hermes), Some(false));
            let (r, c, calls) = streamed(&mut s, text, step);
            assert_eq!(
                Some(r.as_str()),
                msg.reasoning_content.as_deref(),
                "step {step}"
            );
            assert_eq!(c, "", "step {step}");
            let args: serde_json::Value = serde_json::from_str(&calls[0].1).unwrap();
            assert_eq!(calls[0].0, "get_weather");
            assert_eq!(args, serde_json::json!({"city": "Paris"}));
        }
    }

    #[test]
    fn opened_block_and_plain_models() {
        let text = "I should greet.\n</think>\n\nHello there!";
        let (msg, _) = ChatStream::new(None, Some(true)).whole(text);
        assert_eq!(msg.reasoning_content.as_deref(), Some("I should greet."));
        assert_eq!(msg.content.as_deref(), Some("Hello there!"));
        let mut s = ChatStream::new(None, Some(true));
        assert_eq!(
            streamed(&mut s, text, 2),
            ("I should greet.".into(), "Hello there!".into(), vec![])
        );
        // Not a thinking model (or reasoning_format none): the tags are content.
        let (msg, _) = ChatStream::new(None, None).whole(text);
        assert_eq!(msg.reasoning_content, None);
        assert_eq!(msg.content.as_deref(), Some(text));
        let mut s = ChatStream::new(None, None);
        assert_eq!(
            streamed(&mut s, text, 5),
            (String::new(), text.into(), vec![])
        );
    }
}
