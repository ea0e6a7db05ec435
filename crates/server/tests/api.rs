//! End-to-end tests of the HTTP API against the real SmolLM2 model, driving the router
//! without a socket (plus one real-socket test of `serve_with`).

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

fn chat_body(content: &str, extra: Value) -> Value {
    let mut b = json!({"model": MODEL, "messages": [{"role": "user", "content": content}]});
    if let (Some(o), Some(e)) = (b.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_usage_and_prefix_cache() {
    let (app, _) = new_app();
    let body = chat_body(
        "What is the capital of France?",
        json!({"temperature": 0, "max_tokens": 12}),
    );
    let (s, v) = post(&app, "/v1/chat/completions", body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["model"], MODEL);
    let content = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!content.is_empty());
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    let want_prompt = engine()
        .chat_tokens(
            &[json!({"role": "user", "content": "What is the capital of France?"})],
            true,
        )
        .unwrap()
        .len() as u64;
    let u = &v["usage"];
    assert_eq!(u["prompt_tokens"].as_u64(), Some(want_prompt));
    let completion = u["completion_tokens"].as_u64().unwrap();
    assert!((1..=12).contains(&completion));
    assert_eq!(u["total_tokens"].as_u64(), Some(want_prompt + completion));
    let finish = v["choices"][0]["finish_reason"].as_str().unwrap();
    assert_eq!(finish == "length", completion == 12, "{v}");
    // The same prompt again reuses the cached prefix (all but the last two tokens) and,
    // greedy, gives the same answer.
    let (_, v2) = post(&app, "/v1/chat/completions", body).await;
    assert_eq!(v2["choices"][0]["message"]["content"], content.as_str());
    assert_eq!(
        v2["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64(),
        Some(want_prompt - 2)
    );
    assert_eq!(
        v["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64(),
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_and_stop_string() {
    let (app, _) = new_app();
    let req = |stop: Value| {
        json!({"model": MODEL, "prompt": "The three primary colors are", "temperature": 0,
               "max_tokens": 24, "stop": stop})
    };
    let (s, v) = post(&app, "/v1/completions", req(Value::Null)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    let full = v["choices"][0]["text"].as_str().unwrap().to_string();
    // Cut at a stop string taken from the middle of the unconstrained answer.
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() > 12, "answer too short to test stop: {full:?}");
    let stop: String = chars[8..11].iter().collect();
    let cut = &full[..full.find(&stop).unwrap()];
    let (_, v2) = post(&app, "/v1/completions", req(json!([stop, "@@never@@"]))).await;
    assert_eq!(
        v2["choices"][0]["text"].as_str(),
        Some(cut),
        "stop={stop:?}"
    );
    assert_eq!(v2["choices"][0]["finish_reason"], "stop");
    // echo puts the prompt in front.
    let (_, v3) = post(
        &app,
        "/v1/completions",
        json!({"model": MODEL, "prompt": "Hello", "max_tokens": 3, "echo": true}),
    )
    .await;
    assert!(
        v3["choices"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("Hello")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_are_reproducible() {
    let (app, _) = new_app();
    let run = |seed: u64| {
        let app = app.clone();
        async move {
            let b = chat_body(
                "Tell me a story.",
                json!({"temperature": 1.0, "seed": seed, "max_tokens": 16}),
            );
            let (_, v) = post(&app, "/v1/chat/completions", b).await;
            v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let a = run(42).await;
    assert_eq!(a, run(42).await);
    let mut all = HashSet::new();
    for seed in [1, 2, 3, 4] {
        all.insert(run(seed).await);
    }
    assert!(all.len() > 1, "different seeds all gave {all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_choices_answer_as_separate_requests() {
    // `n` choices are `n` jobs with seeds seed, seed + 1, …: each choice equals the
    // single request with its seed, streamed or not; usage counts the prompt once.
    let (app, _) = new_app();
    let opts = |seed: u64, n: u32, stream: bool| {
        let mut o = json!({"temperature": 1.0, "seed": seed, "max_tokens": 8, "n": n});
        if stream {
            o["stream"] = json!(true);
            o["stream_options"] = json!({"include_usage": true});
        }
        chat_body("Name a colour and say why.", o)
    };
    let (st, many) = post(&app, "/v1/chat/completions", opts(7, 3, false)).await;
    assert_eq!(st, StatusCode::OK, "{many}");
    let choices = many["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    let mut completion = 0;
    let mut texts = Vec::new();
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        let (_, one) = post(&app, "/v1/chat/completions", opts(7 + i as u64, 1, false)).await;
        assert_eq!(c["message"], one["choices"][0]["message"], "choice {i}");
        assert_eq!(c["finish_reason"], one["choices"][0]["finish_reason"]);
        assert_eq!(
            many["usage"]["prompt_tokens"],
            one["usage"]["prompt_tokens"]
        );
        completion += one["usage"]["completion_tokens"].as_u64().unwrap();
        texts.push(c["message"]["content"].as_str().unwrap().to_string());
    }
    assert_eq!(many["usage"]["completion_tokens"], completion);
    assert!(texts.iter().collect::<HashSet<_>>().len() > 1, "{texts:?}");

    // Streamed: every choice gets its role, content and finish chunks; one usage
    // chunk after all of them, then [DONE].
    let (st, events) = sse_events(&app, "/v1/chat/completions", opts(7, 3, true)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    // (Cached prompt tokens depend on what ran before.)
    for k in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(usage["usage"][k], many["usage"][k], "{k}");
    }
    for (i, want) in texts.iter().enumerate() {
        let mine: Vec<&Value> = chunks[..chunks.len() - 1]
            .iter()
            .filter(|c| c["choices"][0]["index"] == i)
            .collect();
        assert_eq!(mine[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = mine
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(&text, want, "streamed choice {i}");
        let finish: Vec<&Value> = mine
            .iter()
            .map(|c| &c["choices"][0]["finish_reason"])
            .filter(|f| !f.is_null())
            .collect();
        assert_eq!(finish, vec![&choices[i]["finish_reason"]]);
    }

    // Several prompts × n: prompt-major indices, each prompt's tokens counted once.
    let b = json!({"model": MODEL, "prompt": ["The sky is", "Water boils at"], "n": 2,
                   "max_tokens": 5, "temperature": 0});
    let (st, v) = post(&app, "/v1/completions", b).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let c = v["choices"].as_array().unwrap();
    assert_eq!(c.len(), 4);
    let mut prompt_tokens = 0;
    for (p, text) in ["The sky is", "Water boils at"].iter().enumerate() {
        let one = json!({"model": MODEL, "prompt": text, "max_tokens": 5, "temperature": 0});
        let (_, one) = post(&app, "/v1/completions", one).await;
        prompt_tokens += one["usage"]["prompt_tokens"].as_u64().unwrap();
        for j in 0..2 {
            assert_eq!(c[2 * p + j]["index"], 2 * p + j);
            assert_eq!(
                c[2 * p + j]["text"],
                one["choices"][0]["text"],
                "prompt {p}"
            );
        }
    }
    assert_eq!(v["usage"]["prompt_tokens"], prompt_tokens);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_choices_than_the_queue_holds_is_a_400() {
    // Never satisfiable: a 400 naming `n`, not a 429 a client would retry forever.
    let app = thaw_server::app(state_with(thaw_server::ServeConfig {
        max_queue: 2,
        ..config()
    }));
    let (s, v) = post(
        &app,
        "/v1/chat/completions",
        chat_body("x", json!({"n": 3})),
    )
    .await;
    assert_eq!(
        (s, &v["error"]["param"]),
        (StatusCode::BAD_REQUEST, &json!("n")),
        "{v}"
    );
    let (s, v) = post(
        &app,
        "/v1/chat/completions",
        chat_body("x", json!({"n": 2, "max_tokens": 2})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn choices_compute_their_shared_prompt_once() {
    // Four choices of a long prompt: the first computes it, the others copy its K/V
    // (all but the last two prompt tokens, recomputed for identical arithmetic).
    let s = state_with(thaw_server::ServeConfig {
        max_running: 4,
        ..config()
    });
    let app = thaw_server::app(s);
    let long =
        "Summarise the following notes about the harbour, the boats and the weather. ".repeat(8);
    let b = chat_body(&long, json!({"max_tokens": 2, "temperature": 0, "n": 4}));
    let tokens0 = gauge(&app, "thaw_batch_tokens_total").await;
    let (st, v) = post(&app, "/v1/chat/completions", b).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let prompt = v["usage"]["prompt_tokens"].as_f64().unwrap();
    assert!(prompt > 100.0, "{v}");
    let computed = gauge(&app, "thaw_batch_tokens_total").await - tokens0;
    // One prompt, three two-token tails, four choices' decode steps.
    assert!(
        computed <= prompt + 3.0 * 2.0 + 4.0 * 2.0,
        "{computed} tokens computed for 4 choices of a {prompt}-token prompt"
    );
    let texts: HashSet<&str> = v["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(texts.len(), 1, "greedy choices differ: {texts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_format_matches_openai() {
    let (app, _) = new_app();
    let opts = json!({"temperature": 0, "max_tokens": 10});
    let (_, whole) = post(
        &app,
        "/v1/chat/completions",
        chat_body("Say hi.", opts.clone()),
    )
    .await;
    let mut b = chat_body("Say hi.", opts);
    b["stream"] = json!(true);
    b["stream_options"] = json!({"include_usage": true});
    let (s, events) = sse_events(&app, "/v1/chat/completions", b).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(chunks.len() >= 3);
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let id = chunks[0]["id"].clone();
    let mut text = String::new();
    for c in &chunks {
        assert_eq!(c["id"], id);
        assert_eq!(c["object"], "chat.completion.chunk");
    }
    let n = chunks.len();
    for c in &chunks[1..n - 2] {
        assert!(c["choices"][0]["finish_reason"].is_null());
        text.push_str(c["choices"][0]["delta"]["content"].as_str().unwrap());
    }
    let fin = &chunks[n - 2];
    assert_eq!(fin["choices"][0]["delta"], json!({}));
    assert_eq!(
        fin["choices"][0]["finish_reason"],
        whole["choices"][0]["finish_reason"]
    );
    let usage = &chunks[n - 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"]["completion_tokens"],
        whole["usage"]["completion_tokens"]
    );
    assert_eq!(
        text,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );

    // Completions stream too, without a role chunk.
    let (_, events) = sse_events(
        &app,
        "/v1/completions",
        json!({"model": MODEL, "prompt": "One, two,", "max_tokens": 5, "stream": true}),
    )
    .await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["object"], "text_completion");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logprobs_are_consistent_with_greedy() {
    let (app, _) = new_app();
    let b = chat_body(
        "Name a fruit.",
        json!({"temperature": 0, "max_tokens": 6, "logprobs": true, "top_logprobs": 3}),
    );
    let (s, v) = post(&app, "/v1/chat/completions", b).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(
        content.len() as u64,
        v["usage"]["completion_tokens"].as_u64().unwrap()
    );
    for e in content {
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        // Greedy picks the most likely token.
        assert_eq!(top[0]["token"], e["token"]);
        let lp = e["logprob"].as_f64().unwrap();
        assert!(lp <= 0.0 && (lp - top[0]["logprob"].as_f64().unwrap()).abs() < 1e-6);
    }
    let (_, v) = post(
        &app,
        "/v1/completions",
        json!({"model": MODEL, "prompt": "Hi", "max_tokens": 4, "logprobs": 2}),
    )
    .await;
    let lp = &v["choices"][0]["logprobs"];
    assert_eq!(
        lp["tokens"].as_array().unwrap().len(),
        lp["token_logprobs"].as_array().unwrap().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_use_the_openai_body() {
    let (app, _) = new_app();
    let err = |v: &Value| {
        (
            v["error"]["type"].clone(),
            v["error"]["param"].clone(),
            v["error"]["code"].clone(),
        )
    };

    let (s, _, v) = post_raw(
        &app,
        "/v1/chat/completions",
        "application/json",
        "{\"model\": ",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(err(&v).0, "invalid_request_error");

    let (s, v) = post(
        &app,
        "/v1/chat/completions",
        chat_body("x", json!({"temperature": "hot"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(err(&v).1, "temperature");

    let (s, v) = post(
        &app,
        "/v1/chat/completions",
        chat_body("x", json!({"max_tokens": -3})),
    )
    .await;
    assert_eq!(
        (s, err(&v).1),
        (StatusCode::BAD_REQUEST, json!("max_tokens"))
    );

    let (s, v) = post(
        &app,
        "/v1/chat/completions",
        json!({"model": MODEL, "messages": [{"role": "user", "content": 5}]}),
    )
    .await;
    assert_eq!(
        (s, err(&v).1),
        (StatusCode::BAD_REQUEST, json!("messages[0].content"))
    );

    let (s, v) = post(
        &app,
        "/v1/chat/completions",
        json!({"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(err(&v).2, "model_not_found");

    let long = "word ".repeat(700);
    let (s, v) = post(&app, "/v1/chat/completions", chat_body(&long, json!({}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(err(&v).2, "context_length_exceeded");

    let (s, v) = post(
        &app,
        "/v1/chat/completions",
        chat_body("x", json!({"n": 0})),
    )
    .await;
    assert_eq!((s, err(&v).1), (StatusCode::BAD_REQUEST, json!("n")));
    let (s, v) = post(
        &app,
        "/v1/chat/completions",
        chat_body("x", json!({"n": 17})),
    )
    .await;
    assert_eq!((s, err(&v).1), (StatusCode::BAD_REQUEST, json!("n")));
    let (s, v) = post(
        &app,
        "/v1/completions",
        json!({"model": MODEL, "prompt": vec!["a"; 40], "n": 2}),
    )
    .await;
    assert_eq!((s, err(&v).1), (StatusCode::BAD_REQUEST, json!("prompt")));
    let (s, v) = post(
        &app,
        "/v1/completions",
        json!({"model": MODEL, "prompt": "a", "best_of": 3}),
    )
    .await;
    assert_eq!((s, err(&v).1), (StatusCode::BAD_REQUEST, json!("best_of")));
    // Requests for what would otherwise be silently left out: legacy function
    // calling, audio output.
    for (extra, param) in [
        (
            json!({"functions": [{"name": "f", "parameters": {}}]}),
            "functions",
        ),
        (json!({"function_call": "auto"}), "function_call"),
        (json!({"modalities": ["text", "audio"]}), "modalities"),
        (
            json!({"audio": {"voice": "alloy", "format": "wav"}}),
            "audio",
        ),
    ] {
        let (s, v) = post(&app, "/v1/chat/completions", chat_body("x", extra)).await;
        assert_eq!((s, err(&v).1), (StatusCode::BAD_REQUEST, json!(param)));
    }
    let (s, _) = post(
        &app,
        "/v1/chat/completions",
        chat_body("x", json!({"max_tokens": 1, "modalities": ["text"]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = post(
        &app,
        "/v1/chat/completions",
        chat_body("x", json!({"stop": ["a", "b", "c", "d", "e"]})),
    )
    .await;
    assert_eq!((s, err(&v).1), (StatusCode::BAD_REQUEST, json!("stop")));
    let (s, v) = post(
        &app,
        "/v1/completions",
        json!({"model": MODEL, "prompt": []}),
    )
    .await;
    assert_eq!((s, err(&v).1), (StatusCode::BAD_REQUEST, json!("prompt")));

    let (s, _, v) = post_raw(&app, "/v1/chat/completions", "text/plain", "hi").await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(v["error"]["message"].is_string());

    let big = format!(
        "{{\"model\":\"{MODEL}\",\"prompt\":\"{}\"}}",
        "a".repeat(5 << 20)
    );
    let (s, _, v) = post_raw(&app, "/v1/completions", "application/json", big).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(v["error"]["message"].is_string());

    let (s, b) = get(&app, "/v1/nothing").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(serde_json::from_slice::<Value>(&b).unwrap()["error"].is_object());

    // Unknown fields are ignored.
    let (s, _) = post(
        &app,
        "/v1/chat/completions",
        chat_body("x", json!({"max_tokens": 1, "frobnicate": [1]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_health_metrics_openapi() {
    let (app, _) = new_app();
    let (s, b) = get(&app, "/v1/models").await;
    assert_eq!(s, StatusCode::OK);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["data"][0]["id"], MODEL);
    assert_eq!(get(&app, "/v1/models/smollm2").await.0, StatusCode::OK);
    assert_eq!(get(&app, "/v1/models/nope").await.0, StatusCode::NOT_FOUND);
    assert_eq!(get(&app, "/health").await.0, StatusCode::OK);
    let (_, b) = get(&app, "/openapi.json").await;
    let doc: Value = serde_json::from_slice(&b).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/v1/chat/completions"].is_object());
    let (_, b) = get(&app, "/metrics").await;
    let text = String::from_utf8(b).unwrap();
    assert!(
        text.contains("thaw_http_requests_total{route=\"/v1/models\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(text.contains("thaw_time_to_first_token_seconds_bucket"));
    assert_eq!(gauge(&app, "thaw_running_sequences").await, 0.0);
}

/// Read frames until one holds generated text (the role chunk comes before admission).
async fn wait_for_content(body: &mut Body) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = String::new();
    while Instant::now() < deadline {
        let f = body.frame().await.expect("stream open").expect("frame");
        if let Ok(d) = f.into_data() {
            seen.push_str(&String::from_utf8_lossy(&d));
            if parse_sse(&seen)
                .iter()
                .any(|e| e.contains("\"content\":\"") && !e.contains("\"role\""))
            {
                return;
            }
        }
    }
    panic!("no content within 60 s");
}

async fn open_stream(app: &axum::Router, max_tokens: u32) -> axum::response::Response {
    let b = json!({"model": MODEL, "messages": [{"role": "user", "content": "Count from one to a thousand."}],
                   "max_tokens": max_tokens, "stream": true, "temperature": 0});
    let req = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(b.to_string()))
        .unwrap();
    app.clone().oneshot(req).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_frees_the_slot() {
    let (app, _) = new_app();
    let resp = open_stream(&app, 400).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    wait_for_content(&mut body).await;
    assert_eq!(gauge(&app, "thaw_running_sequences").await, 1.0);
    drop(body);
    let deadline = Instant::now() + Duration::from_secs(5);
    while gauge(&app, "thaw_running_sequences").await != 0.0 {
        assert!(Instant::now() < deadline, "slot not freed after disconnect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_answers_429() {
    let s = state_with(thaw_server::ServeConfig {
        max_running: 1,
        max_queue: 1,
        ..config()
    });
    let app = thaw_server::app(s);
    let a = open_stream(&app, 400).await;
    let mut a_body = a.into_body();
    wait_for_content(&mut a_body).await;
    let b = open_stream(&app, 400).await;
    assert_eq!(b.status(), StatusCode::OK);
    assert_eq!(gauge(&app, "thaw_queue_depth").await, 1.0);
    let c = open_stream(&app, 400).await;
    assert_eq!(c.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(c.headers().contains_key("retry-after"));
    let v: Value =
        serde_json::from_slice(&c.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    drop(a_body);
    drop(b);
    // Both slots come back.
    let deadline = Instant::now() + Duration::from_secs(5);
    while gauge(&app, "thaw_running_sequences").await + gauge(&app, "thaw_queue_depth").await != 0.0
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_socket_and_graceful_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let state = state_with(config());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(thaw_server::serve_with(
        listener,
        state,
        async {
            let _ = rx.await;
        },
        Duration::from_secs(1),
    ));
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    sock.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"status\":\"ok\""));
    tx.send(()).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), server).await;
    assert!(
        matches!(r, Ok(Ok(Ok(())))),
        "server did not shut down cleanly"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_share_batched_steps_and_answer_as_alone() {
    let s = state_with(thaw_server::ServeConfig {
        max_running: 4,
        ..config()
    });
    let app = thaw_server::app(s);
    let prompts = [
        "Name three colours.",
        "Write a haiku about the sea, then explain it in detail.",
        "What is 2 + 2?",
        "Tell me about the history of the bicycle.",
    ];
    let body = |p: &str| {
        chat_body(
            p,
            json!({"max_tokens": 12, "temperature": 0, "ignore_eos": true}),
        )
    };
    // One at a time first: every decode pass carries one sequence.
    let mut alone = Vec::new();
    for p in prompts {
        let (st, v) = post(&app, "/v1/chat/completions", body(p)).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(v["usage"]["completion_tokens"], 12, "ignore_eos: {v}");
        alone.push(v["choices"][0]["message"]["content"].clone());
    }
    let passes0 = gauge(&app, "thaw_batch_passes_total").await;
    let tokens0 = gauge(&app, "thaw_batch_tokens_total").await;
    // Then all together: they share decode passes, and greedy answers are the same
    // (batched logits match single-sequence ones to ~1e-7, see models/tests/batch.rs).
    let together = futures_join(prompts.iter().map(|p| {
        let app = app.clone();
        let b = body(p);
        async move { post(&app, "/v1/chat/completions", b).await }
    }))
    .await;
    for ((st, v), want) in together.iter().zip(&alone) {
        assert_eq!(*st, StatusCode::OK, "{v}");
        assert_eq!(&v["choices"][0]["message"]["content"], want);
        assert_eq!(v["usage"]["completion_tokens"], 12);
    }
    let passes = gauge(&app, "thaw_batch_passes_total").await - passes0;
    let tokens = gauge(&app, "thaw_batch_tokens_total").await - tokens0;
    // 4 × 11 decode tokens (+ prompts) in far fewer passes than one per token.
    assert!(
        passes < 4.0 * 11.0 && tokens / passes > 1.5,
        "{passes} passes for {tokens} tokens: decode steps were not batched"
    );
}

async fn futures_join<F>(fs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_memory_limits_running_sequences() {
    let per_session = engine().model().cache_bytes(512) as u64;
    // Room for one 512-token sequence: --max-running 4 becomes 1, others queue.
    let s = state_with(thaw_server::ServeConfig {
        max_running: 4,
        kv_memory: Some(per_session * 3 / 2),
        ..config()
    });
    assert_eq!(s.max_running(), 1);
    let app = thaw_server::app(s);
    let a = open_stream(&app, 400).await;
    let mut a_body = a.into_body();
    wait_for_content(&mut a_body).await;
    let b = open_stream(&app, 400).await;
    assert_eq!(b.status(), StatusCode::OK);
    assert_eq!(gauge(&app, "thaw_running_sequences").await, 1.0);
    assert_eq!(gauge(&app, "thaw_queue_depth").await, 1.0);
    assert_eq!(
        gauge(&app, "thaw_kv_cache_limit_bytes").await,
        (per_session * 3 / 2) as f64
    );
    assert_eq!(gauge(&app, "thaw_kv_cache_bytes").await, per_session as f64);
    drop(a_body);
    drop(b);
    // Too small for even one sequence: a clear start-up error.
    let err = thaw_server::AppState::new(
        engine(),
        &thaw_server::ServeConfig {
            kv_memory: Some(per_session / 2),
            ..config()
        },
    )
    .err()
    .expect("a KV limit below one sequence is refused");
    assert!(err.to_string().contains("--kv-memory"), "{err}");
}

/// The prompt's token count goes out in a header with the status line, streamed or
/// not, so a gateway can bill the prompt of a stream cut short before its usage chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_tokens_header_on_every_generation() {
    let (app, _) = new_app();
    let opts = json!({"temperature": 0, "max_tokens": 2});
    let (s, h, v) = post_raw(
        &app,
        "/v1/chat/completions",
        "application/json",
        chat_body("Say hi.", opts.clone()).to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let header = |h: &axum::http::HeaderMap| {
        h.get(thaw_server::PROMPT_TOKENS_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let prompt = v["usage"]["prompt_tokens"].as_u64();
    assert!(prompt.is_some_and(|p| p > 0), "{v}");
    assert_eq!(header(&h), prompt);
    let mut b = chat_body("Say hi.", opts);
    b["stream"] = json!(true);
    let (s, h, _) = post_raw(
        &app,
        "/v1/chat/completions",
        "application/json",
        b.to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(header(&h), prompt);
}
