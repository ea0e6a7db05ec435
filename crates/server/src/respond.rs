//! Turning a job's events into an HTTP answer: one JSON body, or server-sent events
//! exactly as OpenAI streams them (role chunk, content chunks, a final chunk with the
//! finish reason, an optional usage chunk, then `data: [DONE]`).

use std::convert::Infallible;

use axum::Json;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use futures_util::stream;
use serde_json::Value;
use thaw_openai::Usage;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::error::ApiError;
use crate::scheduler::{Event, Finish, TokenLogprob};

/// How one endpoint shapes its bodies.
pub trait Format: Send + 'static {
    /// The chunk sent before any text (chat: the assistant role).
    fn first_chunk(&mut self) -> Option<Value>;
    /// `None` when the piece is held back (e.g. a tool call still being parsed).
    fn text_chunk(&mut self, text: &str, logprobs: &[TokenLogprob]) -> Option<Value>;
    fn final_chunk(&mut self, finish: Finish) -> Value;
    fn usage_chunk(&mut self, usage: Usage) -> Value;
    fn whole(
        &mut self,
        text: &str,
        logprobs: &[TokenLogprob],
        finish: Finish,
        usage: Usage,
    ) -> Value;
}

fn usage(prompt: usize, cached: usize, completion: usize) -> Usage {
    Usage::new(prompt as u32, completion as u32, cached as u32)
}

/// Wait for the whole answer.
pub async fn collect<F: Format>(
    mut rx: UnboundedReceiver<Event>,
    mut fmt: F,
) -> Result<Response, ApiError> {
    let mut text = String::new();
    let mut lps = Vec::new();
    loop {
        match rx.recv().await {
            Some(Event::Text { text: t, logprobs }) => {
                text.push_str(&t);
                lps.extend(logprobs);
            }
            Some(Event::Done {
                finish,
                prompt_tokens,
                cached_tokens,
                completion_tokens,
            }) => {
                let u = usage(prompt_tokens, cached_tokens, completion_tokens);
                return Ok(Json(fmt.whole(&text, &lps, finish, u)).into_response());
            }
            Some(Event::Error(e)) => return Err(e),
            None => {
                return Err(ApiError::internal(
                    "generation was aborted by an internal error",
                ));
            }
        }
    }
}

enum Phase {
    Start,
    Body,
    End,
}

fn data(v: &Value) -> SseEvent {
    SseEvent::default().data(v.to_string())
}

/// Stream the answer as server-sent events. Dropping the response (client gone) drops
/// `rx`, which the scheduler notices at its next step.
pub fn stream<F: Format>(rx: UnboundedReceiver<Event>, fmt: F, include_usage: bool) -> Response {
    let s = stream::unfold(
        (rx, fmt, Phase::Start),
        move |(mut rx, mut fmt, phase)| async move {
            match phase {
                Phase::Start => {
                    let first: Vec<SseEvent> = fmt.first_chunk().iter().map(data).collect();
                    Some((first, (rx, fmt, Phase::Body)))
                }
                Phase::Body => {
                    let out = match rx.recv().await {
                        Some(Event::Text { text, logprobs }) => {
                            if text.is_empty() && logprobs.is_empty() {
                                Vec::new()
                            } else {
                                fmt.text_chunk(&text, &logprobs).iter().map(data).collect()
                            }
                        }
                        Some(Event::Done {
                            finish,
                            prompt_tokens,
                            cached_tokens,
                            completion_tokens,
                        }) => {
                            let mut v = vec![data(&fmt.final_chunk(finish))];
                            if include_usage {
                                let u = usage(prompt_tokens, cached_tokens, completion_tokens);
                                v.push(data(&fmt.usage_chunk(u)));
                            }
                            v.push(SseEvent::default().data("[DONE]"));
                            return Some((v, (rx, fmt, Phase::End)));
                        }
                        Some(Event::Error(e)) => {
                            let body = serde_json::to_value(e.body()).unwrap_or(Value::Null);
                            return Some((vec![data(&body)], (rx, fmt, Phase::End)));
                        }
                        None => {
                            let e =
                                ApiError::internal("generation was aborted by an internal error");
                            let body = serde_json::to_value(e.body()).unwrap_or(Value::Null);
                            return Some((vec![data(&body)], (rx, fmt, Phase::End)));
                        }
                    };
                    Some((out, (rx, fmt, Phase::Body)))
                }
                Phase::End => None,
            }
        },
    )
    .flat_map(|v| stream::iter(v.into_iter().map(Ok::<_, Infallible>)));
    Sse::new(s).into_response()
}

/// A logprob as JSON: OpenAI clamps -inf to -9999.
pub fn lp_value(x: f32) -> f32 {
    if x.is_finite() { x } else { -9999.0 }
}
