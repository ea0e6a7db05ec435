//! `POST /v1/chat/completions`.

use axum::extract::State;
use axum::response::Response;
use serde_json::Value;
use thaw_openai::{
    ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest,
    ChatDelta, ChatLogprobs, ChatTokenLogprob, TopLogprob, Usage,
};

use crate::chat_stream::ChatStream;
use crate::error::ApiError;
use crate::extract::OpenAiJson;
use crate::params::{self, Sampling};
use crate::respond::{Format, lp_value};
use crate::scheduler::{Finish, TokenLogprob};
use crate::{AppState, GenSpec, tools};

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
    let n = params::choices(req.n)?;
    let stream = req.stream.unwrap_or(false);
    params::check_stream_options(stream, req.stream_options.is_some())?;
    if req.messages.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must not be empty.",
        ));
    }
    if let Some(param) = [
        ("functions", req.functions.is_some()),
        ("function_call", req.function_call.is_some()),
    ]
    .into_iter()
    .find_map(|(p, set)| set.then_some(p))
    {
        return Err(ApiError::invalid(
            param,
            "`functions` and `function_call` are the deprecated form of tool calling; send `tools` and `tool_choice` instead.",
        ));
    }
    let audio = req.modalities.iter().flatten().any(|m| m != "text");
    if audio || req.audio.is_some() {
        let param = if req.audio.is_some() {
            "audio"
        } else {
            "modalities"
        };
        return Err(ApiError::invalid(
            param,
            "Only text output is supported (`modalities: [\"text\"]`).",
        ));
    }
    let plan = tools::plan(&req, state.engine_ref())?;
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
    }
    let split_reasoning = match req.reasoning_format.as_deref() {
        None | Some("auto") | Some("deepseek") => true,
        Some("none") => false,
        Some(other) => {
            return Err(ApiError::invalid(
                "reasoning_format",
                format!("Unknown reasoning_format `{other}`; expected auto, deepseek or none."),
            ));
        }
    };
    let (messages, tools_json) = tools::messages(&req, &plan)?;
    let template_vars = req.chat_template_kwargs.clone();
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
    let (prompt, plan) = tokio::task::spawn_blocking(move || {
        let prompt = engine
            .chat_tokens_with_vars(&messages, true, tools_json.as_ref(), template_vars.as_ref())
            .map_err(|e| {
                ApiError::invalid(
                    "messages",
                    format!("Could not apply the chat template: {e}"),
                )
            })?;
        let constraint = if plan.json.is_some() || plan.format.is_some() {
            let cons = engine
                .constrainer()
                .map_err(|e| ApiError::internal(e.to_string()))?;
            tools::constraint(&plan, &cons, &engine)?
        } else {
            None
        };
        Ok::<_, ApiError>((prompt, (plan.format, constraint)))
    })
    .await
    .map_err(|_| ApiError::internal("tokenization failed"))??;
    let (tool_format, mut constraint) = plan;
    let mut prompt = prompt;
    // A thinking model's `<think>` block goes to `reasoning_content`.
    let thinking = state
        .engine_ref()
        .prepare_thinking(&mut prompt, constraint.as_mut())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let reasoning = thinking.filter(|_| split_reasoning);
    let id = format!("chatcmpl-{}", crate::new_id());
    let created = crate::unix_now();
    let fmts = (0..n)
        .map(|_| ChatFormat {
            id: id.clone(),
            created,
            model: state.model_id().to_string(),
            state: state.clone(),
            want_logprobs: logprobs.is_some(),
            stream: ChatStream::new(tool_format, reasoning),
            pending_lp: Vec::new(),
        })
        .collect();
    let include_usage = req
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let spec = GenSpec {
        prompt,
        sampler,
        max_tokens,
        stop,
        logprobs,
        stream,
        include_usage,
        ignore_eos: req.ignore_eos.unwrap_or(false),
        constraint,
        reasoning: thinking,
    };
    state
        .generate_many(spec.choices(n).collect(), fmts, n)
        .await
}

struct ChatFormat {
    id: String,
    created: u64,
    model: String,
    state: AppState,
    want_logprobs: bool,
    /// Reasoning, content and tool calls split out of the text.
    stream: ChatStream,
    /// Logprobs of held-back text, sent with the next chunk.
    pending_lp: Vec<TokenLogprob>,
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
                    ..ChatDelta::default()
                },
                logprobs: None,
                finish_reason: None,
            }],
            None,
        ))
    }

    fn text_chunk(&mut self, text: &str, lps: &[TokenLogprob]) -> Option<Value> {
        self.pending_lp.extend_from_slice(lps);
        let delta = self.stream.push(text)?;
        let lps = std::mem::take(&mut self.pending_lp);
        let logprobs = (!lps.is_empty()).then(|| self.logprobs(&lps));
        Some(self.chunk(
            vec![ChatChunkChoice {
                index: 0,
                delta,
                logprobs,
                finish_reason: None,
            }],
            None,
        ))
    }

    fn final_chunk(&mut self, finish: Finish) -> Value {
        let (delta, calls) = self.stream.finish();
        let reason = if calls > 0 && finish == Finish::Stop {
            "tool_calls"
        } else {
            finish.as_str()
        };
        let lps = std::mem::take(&mut self.pending_lp);
        let logprobs = (!lps.is_empty()).then(|| self.logprobs(&lps));
        self.chunk(
            vec![ChatChunkChoice {
                index: 0,
                delta,
                logprobs,
                finish_reason: Some(reason.into()),
            }],
            None,
        )
    }

    fn usage_chunk(&mut self, usage: Usage) -> Value {
        self.chunk(Vec::new(), Some(usage))
    }

    fn whole(&mut self, text: &str, lps: &[TokenLogprob], finish: Finish, usage: Usage) -> Value {
        let (message, calls) = self.stream.whole(text);
        let reason = if calls && finish == Finish::Stop {
            "tool_calls"
        } else {
            finish.as_str()
        };
        serde_json::to_value(ChatCompletion {
            id: self.id.clone(),
            object: "chat.completion".into(),
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: Some(crate::FINGERPRINT.into()),
            choices: vec![ChatChoice {
                index: 0,
                message,
                logprobs: self.want_logprobs.then(|| self.logprobs(lps)),
                finish_reason: Some(reason.into()),
            }],
            usage,
        })
        .unwrap_or(Value::Null)
    }
}
