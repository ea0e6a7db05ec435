//! Forwarding `/v1/chat/completions` and `/v1/completions` to a replica, metering
//! what it used.
//!
//! Token counts come from the replica's `usage`: streams are always asked for
//! `stream_options.include_usage`, and that chunk is removed again when the client
//! did not ask for it. The ledger row is committed before the client receives the end
//! of its answer (`[DONE]` or the JSON body), so every answer a client saw complete is
//! in the ledger; a request dropped before that (client gone) is committed as 499 when
//! dropped. A stream cut short bills the prompt from the replica's
//! `x-thaw-prompt-tokens` header and one token per output chunk. A request whose
//! replica fails before anything reached the client is retried on another replica.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::auth::{self, Caller};
use crate::error::{GatewayError, GatewayErrors};
use crate::gateway::Gateway;
use crate::pool::{AcquireError, Lease};
use crate::store::{UsageRow, now_ms};

/// Replica attempts per request (the first plus retries).
const ATTEMPTS: usize = 3;

/// Header carrying the ledger id of the request.
pub const REQUEST_ID_HEADER: &str = "x-thaw-request-id";

fn new_request_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "req-{:x}{:06x}",
        now_ms(),
        N.fetch_add(1, Ordering::Relaxed) & 0xff_ffff
    )
}

#[derive(Default, Clone, Copy)]
struct Usage {
    prompt: u64,
    cached: u64,
    completion: u64,
    reasoning: u64,
}

fn usage_of(v: &Value) -> Option<Usage> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    Some(Usage {
        prompt: n(u.get("prompt_tokens")),
        cached: n(u.pointer("/prompt_tokens_details/cached_tokens")),
        completion: n(u.get("completion_tokens")),
        reasoning: n(u.pointer("/completion_tokens_details/reasoning_tokens")),
    })
}

/// What the ledger needs to know about one request, armed from admission on: every
/// admitted request gets its row, those refused before a replica took them (429
/// queue full, 503 no replica could start) and those whose replicas all failed (502)
/// included, with no tokens; a request that is dropped before its row is written
/// (axum drops the handler when the client disconnects, e.g. while the replica
/// computes a non-streamed answer) is committed as 499 with the usage known so far.
struct Meter {
    gw: Arc<Gateway>,
    id: String,
    key: String,
    deployment: String,
    price_in: f64,
    price_out: f64,
    cold: bool,
    /// When the current attempt got its replica (compute time starts).
    started: Option<Instant>,
    /// What a row written on drop bills: the prompt once the replica has said it.
    known: Usage,
    /// The row is written.
    done: bool,
}

impl Meter {
    fn row(&self, status: u16, u: Usage) -> UsageRow {
        UsageRow {
            id: self.id.clone(),
            time_ms: now_ms(),
            key: self.key.clone(),
            deployment: self.deployment.clone(),
            prompt_tokens: u.prompt,
            cached_tokens: u.cached,
            completion_tokens: u.completion,
            reasoning_tokens: u.reasoning,
            compute_ms: self.started.map_or(0, |t| t.elapsed().as_millis() as u64),
            cold_start: self.cold,
            cost: (u.prompt as f64 * self.price_in + u.completion as f64 * self.price_out) / 1e6,
            status,
        }
    }

    fn count(&self, status: u16, u: Usage) {
        self.gw.metrics.request(&self.deployment, status);
        self.gw
            .metrics
            .tokens(&self.deployment, u.prompt, u.completion);
        self.gw
            .limits
            .add_tokens(&self.key, u.prompt + u.completion);
    }

    async fn commit(&mut self, status: u16, u: Usage) {
        // Done and counted before the wait: if the handler is dropped during it, the
        // spawned write still lands and nothing is counted twice.
        self.done = true;
        self.count(status, u);
        let row = self.row(status, u);
        let store = self.gw.store.clone();
        match tokio::task::spawn_blocking(move || store.record(&row)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!("usage ledger: {e}"),
            Err(e) => tracing::error!("usage ledger task: {e}"),
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let row = self.row(499, self.known);
        self.count(499, self.known);
        let store = self.gw.store.clone();
        let write = move || {
            if let Err(e) = store.record(&row) {
                tracing::error!("usage ledger: {e}");
            }
        };
        // Drop cannot wait: write on the blocking pool, or here when no runtime is left.
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn_blocking(write)),
            Err(_) => write(),
        }
    }
}

/// The prompt's token count the replica sends with its status line
/// ([`thaw_server::PROMPT_TOKENS_HEADER`]; an external server may not).
fn prompt_tokens_header(h: &reqwest::header::HeaderMap) -> u64 {
    h.get(thaw_server::PROMPT_TOKENS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Whether a streamed chunk carries generated output: content, reasoning, a refusal,
/// tool-call deltas (chat) or text (completions). The role chunk, the finish chunk and the usage
/// chunk do not. `thaw serve` sends at most one such chunk per generated token (one
/// per token, fewer when text is held back for a stop string, an unfinished UTF-8
/// character or a tool call being parsed: `crates/server/src/scheduler.rs`,
/// `respond.rs`), so counting them bills about the tokens generated when the usage
/// chunk never comes.
fn non_empty(x: Option<&Value>) -> bool {
    match x {
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        _ => false,
    }
}

/// A chunk carrying a thinking model's reasoning (`delta.reasoning_content`): what a
/// cut-short stream bills as reasoning tokens, one per chunk.
fn is_reasoning_chunk(v: &Value) -> bool {
    let Some(choices) = v.get("choices").and_then(Value::as_array) else {
        return false;
    };
    choices
        .iter()
        .any(|c| non_empty(c.pointer("/delta/reasoning_content")))
}

fn is_output_chunk(v: &Value) -> bool {
    let Some(choices) = v.get("choices").and_then(Value::as_array) else {
        return false;
    };
    choices.iter().any(|c| {
        let d = c.get("delta");
        non_empty(d.and_then(|d| d.get("content")))
            || non_empty(d.and_then(|d| d.get("reasoning_content")))
            || non_empty(d.and_then(|d| d.get("refusal")))
            || non_empty(d.and_then(|d| d.get("tool_calls")))
            || non_empty(c.get("text"))
    })
}

/// The request body as the replica should get it.
struct Prepared {
    body: Bytes,
    stream: bool,
    client_wants_usage: bool,
}

fn prepare(mut v: Value, chat: bool, lease: &Lease) -> Prepared {
    let spec = &lease.spec;
    let obj = v.as_object_mut().expect("checked to be an object");
    obj.insert("model".into(), Value::String(spec.upstream_model().into()));
    let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let client_wants_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if stream {
        obj.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if chat
        && let Some(sys) = &spec.system_prompt
        && let Some(Value::Array(msgs)) = obj.get_mut("messages")
        && !msgs.iter().any(|m| {
            matches!(
                m.get("role").and_then(Value::as_str),
                Some("system" | "developer")
            )
        })
    {
        msgs.insert(0, json!({"role": "system", "content": sys}));
    }
    Prepared {
        body: Bytes::from(serde_json::to_vec(&v).expect("a Value serializes")),
        stream,
        client_wants_usage,
    }
}

fn acquire_error(e: AcquireError, model: &str) -> GatewayError {
    match e {
        AcquireError::QueueFull => {
            let mut e = GatewayError::queue_full();
            e.message =
                format!("Deployment `{model}` is at its queue limit (max_queue). Retry shortly.");
            e
        }
        AcquireError::StartFailed(msg) => GatewayError::unavailable(msg),
        AcquireError::Gone => GatewayError::model_not_found(model),
    }
}

/// `POST /v1/chat/completions` and `POST /v1/completions`.
pub async fn forward(
    State(gw): State<Arc<Gateway>>,
    uri: Uri,
    headers: HeaderMap,
    crate::gateway::Body(body): crate::gateway::Body,
) -> Response {
    let caller = match auth::authenticate(&headers, &gw.store, gw.open) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = check_json(&headers) {
        return e.into_response();
    }
    match forward_inner(&gw, &caller, uri.path(), body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// The content type `thaw serve` accepts (the same check, [`thaw_openai::check_json_content_type`]),
/// so the gateway refuses what a replica would, with the same 415.
fn check_json(h: &HeaderMap) -> Result<(), GatewayError> {
    let ct = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    Ok(thaw_openai::check_json_content_type(ct)?)
}

async fn forward_inner(
    gw: &Arc<Gateway>,
    caller: &Caller,
    path: &str,
    body: Bytes,
) -> Result<Response, GatewayError> {
    let arrived = Instant::now();
    let v: Value = serde_json::from_slice(&body).map_err(|e| {
        GatewayError::invalid("", format!("The request body is not valid JSON: {e}"))
    })?;
    if !v.is_object() {
        return Err(GatewayError::invalid(
            "",
            "The request body must be a JSON object.",
        ));
    }
    let model = match v.get("model") {
        Some(Value::String(m)) => m.clone(),
        Some(_) => return Err(GatewayError::invalid("model", "`model` must be a string.")),
        None => return Err(GatewayError::invalid("model", "`model` is required.")),
    };
    let pool = gw
        .pool(&model)
        .ok_or_else(|| GatewayError::model_not_found(&model))?;
    let store = gw.store.clone();
    let c = caller.clone();
    let limits = gw.clone();
    tokio::task::spawn_blocking(move || limits.limits.admit(&c, &store))
        .await
        .map_err(|e| GatewayError::internal(e.to_string()))??;
    let chat = path.ends_with("/chat/completions");
    let spec = pool.spec();
    let mut meter = Meter {
        gw: gw.clone(),
        id: new_request_id(),
        key: caller.name.clone(),
        deployment: model.clone(),
        price_in: spec.price_input,
        price_out: spec.price_output,
        cold: false,
        started: None,
        known: Usage::default(),
        done: false,
    };
    let id = meter.id.clone();
    let mut last_err = String::new();
    for attempt in 0..ATTEMPTS {
        let lease = match pool.acquire().await {
            Ok(l) => l,
            Err(e) => {
                // Refused before a replica took it (429 queue full, 503 no replica
                // could start, 404 deployment deleted meanwhile): a row with no tokens.
                let err = acquire_error(e, &model);
                meter.commit(err.status.as_u16(), Usage::default()).await;
                return Ok(with_id(err.into_response(), &id));
            }
        };
        let prep = prepare(v.clone(), chat, &lease);
        meter.price_in = lease.spec.price_input;
        meter.price_out = lease.spec.price_output;
        meter.cold = lease.cold;
        meter.started = Some(Instant::now());
        meter.known = Usage::default();
        let url = format!("http://{}{}", lease.addr, path);
        let sent = gw
            .http
            .post(&url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(prep.body.clone())
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(deployment = %model, attempt, "replica at {} failed: {e}", lease.addr);
                lease.replica_failed();
                last_err = e.to_string();
                continue;
            }
        };
        let status = resp.status();
        if !status.is_success() {
            // The replica's own OpenAI error (400 for a bad request, 429 when full…).
            let retry_after = resp.headers().get(header::RETRY_AFTER).cloned();
            let bytes = resp.bytes().await.unwrap_or_default();
            meter.commit(status.as_u16(), Usage::default()).await;
            let mut r = Response::new(Body::from(bytes));
            *r.status_mut() =
                StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if let Some(ra) = retry_after {
                r.headers_mut().insert(header::RETRY_AFTER, ra);
            }
            return Ok(with_id(r, &id));
        }
        meter.known.prompt = prompt_tokens_header(resp.headers());
        if !prep.stream {
            let bytes = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    lease.replica_failed();
                    last_err = e.to_string();
                    continue;
                }
            };
            let u = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .as_ref()
                .and_then(usage_of)
                .unwrap_or(meter.known);
            if lease.cold {
                gw.metrics.cold_first_token(&model, arrived.elapsed());
            }
            meter.commit(200, u).await;
            drop(lease);
            let mut r = Response::new(Body::from(bytes));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return Ok(with_id(r, &id));
        }
        let mut upstream = resp.bytes_stream();
        // Wait for the first bytes: a replica that dies before them is retried.
        let first = match upstream.next().await {
            Some(Ok(b)) => b,
            Some(Err(e)) => {
                lease.replica_failed();
                last_err = e.to_string();
                continue;
            }
            None => {
                lease.replica_failed();
                last_err = "the replica closed the stream before sending anything".into();
                continue;
            }
        };
        if lease.cold {
            gw.metrics.cold_first_token(&model, arrived.elapsed());
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(32);
        let upstream = futures_util::stream::iter([Ok(first)]).chain(upstream);
        tokio::spawn(pump(upstream, tx, meter, lease, prep.client_wants_usage));
        let body = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
        });
        let mut r = Response::new(Body::from_stream(body));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return Ok(with_id(r, &id));
    }
    let e = GatewayError::bad_gateway(format!(
        "Deployment `{model}`: the replica failed {ATTEMPTS} times before answering ({last_err}). Retry later."
    ));
    meter.commit(502, Usage::default()).await;
    Ok(with_id(e.into_response(), &id))
}

fn with_id(mut r: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        r.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    r
}

/// Copy SSE events from the replica to the client, one whole event at a time,
/// metering the usage chunk and committing the row before `[DONE]` goes out.
async fn pump(
    mut upstream: impl futures_util::Stream<Item = reqwest::Result<Bytes>> + Unpin,
    tx: tokio::sync::mpsc::Sender<Bytes>,
    mut meter: Meter,
    lease: Lease,
    client_wants_usage: bool,
) {
    let mut buf: Vec<u8> = Vec::new();
    let mut usage = None;
    // Without the usage chunk (the stream ended early): the prompt as the replica
    // announced it, and one token per output chunk.
    let mut fallback = meter.known;
    let mut client_gone = false;
    loop {
        let item = tokio::select! {
            item = upstream.next() => item,
            _ = tx.closed() => { client_gone = true; None }
        };
        let Some(item) = item else { break };
        let bytes = match item {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(deployment = %meter.deployment, "stream from replica broke: {e}");
                break;
            }
        };
        buf.extend_from_slice(&bytes);
        while let Some(end) = find_event_end(&buf) {
            let event: Vec<u8> = buf.drain(..end).collect();
            let data = event_data(&event);
            if data.as_deref() == Some("[DONE]") {
                meter.commit(200, usage.unwrap_or(fallback)).await;
                let _ = tx.send(Bytes::from(event)).await;
                return;
            }
            let mut forward = true;
            if let Some(d) = &data
                && let Ok(v) = serde_json::from_str::<Value>(d)
            {
                if let Some(u) = usage_of(&v) {
                    usage = Some(u);
                    let no_choices = v
                        .get("choices")
                        .and_then(Value::as_array)
                        .is_some_and(|c| c.is_empty());
                    forward = client_wants_usage || !no_choices;
                } else if is_output_chunk(&v) {
                    fallback.completion += 1;
                    fallback.reasoning += u64::from(is_reasoning_chunk(&v));
                }
            }
            if forward && tx.send(Bytes::from(event)).await.is_err() {
                client_gone = true;
                break;
            }
        }
        if client_gone {
            break;
        }
    }
    let u = usage.unwrap_or(fallback);
    if client_gone {
        // 499: the client went away; the replica frees the sequence when we drop
        // the connection.
        meter.commit(499, u).await;
        return;
    }
    // The replica died or closed mid-stream: say so in the stream, then end it.
    lease.replica_failed();
    meter.commit(502, u).await;
    let err = GatewayError::bad_gateway(format!(
        "Deployment `{}`: the replica failed mid-stream; the answer is incomplete.",
        meter.deployment
    ));
    let msg = format!(
        "data: {}\n\n",
        serde_json::to_string(&err.body()).unwrap_or_default()
    );
    let _ = tx.send(Bytes::from(msg)).await;
}

/// Index just past the blank line ending the first complete SSE event.
fn find_event_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The `data:` payload of an event (lines joined with `\n`).
fn event_data(event: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(event).ok()?;
    let mut out: Option<String> = None;
    for line in text.lines() {
        if let Some(d) = line.strip_prefix("data:") {
            let d = d.strip_prefix(' ').unwrap_or(d);
            match &mut out {
                Some(s) => {
                    s.push('\n');
                    s.push_str(d);
                }
                None => out = Some(d.to_string()),
            }
        }
    }
    out
}

/// Idle time after which a pump gives up on a silent replica is the HTTP client's
/// read timeout; kept here so the gateway builds its client with it.
pub const READ_TIMEOUT: Duration = Duration::from_secs(600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_are_split_whole() {
        let b = b"data: {\"a\":1}\n\ndata: [DONE]\n\npartial";
        let e = find_event_end(b).unwrap();
        assert_eq!(event_data(&b[..e]).as_deref(), Some("{\"a\":1}"));
        let rest = &b[e..];
        let e2 = find_event_end(rest).unwrap();
        assert_eq!(event_data(&rest[..e2]).as_deref(), Some("[DONE]"));
        assert_eq!(find_event_end(&rest[e2..]), None);
        assert_eq!(find_event_end(b"data: x\r\n\r\n"), Some(11));
    }

    #[test]
    fn only_output_chunks_count_as_tokens() {
        let delta =
            |d: Value| json!({"choices": [{"index": 0, "delta": d, "finish_reason": null}]});
        assert!(!is_output_chunk(&delta(
            json!({"role": "assistant", "content": ""})
        )));
        assert!(!is_output_chunk(&delta(json!({}))));
        assert!(!is_output_chunk(&json!({"choices": [], "usage": {}})));
        assert!(is_output_chunk(&delta(json!({"content": "Hi"}))));
        // A thinking model's reasoning is generated output too.
        assert!(is_output_chunk(&delta(json!({"reasoning_content": "Hmm"}))));
        assert!(!is_output_chunk(&delta(json!({"reasoning_content": ""}))));
        assert!(is_output_chunk(&delta(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]})
        )));
        assert!(is_output_chunk(
            &json!({"choices": [{"index": 0, "text": " there"}]})
        ));
        assert!(!is_output_chunk(
            &json!({"choices": [{"index": 0, "text": "", "finish_reason": "stop"}]})
        ));
    }

    #[test]
    fn usage_is_read_with_cached_and_reasoning_tokens() {
        let v = json!({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 5}}});
        let u = usage_of(&v).unwrap();
        assert_eq!(
            (u.prompt, u.cached, u.completion, u.reasoning),
            (7, 5, 3, 0)
        );
        let v = json!({"usage": {"prompt_tokens": 7, "completion_tokens": 9,
            "completion_tokens_details": {"reasoning_tokens": 6}}});
        let u = usage_of(&v).unwrap();
        assert_eq!((u.completion, u.reasoning), (9, 6));
        assert!(usage_of(&json!({"usage": null})).is_none());
        let think = json!({"choices": [{"index": 0, "delta": {"reasoning_content": "hm"}}]});
        let say = json!({"choices": [{"index": 0, "delta": {"content": "hi"}}]});
        assert!(is_reasoning_chunk(&think) && is_output_chunk(&think));
        assert!(!is_reasoning_chunk(&say) && is_output_chunk(&say));
    }
}
