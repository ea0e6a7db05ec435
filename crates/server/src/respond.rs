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
use crate::scheduler::{Event, Finish, TokenCounts, TokenLogprob};

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

fn usage(c: &TokenCounts) -> Usage {
    Usage::new(c.prompt as u32, c.completion as u32, c.cached as u32)
        .with_reasoning(c.reasoning.map(|r| r as u32))
}

/// Token counts of one finished choice.
type Counts = TokenCounts;

/// One choice's whole body and counts.
async fn collect_one<F: Format>(
    mut rx: UnboundedReceiver<Event>,
    mut fmt: F,
) -> Result<(Value, Counts), ApiError> {
    let mut text = String::new();
    let mut lps = Vec::new();
    loop {
        match rx.recv().await {
            Some(Event::Text { text: t, logprobs }) => {
                text.push_str(&t);
                lps.extend(logprobs);
            }
            Some(Event::Done { finish, counts }) => {
                let u = usage(&counts);
                return Ok((fmt.whole(&text, &lps, finish, u), counts));
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

/// Wait for the whole answer.
pub async fn collect<F: Format>(
    rx: UnboundedReceiver<Event>,
    fmt: F,
) -> Result<Response, ApiError> {
    let (body, _) = collect_one(rx, fmt).await?;
    Ok(Json(body).into_response())
}

/// Every choice's `index` in a body or chunk set to `i`.
fn set_index(v: &mut Value, i: usize) {
    if let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) {
        for c in choices {
            c["index"] = Value::from(i);
        }
    }
}

/// The usage of several choices: each prompt counted once (choices come in groups of
/// `n` per prompt), completions added up.
fn usage_of_all(counts: &[Counts], n: usize) -> Usage {
    let first = counts.iter().step_by(n.max(1));
    let reasoning = counts.iter().map(|c| c.reasoning);
    usage(&TokenCounts {
        prompt: first.clone().map(|c| c.prompt).sum(),
        cached: first.map(|c| c.cached).sum(),
        completion: counts.iter().map(|c| c.completion).sum(),
        reasoning: reasoning
            .clone()
            .any(|r| r.is_some())
            .then(|| reasoning.flatten().sum()),
    })
}

/// Several choices answered as one body (`n` > 1, or several prompts): choice `i` is
/// job `i`; the first error answers for all (dropping the other jobs cancels them).
pub async fn collect_many<F: Format>(
    rxs: Vec<UnboundedReceiver<Event>>,
    fmts: Vec<F>,
    n: usize,
) -> Result<Response, ApiError> {
    let all = rxs.into_iter().zip(fmts).map(|(rx, f)| collect_one(rx, f));
    let done = futures_util::future::try_join_all(all).await?;
    let counts: Vec<Counts> = done.iter().map(|d| d.1).collect();
    // The first choice's body, with every choice in it.
    let mut choices = Vec::new();
    let mut first = None;
    for (i, (mut b, _)) in done.into_iter().enumerate() {
        set_index(&mut b, i);
        if let Some(Value::Array(c)) = b.get_mut("choices").map(Value::take) {
            choices.extend(c);
        }
        first.get_or_insert(b);
    }
    let mut body = first.unwrap_or(Value::Null);
    body["choices"] = Value::Array(choices);
    body["usage"] = serde_json::to_value(usage_of_all(&counts, n)).unwrap_or(Value::Null);
    Ok(Json(body).into_response())
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
                        Some(Event::Done { finish, counts }) => {
                            let mut v = vec![data(&fmt.final_chunk(finish))];
                            if include_usage {
                                v.push(data(&fmt.usage_chunk(usage(&counts))));
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

/// Several choices streamed as one answer: each choice's chunks carry its index, in
/// the order its tokens come; one usage chunk (if asked) after every choice finished,
/// then `[DONE]`. An error ends the stream for all.
pub fn stream_many<F: Format>(
    rxs: Vec<UnboundedReceiver<Event>>,
    fmts: Vec<F>,
    include_usage: bool,
    n: usize,
) -> Response {
    let k = rxs.len();
    let events = stream::select_all(rxs.into_iter().enumerate().map(|(i, rx)| {
        stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
            .map(move |e| (i, e))
            .boxed()
    }));
    let start = (events, fmts, vec![None; k], Phase::Start);
    let s = stream::unfold(
        start,
        move |(mut events, mut fmts, mut counts, phase)| async move {
            let chunk = |v: Option<Value>, i: usize| {
                v.map(|mut v| {
                    set_index(&mut v, i);
                    data(&v)
                })
            };
            let err = |e: ApiError| data(&serde_json::to_value(e.body()).unwrap_or(Value::Null));
            match phase {
                Phase::Start => {
                    let first: Vec<SseEvent> = fmts
                        .iter_mut()
                        .enumerate()
                        .filter_map(|(i, f)| chunk(f.first_chunk(), i))
                        .collect();
                    Some((first, (events, fmts, counts, Phase::Body)))
                }
                Phase::Body => {
                    let out = match events.next().await {
                        Some((i, Event::Text { text, logprobs })) => {
                            if text.is_empty() && logprobs.is_empty() {
                                Vec::new()
                            } else {
                                chunk(fmts[i].text_chunk(&text, &logprobs), i)
                                    .into_iter()
                                    .collect()
                            }
                        }
                        Some((i, Event::Done { finish, counts: c })) => {
                            counts[i] = Some(c);
                            let mut v: Vec<SseEvent> = chunk(Some(fmts[i].final_chunk(finish)), i)
                                .into_iter()
                                .collect();
                            if counts.iter().all(Option::is_some) {
                                if include_usage {
                                    let all: Vec<Counts> =
                                        counts.iter().flatten().copied().collect();
                                    let u = usage_of_all(&all, n);
                                    v.push(data(&fmts[0].usage_chunk(u)));
                                }
                                v.push(SseEvent::default().data("[DONE]"));
                                return Some((v, (events, fmts, counts, Phase::End)));
                            }
                            v
                        }
                        Some((_, Event::Error(e))) => {
                            return Some((vec![err(e)], (events, fmts, counts, Phase::End)));
                        }
                        None => {
                            let e =
                                ApiError::internal("generation was aborted by an internal error");
                            return Some((vec![err(e)], (events, fmts, counts, Phase::End)));
                        }
                    };
                    Some((out, (events, fmts, counts, Phase::Body)))
                }
                Phase::End => None,
            }
        },
    )
    .flat_map(|v| stream::iter(v.into_iter().map(Ok::<_, Infallible>)));
    Sse::new(s).into_response()
}
