//! `POST /v1/chat/completions`.

use axum::extract::State;
use axum::response::Response;
use serde_json::{Value, json};
use thaw_openai::{
    ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest,
    ChatDelta, ChatLogprobs, ChatTokenLogprob, ResponseMessage, TopLogprob, Usage,
};

use crate::error::ApiError;
use crate::extract::OpenAiJson;
use crate::params::{self, Sampling};
use crate::respond::{Format, lp_value};
use crate::scheduler::{Finish, TokenLogprob};
use crate::{AppState, GenSpec};

const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

pub async fn chat_completions(
    State(state): State<AppState>,
    OpenAiJson(req): OpenAiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    state.check_model(&req.model)?;
    params::check_n(req.n)?;
    let stream = req.stream.unwrap_or(false);
    params::check_stream_options(stream, req.stream_options.is_some())?;
    if req.messages.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must not be empty.",
        ));
    }
    if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::invalid(
            "tools",
            "Tool calling is not supported by this server.",
        ));
    }
    if let Some(f) = &req.response_format
        && f.kind != "text"
    {
        return Err(ApiError::invalid(
            "response_format",
            format!(
                "`response_format` type `{}` is not supported (only `text`).",
                f.kind
            ),
        ));
    }
    let logprobs = match (req.logprobs.unwrap_or(false), req.top_logprobs) {
        (false, Some(_)) => {
            return Err(ApiError::invalid(
                "top_logprobs",
                "`top_logprobs` requires `logprobs` to be true.",
            ));
        }
        (true, Some(k)) if k > 20 => {
            return Err(ApiError::invalid(
                "top_logprobs",
                "`top_logprobs` must be at most 20.",
            ));
        }
        (true, k) => Some(k.unwrap_or(0) as usize),
        (false, None) => None,
    };
    let mut messages = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.iter().enumerate() {
        if !ROLES.contains(&m.role.as_str()) {
            return Err(ApiError::invalid(
                format!("messages[{i}].role"),
                format!(
                    "Unknown role `{}`; expected one of {}.",
                    m.role,
                    ROLES.join(", ")
                ),
            ));
        }
        // Templates know `system`; `developer` is OpenAI's newer name for it.
        let role = if m.role == "developer" {
            "system"
        } else {
            m.role.as_str()
        };
        messages.push(json!({"role": role, "content": m.content.0}));
    }
    let sampler = params::sampler_config(
        &Sampling {
            temperature: req.temperature,
            top_p: req.top_p,
            top_k: req.top_k,
            min_p: req.min_p,
            repeat_penalty: req.repeat_penalty,
            frequency_penalty: req.frequency_penalty,
            presence_penalty: req.presence_penalty,
            seed: req.seed,
            logit_bias: req.logit_bias.as_ref(),
        },
        state.n_vocab(),
    )?;
    let max_tokens = match req.max_completion_tokens {
        Some(_) => params::max_tokens("max_completion_tokens", req.max_completion_tokens)?,
        None => params::max_tokens("max_tokens", req.max_tokens)?,
    };
    let stop = params::stop_strings(req.stop.as_ref())?;
    let engine = state.engine();
    let prompt = tokio::task::spawn_blocking(move || engine.chat_tokens(&messages, true))
        .await
        .map_err(|_| ApiError::internal("tokenization failed"))?
        .map_err(|e| {
            ApiError::invalid(
                "messages",
                format!("Could not apply the chat template: {e}"),
            )
        })?;
    let fmt = ChatFormat {
        id: format!("chatcmpl-{}", crate::new_id()),
        created: crate::unix_now(),
        model: state.model_id().to_string(),
        state: state.clone(),
        want_logprobs: logprobs.is_some(),
    };
    let include_usage = req
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    state
        .generate(
            GenSpec {
                prompt,
                sampler,
                max_tokens,
                stop,
                logprobs,
                stream,
                include_usage,
                ignore_eos: req.ignore_eos.unwrap_or(false),
            },
            fmt,
        )
        .await
}

struct ChatFormat {
    id: String,
    created: u64,
    model: String,
    state: AppState,
    want_logprobs: bool,
}

impl ChatFormat {
    fn logprobs(&self, lps: &[TokenLogprob]) -> ChatLogprobs {
        let tok = self.state.engine_ref().tokenizer();
        let entry = |id: u32| {
            let bytes = tok.token_bytes(id);
            (String::from_utf8_lossy(&bytes).into_owned(), bytes)
        };
        ChatLogprobs {
            content: lps
                .iter()
                .map(|lp| {
                    let (token, bytes) = entry(lp.token);
                    ChatTokenLogprob {
                        token,
                        logprob: lp_value(lp.logprob),
                        bytes: Some(bytes),
                        top_logprobs: lp
                            .top
                            .iter()
                            .map(|&(id, l)| {
                                let (token, bytes) = entry(id);
                                TopLogprob {
                                    token,
                                    logprob: lp_value(l),
                                    bytes: Some(bytes),
                                }
                            })
                            .collect(),
                    }
                })
                .collect(),
        }
    }

    fn chunk(&self, choices: Vec<ChatChunkChoice>, usage: Option<Usage>) -> Value {
        serde_json::to_value(ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: Some(crate::FINGERPRINT.into()),
            choices,
            usage,
        })
        .unwrap_or(Value::Null)
    }
}

impl Format for ChatFormat {
    fn first_chunk(&mut self) -> Option<Value> {
        Some(self.chunk(
            vec![ChatChunkChoice {
                index: 0,
                delta: ChatDelta {
                    role: Some("assistant".into()),
                    content: Some(String::new()),
                },
                logprobs: None,
                finish_reason: None,
            }],
            None,
        ))
    }

    fn text_chunk(&mut self, text: &str, lps: &[TokenLogprob]) -> Value {
        let logprobs = (!lps.is_empty()).then(|| self.logprobs(lps));
        self.chunk(
            vec![ChatChunkChoice {
                index: 0,
                delta: ChatDelta {
                    role: None,
                    content: Some(text.to_string()),
                },
                logprobs,
                finish_reason: None,
            }],
            None,
        )
    }

    fn final_chunk(&mut self, finish: Finish) -> Value {
        self.chunk(
            vec![ChatChunkChoice {
                index: 0,
                delta: ChatDelta::default(),
                logprobs: None,
                finish_reason: Some(finish.as_str().into()),
            }],
            None,
        )
    }

    fn usage_chunk(&mut self, usage: Usage) -> Value {
        self.chunk(Vec::new(), Some(usage))
    }

    fn whole(&mut self, text: &str, lps: &[TokenLogprob], finish: Finish, usage: Usage) -> Value {
        serde_json::to_value(ChatCompletion {
            id: self.id.clone(),
            object: "chat.completion".into(),
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: Some(crate::FINGERPRINT.into()),
            choices: vec![ChatChoice {
                index: 0,
                message: ResponseMessage {
                    role: "assistant".into(),
                    content: Some(text.to_string()),
                    refusal: None,
                },
                logprobs: self.want_logprobs.then(|| self.logprobs(lps)),
                finish_reason: Some(finish.as_str().into()),
            }],
            usage,
        })
        .unwrap_or(Value::Null)
    }
}
