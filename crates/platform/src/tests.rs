//! The whole gateway (router, pools, reaper, proxy, ledger) against fake replicas: a
//! `thaw worker` stand-in script that reports an in-process fake OpenAI server and
//! lives until its stdin closes, so scaling, crashes and metering run as in production
//! without a model. Everything binds 127.0.0.1 on free ports.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::gateway::{Gateway, app};
use crate::replica::Launcher;
use crate::store::UsageRow;

/// The prompt size the fake replica announces and reports.
const PROMPT: u64 = 7;

/// The fake replica's HTTP side; the request's `fake` field picks what it does.
#[derive(Default)]
struct Fake {
    /// Ends a `cut` stream with a broken connection.
    cut: Notify,
}

fn chunk(delta: Value, finish: Value) -> String {
    let c = json!({"object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    format!("data: {c}\n\n")
}

/// Reasoning chunks a `think-…` mode sends before its content (a thinking model).
const THOUGHTS: u64 = 2;

async fn fake_chat(State(f): State<Arc<Fake>>, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).expect("the gateway sends JSON");
    let mode = v["fake"].as_str().unwrap_or("ok").to_string();
    // `think-MODE`: MODE, answered by a thinking model.
    let (think, mode) = match mode.strip_prefix("think-") {
        Some(m) => (true, m.to_string()),
        None => (false, mode),
    };
    let reasoning = if think { THOUGHTS } else { 0 };
    let usage = json!({"prompt_tokens": PROMPT, "completion_tokens": 3 + reasoning,
        "completion_tokens_details": {"reasoning_tokens": reasoning}});
    if mode == "dead" {
        // The replica dies before sending a byte of its answer.
        let body = stream::once(async { Err::<Bytes, _>(std::io::Error::other("replica died")) });
        return Response::new(Body::from_stream(body));
    }
    let mut resp = if v["stream"] == json!(true) {
        // Like `thaw serve`: a role chunk, one chunk per token, then the end.
        let mut head = vec![chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        )];
        for _ in 0..reasoning {
            head.push(chunk(json!({"reasoning_content": "hm"}), Value::Null));
        }
        for w in ["a", "b", "c"] {
            head.push(chunk(json!({"content": w}), Value::Null));
        }
        let head = stream::iter(head.into_iter().map(Ok::<_, std::io::Error>));
        let tail: BoxStream<'static, Result<String, std::io::Error>> = match mode.as_str() {
            "hang" => stream::pending().boxed(),
            "cut" => stream::once(async move {
                f.cut.notified().await;
                Err(std::io::Error::other("replica killed"))
            })
            .boxed(),
            _ => stream::iter([
                Ok(chunk(json!({}), json!("stop"))),
                Ok(format!(
                    "data: {}\n\n",
                    json!({"object": "chat.completion.chunk", "choices": [], "usage": usage})
                )),
                Ok("data: [DONE]\n\n".to_string()),
            ])
            .boxed(),
        };
        let mut r = Response::new(Body::from_stream(head.chain(tail)));
        r.headers_mut().insert(
            "content-type",
            HeaderValue::from_static("text/event-stream"),
        );
        r
    } else {
        if mode == "slow" {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        axum::Json(json!({"object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "abc"},
                "finish_reason": "stop"}],
            "usage": usage}))
        .into_response()
    };
    resp.headers_mut()
        .insert(thaw_server::PROMPT_TOKENS_HEADER, HeaderValue::from(PROMPT));
    resp
}

/// The worker stand-in: `SCRIPT worker SOURCE …` with SOURCE = `ADDR+DELAY` sleeps
/// DELAY seconds (a slow start), reports ADDR, and exits when its stdin closes, as
/// `thaw worker` does; with SOURCE = `ADDR+fail` it exits at once with an error, a
/// worker that cannot start. Written once: a script still open for writing while
/// another test forks could not be executed.
fn worker_script() -> PathBuf {
    static SCRIPT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    SCRIPT
        .get_or_init(|| {
            use std::os::unix::fs::PermissionsExt;
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("fake-worker");
            std::fs::write(
                &path,
                format!(
                    "#!/bin/sh\ncase \"$2\" in *+fail) echo 'fake worker: cannot start' >&2; exit 1;; esac\nsleep \"${{2#*+}}\"\necho \"{} ${{2%+*}}\"\nexec cat >/dev/null\n",
                    crate::replica::READY_LINE
                ),
            )
            .expect("write script");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            (dir, path)
        })
        .1
        .clone()
}

struct Harness {
    gw: Arc<Gateway>,
    url: String,
    http: reqwest::Client,
    fake: Arc<Fake>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// The unread rest of a streamed response.
type Chunks = std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<Vec<u8>>> + Send>>;

impl Harness {
    /// A gateway (open: no keys) with `deployments` (TOML tables without `source`:
    /// each gets the fake replica, starting in `delay` seconds).
    async fn start(deployments: &[&str], delay: f64) -> Harness {
        Self::start_as(deployments, &delay.to_string()).await
    }

    /// [`Self::start`] with the worker stand-in's `+` argument given: a delay in
    /// seconds, or `fail` (no replica can start).
    async fn start_as(deployments: &[&str], delay: &str) -> Harness {
        let fake = Arc::new(Fake::default());
        let fake_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake_addr = fake_listener.local_addr().unwrap();
        let fake_app = axum::Router::new()
            .route("/v1/chat/completions", post(fake_chat))
            .with_state(fake.clone());
        let mut tasks = vec![tokio::spawn(async move {
            let _ = axum::serve(fake_listener, fake_app).await;
        })];
        let dir = tempfile::tempdir().unwrap();
        let mut text = format!(
            "[gateway]\nopen = true\ndb = {:?}\nshutdown_grace = \"1s\"\n",
            dir.path().join("thaw.db")
        );
        for d in deployments {
            text.push_str(&format!(
                "[[deployment]]\nsource = \"{fake_addr}+{delay}\"\nstart_timeout = \"10s\"\n{d}\n"
            ));
        }
        let config = crate::config::parse(&text, "test.toml").expect("valid config");
        let launcher = Launcher {
            exe: worker_script(),
        };
        let gw = Gateway::new(&config, launcher).expect("gateway");
        tasks.push(tokio::spawn(gw.clone().reaper()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = app(gw.clone());
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        }));
        Harness {
            gw,
            url,
            http: reqwest::Client::new(),
            fake,
            tasks,
            _dir: dir,
        }
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .expect("gateway answers");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> String {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("gateway answers")
            .text()
            .await
            .unwrap()
    }

    async fn deployment(&self, name: &str) -> Value {
        serde_json::from_str(&self.get(&format!("/admin/deployments/{name}")).await).unwrap()
    }

    fn rows(&self) -> Vec<UsageRow> {
        self.gw.store.rows(0, None, 100).unwrap()
    }

    /// A chat request to the gateway whose `fake` field tells the fake replica what
    /// to do.
    fn chat_request(&self, mode: &str, stream: bool) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}/v1/chat/completions", self.url))
            .json(&chat(mode, stream))
    }

    /// A streamed chat whose prompt tells the fake replica what to do, read until
    /// `n` content deltas (the opening role chunk's empty one included) have arrived:
    /// the rest of the stream, unread, and the text read so far.
    async fn stream_until_content(&self, prompt: &str, n: usize) -> (Chunks, String) {
        let r = self.chat_request(prompt, true).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let mut body = r.bytes_stream();
        let mut text = String::new();
        while text.matches("\"content\":\"").count() < n {
            let b = body.next().await.expect("more events").unwrap();
            text.push_str(&String::from_utf8_lossy(&b));
        }
        (Box::pin(body.map(|r| r.map(|b| b.to_vec()))), text)
    }

    /// Wait up to `secs` for `f` to hold.
    async fn until(&self, secs: u64, mut f: impl AsyncFnMut(&Harness) -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if f(self).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        f(self).await
    }

    async fn shutdown(self) {
        self.gw.stop_all(Duration::from_millis(200)).await;
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // On a failed assertion too: the reaper and servers hold the pools, whose
        // processes are killed (and their stdin closed) when dropped.
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
}

fn pid_alive(pid: u64) -> bool {
    // A zombie has exited: only its parent's wait is missing.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

fn chat(mode: &str, stream: bool) -> Value {
    json!({"model": "d", "messages": [{"role": "user", "content": "hi"}],
        "stream": stream, "fake": mode})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_is_bounded_by_max_replicas_and_stops_starting_replicas() {
    let h = Harness::start(
        &[
            "name = \"one\"\nmax_replicas = 1",
            "name = \"two\"\nmax_replicas = 2",
        ],
        1.0,
    )
    .await;
    let (s, v) = h
        .post("/admin/deployments/one/scale", json!({"replicas": 50}))
        .await;
    assert_eq!(s, 400, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("max_replicas = 1") && msg.contains("thaw deploy"),
        "{msg}"
    );
    assert_eq!(v["error"]["param"], "replicas");
    let d = h.deployment("one").await;
    assert_eq!(
        (
            d["spec"]["min_replicas"].as_u64(),
            d["spec"]["max_replicas"].as_u64()
        ),
        (Some(0), Some(1))
    );
    assert_eq!(d["replicas"], json!([]), "nothing started");

    // Two replicas starting (1 s each), then back to zero before they are up.
    let (s, v) = h
        .post("/admin/deployments/two/scale", json!({"replicas": 2}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(
        h.until(5, async |h| h.deployment("two").await["replicas"]
            .as_array()
            .is_some_and(|r| r.len() == 2))
            .await
    );
    let (s, v) = h
        .post("/admin/deployments/two/scale", json!({"replicas": 0}))
        .await;
    assert_eq!(s, 200, "{v}");
    let states: Vec<Value> = v["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].clone())
        .collect();
    assert_eq!(states, [json!("draining"), json!("draining")], "{v}");
    assert_eq!(v["spec"]["max_replicas"], 2);
    assert_eq!(v["spec"]["min_replicas"], 0);
    // Once started they are stopped: nothing listed, no process left.
    let mut pids = Vec::new();
    let gone = h
        .until(10, async |h| {
            let d = h.deployment("two").await;
            let r = d["replicas"].as_array().unwrap();
            pids.extend(r.iter().filter_map(|r| r["pid"].as_u64()));
            r.is_empty()
        })
        .await;
    assert!(gone, "{}", h.deployment("two").await);
    assert!(
        h.until(5, async |_| !pids.iter().any(|&p| pid_alive(p)))
            .await,
        "workers still running: {pids:?}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_streamed_request_whose_client_leaves_is_metered() {
    let h = Harness::start(&["name = \"d\""], 0.0).await;
    let (s, v) = h.post("/v1/chat/completions", chat("ok", false)).await;
    assert_eq!(s, 200, "{v}");
    // The client gives up while the replica computes.
    let slow = h
        .chat_request("slow", false)
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(slow.is_err());
    assert!(
        h.until(5, async |h| h.rows().len() == 2).await,
        "{:?}",
        h.rows().iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let rows = h.rows();
    let statuses: Vec<u16> = rows.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 499]);
    assert_eq!(
        (rows[0].prompt_tokens, rows[0].completion_tokens),
        (PROMPT, 3)
    );
    let m = h.get("/metrics").await;
    assert_eq!(
        metric(
            &m,
            "thaw_gateway_requests_total{deployment=\"d\",status=\"499\"} "
        ),
        Some(1.0),
        "{m}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_cut_short_bill_prompt_and_generated_tokens() {
    let h = Harness::start(&["name = \"d\""], 0.0).await;
    // Client disconnects after the three content chunks.
    let (body, _) = h.stream_until_content("hang", 4).await;
    drop(body);
    assert!(h.until(5, async |h| h.rows().len() == 1).await);
    // A complete stream for comparison: the replica's usage chunk.
    let r = h.chat_request("ok", true).send().await.unwrap();
    let text = r.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(
        !text.contains("usage"),
        "the client did not ask for usage: {text}"
    );
    let rows = h.rows();
    let got: Vec<(u16, u64, u64)> = rows
        .iter()
        .map(|r| (r.status, r.prompt_tokens, r.completion_tokens))
        .collect();
    assert_eq!(got, [(499, PROMPT, 3), (200, PROMPT, 3)]);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasoning_tokens_are_metered_apart() {
    let h = Harness::start(&["name = \"d\""], 0.0).await;
    // A thinking model's answers, streamed and not: the replica's usage.
    for stream in [false, true] {
        let r = h.chat_request("think-ok", stream).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap();
    }
    // Cut short after its reasoning and two content chunks: one token per chunk
    // forwarded, the reasoning ones counted as reasoning.
    let (body, _) = h.stream_until_content("think-hang", 3).await;
    drop(body);
    assert!(h.until(5, async |h| h.rows().len() == 3).await);
    let got: Vec<(u16, u64, u64)> = h
        .rows()
        .iter()
        .map(|r| (r.status, r.completion_tokens, r.reasoning_tokens))
        .collect();
    let whole = (3 + THOUGHTS, THOUGHTS);
    assert_eq!(got[..2], [(200, whole.0, whole.1), (200, whole.0, whole.1)]);
    let (status, completion, reasoning) = got[2];
    assert_eq!(status, 499);
    // The chunks the gateway had read when the client left: all the reasoning, and
    // at least the two content chunks the client saw.
    assert_eq!(reasoning, THOUGHTS);
    assert!(
        (THOUGHTS + 2..=THOUGHTS + 3).contains(&completion),
        "{got:?}"
    );
    let sum = h.gw.store.summary(0, None).unwrap();
    assert_eq!(sum[0].reasoning_tokens, 3 * THOUGHTS);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_mid_stream_counts_as_a_crash() {
    let h = Harness::start(&["name = \"d\""], 0.0).await;
    let (mut body, mut text) = h.stream_until_content("cut", 4).await;
    let d = h.deployment("d").await;
    let pid = d["replicas"][0]["pid"].as_u64().expect("a ready replica");
    // The worker dies, and with it the connection.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    h.fake.cut.notify_one();
    while let Some(b) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&b.unwrap()));
    }
    assert!(text.contains("replica_failed"), "{text}");
    let crashed = h
        .until(5, async |h| {
            metric(
                &h.get("/metrics").await,
                "thaw_replica_crashes_total{deployment=\"d\"} ",
            ) == Some(1.0)
        })
        .await;
    assert!(crashed, "{}", h.get("/metrics").await);
    let got: Vec<(u16, u64, u64)> = h
        .rows()
        .iter()
        .map(|r| (r.status, r.prompt_tokens, r.completion_tokens))
        .collect();
    assert_eq!(got, [(502, PROMPT, 3)]);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_get_openai_errors() {
    let h = Harness::start(&["name = \"d\""], 0.0).await;
    let url = format!("{}/v1/chat/completions", h.url);
    let body = chat("ok", false).to_string();
    for ct in [Some("text/plain"), None] {
        let mut req = h.http.post(&url).body(body.clone());
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 415, "{ct:?}");
        let v: Value = r.json().await.expect("a JSON error body");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("application/json")
        );
    }
    let big = vec![b' '; crate::gateway::BODY_LIMIT + 1];
    for path in ["/v1/chat/completions", "/admin/deployments"] {
        let r = h
            .http
            .post(format!("{}{path}", h.url))
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        let v: Value = r.json().await.expect("a JSON error body");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("too large"),
            "{v}"
        );
    }
    // None of these reached a replica.
    assert_eq!(h.deployment("d").await["replicas"], json!([]));
    h.shutdown().await;
}

/// The requests refused after admission, before a replica took them (429 queue full,
/// 503 no replica could start) or after every replica tried failed (502), get a ledger
/// row like the others: their status, no tokens, no cost, and the id the client got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_no_replica_answered_get_a_ledger_row() {
    async fn refused(h: &Harness, mode: &str, status: u16) {
        let r = h.chat_request(mode, false).send().await.unwrap();
        assert_eq!(r.status(), status);
        let id = r.headers()[crate::proxy::REQUEST_ID_HEADER]
            .to_str()
            .unwrap()
            .to_string();
        let v: Value = r.json().await.expect("an OpenAI error body");
        assert!(v["error"]["message"].is_string(), "{v}");
        let rows = h.rows();
        assert_eq!(rows.len(), 1, "{status}");
        let row = &rows[0];
        assert_eq!(
            (
                row.id.as_str(),
                row.deployment.as_str(),
                row.status,
                row.prompt_tokens,
                row.cached_tokens,
                row.completion_tokens,
                row.cost,
            ),
            (id.as_str(), "d", status, 0, 0, 0, 0.0)
        );
        // Counted once in the metrics, as before.
        let m = h.get("/metrics").await;
        assert_eq!(
            metric(
                &m,
                &format!("thaw_gateway_requests_total{{deployment=\"d\",status=\"{status}\"}} ")
            ),
            Some(1.0),
            "{m}"
        );
    }
    // No room to wait and no replica ready: 429 at once.
    let h = Harness::start(&["name = \"d\"\nmax_queue = 0"], 0.0).await;
    refused(&h, "ok", 429).await;
    assert_eq!(h.rows()[0].compute_ms, 0);
    h.shutdown().await;
    // The worker exits before it serves: 503 with the reason.
    let h = Harness::start_as(&["name = \"d\""], "fail").await;
    refused(&h, "ok", 503).await;
    assert_eq!(h.rows()[0].compute_ms, 0);
    h.shutdown().await;
    // Each replica dies before answering, 3 attempts: 502.
    let h = Harness::start(&["name = \"d\""], 0.0).await;
    refused(&h, "dead", 502).await;
    h.shutdown().await;
}
