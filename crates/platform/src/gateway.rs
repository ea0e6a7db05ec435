//! The gateway: one HTTP endpoint in front of every deployment, plus the management
//! API (`/admin/*`, admin key) and the usage API.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{self, Caller, Limits};
use crate::config::{self, Config, DeploymentSpec};
use crate::error::{GatewayError, GatewayErrors};
use crate::metrics::Metrics;
use crate::pool::{DeploymentView, Pool};
use crate::proxy;
use crate::replica::Launcher;
use crate::store::{Store, now_ms};

pub struct Gateway {
    pools: RwLock<BTreeMap<String, Arc<Pool>>>,
    pub(crate) store: Arc<Store>,
    pub(crate) limits: Limits,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) http: reqwest::Client,
    launcher: Launcher,
    pub(crate) open: bool,
    grace: Duration,
    created: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayStartError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

impl Gateway {
    pub fn new(config: &Config, launcher: Launcher) -> Result<Arc<Gateway>, GatewayStartError> {
        let store = Arc::new(Store::open(&config.gateway.db)?);
        let metrics = Arc::new(Metrics::default());
        let grace = config.gateway.shutdown_grace;
        let pools = config
            .deployments
            .iter()
            .map(|d| {
                (
                    d.name.clone(),
                    Pool::new(d.clone(), launcher.clone(), metrics.clone(), grace),
                )
            })
            .collect();
        Ok(Arc::new(Gateway {
            pools: RwLock::new(pools),
            store,
            limits: Limits::default(),
            metrics,
            http: reqwest::Client::builder()
                .read_timeout(proxy::READ_TIMEOUT)
                .pool_idle_timeout(Duration::from_secs(30))
                .build()?,
            launcher,
            open: config.gateway.open,
            grace,
            created: now_ms() as u64 / 1000,
        }))
    }

    pub(crate) fn pool(&self, name: &str) -> Option<Arc<Pool>> {
        self.pools
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    fn all(&self) -> Vec<Arc<Pool>> {
        self.pools
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Add new deployments and update existing ones; all or nothing (validated first).
    pub fn apply(&self, specs: Vec<DeploymentSpec>) -> Vec<String> {
        let mut pools = self.pools.write().unwrap_or_else(|p| p.into_inner());
        let mut names = Vec::new();
        for spec in specs {
            names.push(spec.name.clone());
            match pools.get(&spec.name) {
                Some(p) => p.update(spec),
                None => {
                    let p = Pool::new(
                        spec.clone(),
                        self.launcher.clone(),
                        self.metrics.clone(),
                        self.grace,
                    );
                    pools.insert(spec.name, p);
                }
            }
        }
        names
    }

    /// Housekeeping loop: every pool's tick, forever.
    pub(crate) async fn reaper(self: Arc<Self>) {
        loop {
            for p in self.all() {
                if !p.tick().await {
                    let name = p.spec().name.clone();
                    let mut pools = self.pools.write().unwrap_or_else(|e| e.into_inner());
                    // Only drop it if it is still the deleted pool (not re-created).
                    if pools.get(&name).is_some_and(|q| Arc::ptr_eq(q, &p)) {
                        pools.remove(&name);
                        self.metrics.forget(&name);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Drain and stop every replica.
    pub async fn stop_all(&self, grace: Duration) {
        let stops = self
            .all()
            .into_iter()
            .map(|p| async move { p.stop_all(grace).await });
        futures_util::future::join_all(stops).await;
    }
}

/// The router. Requests are authenticated per route: `/v1/*` by any live key,
/// `/admin/*` by an admin key; `/health` and `/metrics` are open.
pub fn app(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(proxy::forward))
        .route("/v1/completions", post(proxy::forward))
        .route("/v1/models", get(models))
        .route("/v1/models/{*model}", get(model))
        .route("/v1/usage", get(usage))
        .route(
            "/admin/deployments",
            get(list_deployments).post(put_deployments),
        )
        .route(
            "/admin/deployments/{name}",
            get(get_deployment).delete(delete_deployment),
        )
        .route("/admin/deployments/{name}/scale", post(scale))
        .route("/admin/replicas", get(replicas))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(gw)
}

/// Largest request body (larger: 413 with an OpenAI error body).
pub(crate) const BODY_LIMIT: usize = 4 << 20;

/// A request body whose every failure (too large, unreadable) is an OpenAI error
/// body, as `thaw serve` answers, rather than axum's plain-text rejection.
pub(crate) struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = GatewayError;

    async fn from_request(req: Request, state: &S) -> Result<Self, GatewayError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            let status = rej.status();
            let msg = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!(
                    "The request body is too large (the limit is {} MiB).",
                    BODY_LIMIT >> 20
                )
            } else {
                format!("Could not read the request body: {}", rej.body_text())
            };
            GatewayError::invalid("", msg).with_status(status)
        })?;
        Ok(Body(bytes))
    }
}

async fn not_found(method: Method, uri: Uri) -> GatewayError {
    GatewayError::not_found_route(method.as_str(), uri.path())
}

async fn method_not_allowed(method: Method, uri: Uri) -> GatewayError {
    GatewayError::not_found_route(method.as_str(), uri.path())
        .with_status(StatusCode::METHOD_NOT_ALLOWED)
}

fn caller(gw: &Gateway, h: &HeaderMap) -> Result<Caller, GatewayError> {
    auth::authenticate(h, &gw.store, gw.open)
}

fn admin(gw: &Gateway, h: &HeaderMap) -> Result<Caller, GatewayError> {
    let c = caller(gw, h)?;
    if !c.admin {
        return Err(GatewayError::forbidden(
            "This endpoint needs an admin key (`thaw keys create --admin`).",
        ));
    }
    Ok(c)
}

fn model_json(gw: &Gateway, name: &str) -> serde_json::Value {
    json!({"id": name, "object": "model", "created": gw.created, "owned_by": "thaw"})
}

async fn models(State(gw): State<Arc<Gateway>>, h: HeaderMap) -> Result<Response, GatewayError> {
    caller(&gw, &h)?;
    let data: Vec<_> = gw
        .all()
        .iter()
        .map(|p| model_json(&gw, &p.spec().name))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

async fn model(
    State(gw): State<Arc<Gateway>>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, GatewayError> {
    caller(&gw, &h)?;
    gw.pool(&name)
        .ok_or_else(|| GatewayError::model_not_found(&name))?;
    Ok(Json(model_json(&gw, &name)).into_response())
}

#[derive(Deserialize)]
struct UsageQuery {
    since: Option<String>,
    key: Option<String>,
    #[serde(default)]
    rows: bool,
    limit: Option<usize>,
}

/// `GET /v1/usage?since=1d[&key=alice][&rows=true]`: totals per key and deployment
/// (and the rows). A key sees only its own usage; an admin key sees all.
async fn usage(
    State(gw): State<Arc<Gateway>>,
    h: HeaderMap,
    Query(q): Query<UsageQuery>,
) -> Result<Response, GatewayError> {
    let c = caller(&gw, &h)?;
    let since = match &q.since {
        None => 0,
        Some(s) => {
            let d = config::dur::parse(s).ok_or_else(|| {
                GatewayError::invalid("since", format!("`{s}` is not a duration like 1h or 7d."))
            })?;
            now_ms() - d.as_millis() as i64
        }
    };
    let key = if c.admin {
        q.key.clone()
    } else {
        if q.key.as_ref().is_some_and(|k| *k != c.name) {
            return Err(GatewayError::forbidden(
                "A key can only read its own usage.",
            ));
        }
        Some(c.name.clone())
    };
    let store = gw.store.clone();
    let limit = q.limit.unwrap_or(10_000);
    let rows = q.rows;
    let (summary, rows) = tokio::task::spawn_blocking(move || {
        let s = store.summary(since, key.as_deref())?;
        let r = if rows {
            Some(store.rows(since, key.as_deref(), limit)?)
        } else {
            None
        };
        Ok::<_, crate::store::StoreError>((s, r))
    })
    .await
    .map_err(|e| GatewayError::internal(e.to_string()))??;
    let mut body = json!({"object": "list", "data": summary});
    if let Some(r) = rows {
        body["rows"] = serde_json::to_value(r).unwrap_or_default();
    }
    Ok(Json(body).into_response())
}

async fn list_deployments(
    State(gw): State<Arc<Gateway>>,
    h: HeaderMap,
) -> Result<Json<Vec<DeploymentView>>, GatewayError> {
    admin(&gw, &h)?;
    Ok(Json(gw.all().iter().map(|p| p.view()).collect()))
}

async fn get_deployment(
    State(gw): State<Arc<Gateway>>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<DeploymentView>, GatewayError> {
    admin(&gw, &h)?;
    let p = gw
        .pool(&name)
        .ok_or_else(|| GatewayError::not_found(format!("No deployment `{name}`.")))?;
    Ok(Json(p.view()))
}

/// `POST /admin/deployments`: a TOML document with `[[deployment]]` tables, or JSON
/// (one deployment object or a list). Creates or updates; nothing changes unless
/// every deployment in the body is valid.
async fn put_deployments(
    State(gw): State<Arc<Gateway>>,
    h: HeaderMap,
    Body(body): Body,
) -> Result<Response, GatewayError> {
    admin(&gw, &h)?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| GatewayError::bad_request("The body is not UTF-8.".into()))?;
    let is_json = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let specs = if is_json {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| GatewayError::bad_request(format!("invalid JSON: {e}")))?;
        let list = match v {
            serde_json::Value::Array(a) => a,
            o => vec![o],
        };
        let mut specs = Vec::new();
        for (i, d) in list.into_iter().enumerate() {
            let s: DeploymentSpec = serde_path_to_error::deserialize(d).map_err(|e| {
                let mut err = GatewayError::invalid(
                    format!("deployment[{i}].{}", e.path()),
                    e.inner().to_string(),
                );
                err.message = format!("deployment[{i}].{}: {}", e.path(), e.inner());
                err
            })?;
            s.validate().map_err(|(f, m)| {
                let mut e = GatewayError::invalid(format!("deployment[{i}].{f}"), m.clone());
                e.message = format!("deployment[{i}].{f}: {m}");
                e
            })?;
            specs.push(s);
        }
        specs
    } else {
        config::parse(text, "<request>")
            .map_err(|e| {
                let mut err =
                    GatewayError::invalid(e.field.clone().unwrap_or_default(), e.to_string());
                err.message = e.to_string();
                err
            })?
            .deployments
    };
    if specs.is_empty() {
        return Err(GatewayError::bad_request(
            "No deployment in the body (expected [[deployment]] tables).".into(),
        ));
    }
    let names = gw.apply(specs);
    let views: Vec<_> = names
        .iter()
        .filter_map(|n| gw.pool(n).map(|p| p.view()))
        .collect();
    Ok(Json(views).into_response())
}

async fn delete_deployment(
    State(gw): State<Arc<Gateway>>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, GatewayError> {
    admin(&gw, &h)?;
    let p = gw
        .pool(&name)
        .ok_or_else(|| GatewayError::not_found(format!("No deployment `{name}`.")))?;
    p.delete();
    Ok(Json(json!({"deleted": name})).into_response())
}

#[derive(Deserialize)]
struct ScaleBody {
    replicas: usize,
}

async fn scale(
    State(gw): State<Arc<Gateway>>,
    h: HeaderMap,
    Path(name): Path<String>,
    Body(body): Body,
) -> Result<Response, GatewayError> {
    admin(&gw, &h)?;
    let b: ScaleBody = serde_json::from_slice(&body).map_err(|e| {
        GatewayError::invalid("replicas", format!("expected {{\"replicas\": N}}: {e}"))
    })?;
    let p = gw
        .pool(&name)
        .ok_or_else(|| GatewayError::not_found(format!("No deployment `{name}`.")))?;
    p.scale(b.replicas)
        .map_err(|e| GatewayError::invalid("replicas", e.to_string()))?;
    Ok(Json(p.view()).into_response())
}

async fn replicas(State(gw): State<Arc<Gateway>>, h: HeaderMap) -> Result<Response, GatewayError> {
    admin(&gw, &h)?;
    let all: Vec<_> = gw.all().iter().flat_map(|p| p.view().replicas).collect();
    Ok(Json(all).into_response())
}

async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    let mut r = gw.metrics.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// Run the gateway until `shutdown` resolves; then stop accepting, let running
/// requests finish for the configured grace, and stop every worker.
pub async fn run(
    config: Config,
    launcher: Launcher,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayStartError> {
    let addr = format!("{}:{}", config.gateway.host, config.gateway.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| GatewayStartError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let gw = Gateway::new(&config, launcher)?;
    let local = listener.local_addr()?;
    eprintln!(
        "thaw gateway: {} deployment(s) on http://{local}/v1 ({}; ledger {})",
        config.deployments.len(),
        if config.gateway.open {
            "open: no API keys"
        } else {
            "API keys required"
        },
        config.gateway.db.display()
    );
    let reaper = tokio::spawn(gw.clone().reaper());
    let stop = Arc::new(tokio::sync::Notify::new());
    let stop2 = stop.clone();
    let server = axum::serve(listener, app(gw.clone())).with_graceful_shutdown(async move {
        shutdown.await;
        stop2.notify_one();
    });
    let grace = config.gateway.shutdown_grace;
    tokio::select! {
        r = server => r?,
        _ = async { stop.notified().await; tokio::time::sleep(grace).await } => {}
    }
    reaper.abort();
    gw.stop_all(Duration::from_millis(100)).await;
    Ok(())
}
