//! Shared helpers: one loaded engine, fresh app states, request helpers.

#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use thaw_engine::{Engine, LoadOptions};
use thaw_server::{AppState, ServeConfig, app};
use tower::ServiceExt;

pub const MODEL: &str = "smollm2";

pub fn engine() -> Arc<Engine> {
    static E: OnceLock<Arc<Engine>> = OnceLock::new();
    E.get_or_init(|| {
        let path = thaw_hub::ensure_model(MODEL).expect("smollm2 model available");
        Arc::new(Engine::load(path, &LoadOptions { threads: 2 }).expect("load smollm2"))
    })
    .clone()
}

pub fn config() -> ServeConfig {
    ServeConfig {
        model_id: MODEL.into(),
        ctx_size: 512,
        max_running: 2,
        max_queue: 8,
        ..ServeConfig::default()
    }
}

pub fn state_with(cfg: ServeConfig) -> AppState {
    AppState::new(engine(), &cfg).expect("app state")
}

pub fn new_app() -> (Router, AppState) {
    let s = state_with(config());
    (app(s.clone()), s)
}

pub async fn send(app: &Router, req: Request<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

pub async fn post_raw(
    app: &Router,
    path: &str,
    ct: &str,
    body: impl Into<Body>,
) -> (StatusCode, HeaderMap, Value) {
    let req = Request::post(path)
        .header("content-type", ct)
        .body(body.into())
        .unwrap();
    let (s, h, b) = send(app, req).await;
    let v = serde_json::from_slice(&b).unwrap_or(Value::Null);
    (s, h, v)
}

pub async fn post(app: &Router, path: &str, body: Value) -> (StatusCode, Value) {
    let (s, _, v) = post_raw(app, path, "application/json", body.to_string()).await;
    (s, v)
}

pub async fn get(app: &Router, path: &str) -> (StatusCode, Vec<u8>) {
    let (s, _, b) = send(app, Request::get(path).body(Body::empty()).unwrap()).await;
    (s, b)
}

/// Read SSE `data:` payloads from a streaming body until it ends.
pub async fn sse_events(app: &Router, path: &str, body: Value) -> (StatusCode, Vec<String>) {
    let (s, _, b) = post_raw_bytes(app, path, body).await;
    (s, parse_sse(&String::from_utf8_lossy(&b)))
}

async fn post_raw_bytes(app: &Router, path: &str, body: Value) -> (StatusCode, HeaderMap, Vec<u8>) {
    let req = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    send(app, req).await
}

pub fn parse_sse(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|ev| ev.strip_prefix("data: ").map(str::to_string))
        .collect()
}

/// The running-sequences gauge from `/metrics`.
pub async fn gauge(app: &Router, name: &str) -> f64 {
    let (_, b) = get(app, "/metrics").await;
    let text = String::from_utf8_lossy(&b);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}
