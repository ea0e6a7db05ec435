//! `thaw serve`: an OpenAI-compatible HTTP server over the thaw engine.
//!
//! Endpoints: `POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`,
//! `GET /health`, `GET /metrics` (Prometheus text) and `GET /openapi.json`. Model work
//! runs on one scheduler thread (see [`scheduler`]) that interleaves all requests;
//! handlers talk to it over channels. Every error is an OpenAI error body.
//!
//! [`serve`] binds a socket and runs until SIGTERM/Ctrl-C; [`app`] builds the router
//! alone so tests can drive it without a socket.

mod chat;
mod chat_stream;
mod completions;
mod error;
mod extract;
mod metrics;
mod params;
mod respond;
pub mod scheduler;
mod tools;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use thaw_engine::{Engine, EngineError, LoadOptions};
use thaw_openai::{Model, ModelList};
use thaw_sampling::SamplerConfig;

pub use error::ApiError;
pub use metrics::Metrics;
use respond::Format;
use scheduler::{Job, Scheduler, SchedulerOptions};
pub use scheduler::{format_bytes, parse_bytes};

/// `system_fingerprint` of every response.
pub const FINGERPRINT: &str = concat!("thaw-", env!("CARGO_PKG_VERSION"));

/// Response header with the prompt's token count, sent with the status line of every
/// generation (streamed or not), so a gateway can bill the prompt of a stream that
/// ends before its usage chunk.
pub const PROMPT_TOKENS_HEADER: &str = "x-thaw-prompt-tokens";

/// The hand-written OpenAPI 3 description served at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// Everything `thaw serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The GGUF file.
    pub model_path: PathBuf,
    /// The name clients use in `model` (e.g. `smollm2`).
    pub model_id: String,
    pub host: String,
    pub port: u16,
    /// Kernel threads (0 = all cores).
    pub threads: usize,
    /// Context per sequence in tokens (0 = the model's, at most 4096).
    pub ctx_size: usize,
    /// Sequences decoded concurrently (each holds a KV cache of `ctx_size`).
    pub max_running: usize,
    /// Requests that may wait for a slot; more get 429.
    pub max_queue: usize,
    /// KV-cache bytes all running sequences may hold together (`None`: only
    /// `max_running` bounds it). Requests beyond it wait in the queue.
    pub kv_memory: Option<u64>,
    /// Prompt tokens prefilled per scheduler step, so long prompts do not stall decodes.
    pub prefill_chunk: usize,
    /// Largest accepted request body in bytes (larger: 413).
    pub body_limit: usize,
    /// On shutdown, how long running requests may continue before they are cancelled.
    pub shutdown_grace: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            model_path: PathBuf::new(),
            model_id: "model".into(),
            host: "127.0.0.1".into(),
            port: 8080,
            threads: 0,
            ctx_size: 0,
            max_running: 4,
            max_queue: 64,
            kv_memory: None,
            prefill_chunk: 256,
            body_limit: 4 << 20,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("scheduler: {0}")]
    Scheduler(String),
}

/// Shared state of the app: the engine, the scheduler handle and the metrics.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    engine: Arc<Engine>,
    model_id: String,
    created: u64,
    body_limit: usize,
    scheduler: Scheduler,
    metrics: Arc<Metrics>,
}

/// What to generate, after validation.
#[derive(Clone)]
pub(crate) struct GenSpec {
    pub prompt: Vec<u32>,
    pub sampler: SamplerConfig,
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
    pub logprobs: Option<usize>,
    pub stream: bool,
    pub include_usage: bool,
    pub ignore_eos: bool,
    pub constraint: Option<thaw_constrain::Constraint>,
    /// A thinking model's chat: whether the prompt opened the `<think>` block (its
    /// reasoning tokens are reported in `usage`).
    pub reasoning: Option<bool>,
}

impl GenSpec {
    /// The `n` choices of this request: the same, except that with a seed choice `i`
    /// samples with `seed + i` (so it equals a single request with that seed).
    pub(crate) fn choices(self, n: usize) -> impl Iterator<Item = GenSpec> {
        (0..n).map(move |i| GenSpec {
            sampler: params::for_choice(&self.sampler, i),
            ..self.clone()
        })
    }
}

impl AppState {
    /// Start the scheduler thread for `engine` with `config`'s limits.
    pub fn new(engine: Arc<Engine>, config: &ServeConfig) -> Result<Self, ServerError> {
        let metrics = Arc::new(Metrics::default());
        let scheduler = Scheduler::start(
            engine.clone(),
            SchedulerOptions {
                n_ctx: config.ctx_size,
                max_running: config.max_running.max(1),
                kv_memory: config.kv_memory,
                max_queue: config.max_queue,
                prefill_chunk: config.prefill_chunk.max(1),
            },
            metrics.clone(),
        )?;
        Ok(AppState(Arc::new(Inner {
            engine,
            model_id: config.model_id.clone(),
            created: unix_now(),
            body_limit: config.body_limit,
            scheduler,
            metrics,
        })))
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.0.metrics
    }

    /// Context size of each sequence, in tokens.
    pub fn n_ctx(&self) -> usize {
        self.0.scheduler.n_ctx()
    }

    /// Sequences run at once (`max_running`, lowered to what `kv_memory` holds).
    pub fn max_running(&self) -> usize {
        self.0.scheduler.max_running()
    }

    /// Stop taking work; running requests get `grace` before they are cancelled.
    pub fn shutdown(&self, grace: Duration) {
        self.0.scheduler.shutdown(grace);
    }

    /// Wait for the scheduler thread to end (after [`shutdown`](Self::shutdown)).
    pub fn join(&self) {
        self.0.scheduler.join();
    }

    pub(crate) fn engine(&self) -> Arc<Engine> {
        self.0.engine.clone()
    }
    pub(crate) fn engine_ref(&self) -> &Engine {
        &self.0.engine
    }
    pub(crate) fn model_id(&self) -> &str {
        &self.0.model_id
    }
    pub(crate) fn n_vocab(&self) -> usize {
        self.0.engine.tokenizer().vocab_size()
    }

    pub(crate) fn check_model(&self, model: &str) -> Result<(), ApiError> {
        if model == self.0.model_id {
            Ok(())
        } else {
            Err(ApiError::model_not_found(model))
        }
    }

    /// Check the prompt against the context, queue the job and answer.
    /// One job per spec, answered as one response with a choice per job (`n` > 1 or
    /// several prompts: specs in groups of `n` per prompt, `fmts` alike).
    pub(crate) async fn generate_many<F: Format>(
        &self,
        specs: Vec<GenSpec>,
        fmts: Vec<F>,
        n: usize,
    ) -> Result<Response, ApiError> {
        let n_ctx = self.n_ctx();
        for spec in &specs {
            if spec.prompt.is_empty() {
                return Err(ApiError::invalid("prompt", "The prompt is empty."));
            }
            if spec.prompt.len() >= n_ctx {
                return Err(ApiError::invalid(
                    "messages",
                    format!(
                        "This model's maximum context length is {n_ctx} tokens. However, your prompt is {} tokens (and at least one token must be generated). Please reduce the length of the prompt.",
                        spec.prompt.len()
                    ),
                )
                .with_code("context_length_exceeded"));
            }
        }
        let prompt_tokens: usize = specs.iter().step_by(n.max(1)).map(|s| s.prompt.len()).sum();
        let (stream, include_usage) = specs
            .first()
            .map_or((false, false), |s| (s.stream, s.include_usage));
        let mut rxs = Vec::with_capacity(specs.len());
        let mut jobs = Vec::with_capacity(specs.len());
        for spec in specs {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let mut job = Job::new(
                spec.prompt,
                spec.sampler,
                spec.max_tokens,
                spec.stop,
                spec.logprobs,
                tx,
            );
            job.ignore_eos = spec.ignore_eos;
            job.constraint = spec.constraint.map(Box::new);
            job.reasoning = spec.reasoning;
            jobs.push(job);
            rxs.push(rx);
        }
        self.0.scheduler.submit_many(jobs)?;
        let mut resp = match (stream, rxs.len()) {
            (true, 1) => respond::stream(rxs.remove(0), one(fmts), include_usage),
            (false, 1) => respond::collect(rxs.remove(0), one(fmts)).await?,
            (true, _) => respond::stream_many(rxs, fmts, include_usage, n),
            (false, _) => respond::collect_many(rxs, fmts, n).await?,
        };
        resp.headers_mut()
            .insert(PROMPT_TOKENS_HEADER, HeaderValue::from(prompt_tokens));
        Ok(resp)
    }
}

/// The only element of `v` (one job, one format).
fn one<F>(mut v: Vec<F>) -> F {
    v.swap_remove(0)
}

/// A fresh id suffix: time and a counter, hex.
pub(crate) fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!(
        "{nanos:x}{:06x}",
        COUNTER.fetch_add(1, Ordering::Relaxed) & 0xff_ffff
    )
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The router with every endpoint, the body limit and request metrics.
pub fn app(state: AppState) -> Router {
    let limit = state.0.body_limit;
    Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/models", get(models))
        .route("/v1/models/{model}", get(model))
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Route label for metrics; anything unknown is one label so clients cannot blow up
/// the number of series.
fn route_label(path: &str) -> &'static str {
    match path {
        "/v1/chat/completions" => "/v1/chat/completions",
        "/v1/completions" => "/v1/completions",
        "/v1/models" => "/v1/models",
        "/health" => "/health",
        "/metrics" => "/metrics",
        "/openapi.json" => "/openapi.json",
        p if p.starts_with("/v1/models/") => "/v1/models/{model}",
        _ => "other",
    }
}

async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = route_label(req.uri().path());
    let resp = next.run(req).await;
    state
        .0
        .metrics
        .record_request(route, resp.status().as_u16());
    resp
}

fn model_object(state: &AppState) -> Model {
    Model {
        id: state.0.model_id.clone(),
        object: "model".into(),
        created: state.0.created,
        owned_by: "thaw".into(),
    }
}

async fn models(State(state): State<AppState>) -> Json<ModelList> {
    Json(ModelList {
        object: "list".into(),
        data: vec![model_object(&state)],
    })
}

async fn model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Model>, ApiError> {
    state.check_model(&id)?;
    Ok(Json(model_object(&state)))
}

async fn health(State(state): State<AppState>) -> Response {
    let m = &state.0.metrics;
    Json(serde_json::json!({
        "status": "ok",
        "model": state.0.model_id,
        "running": m.running.load(Ordering::Relaxed),
        "queued": m.queue_depth.load(Ordering::Relaxed),
    }))
    .into_response()
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    let mut r = state.0.metrics.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

async fn openapi() -> Response {
    let mut r = OPENAPI_JSON.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found_route(method.as_str(), uri.path())
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found_route(method.as_str(), uri.path())
        .with_status(StatusCode::METHOD_NOT_ALLOWED)
}

/// Load the model, bind `host:port` and serve until SIGTERM or Ctrl-C; then stop
/// accepting, give running requests `shutdown_grace`, and return.
pub async fn serve(config: ServeConfig) -> Result<(), ServerError> {
    let path = config.model_path.clone();
    let threads = config.threads;
    let engine = tokio::task::spawn_blocking(move || Engine::load(&path, &LoadOptions { threads }))
        .await
        .map_err(|e| ServerError::Scheduler(format!("model loading panicked: {e}")))??;
    let state = AppState::new(Arc::new(engine), &config)?;
    let listener = tokio::net::TcpListener::bind((config.host.as_str(), config.port)).await?;
    let addr: SocketAddr = listener.local_addr()?;
    eprintln!(
        "thaw serve: {} on http://{addr}/v1 (context {} tokens, {} concurrent, KV cache {}, queue {})",
        config.model_id,
        state.n_ctx(),
        state.max_running(),
        match config.kv_memory {
            Some(l) => format!("≤ {}", scheduler::format_bytes(l)),
            None => "unlimited".into(),
        },
        config.max_queue
    );
    serve_with(listener, state, shutdown_signal(), config.shutdown_grace).await
}

/// Serve `state` on an already bound listener until `shutdown` resolves.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> Result<(), ServerError> {
    let st = state.clone();
    axum::serve(listener, app(state.clone()))
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Running sequences end within `grace`, so their streams end and the
            // graceful shutdown can complete.
            st.shutdown(grace);
        })
        .await?;
    state.shutdown(Duration::ZERO);
    let s = state.clone();
    let _ = tokio::task::spawn_blocking(move || s.join()).await;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
