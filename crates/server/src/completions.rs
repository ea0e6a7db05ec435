//! `POST /v1/completions` (the legacy text-completion endpoint).

use axum::extract::State;
use axum::response::Response;
use serde_json::{Map, Value};
use thaw_openai::{
    CompletionChoice, CompletionLogprobs, CompletionRequest, CompletionResponse, Prompt, Usage,
};

use crate::error::ApiError;
use crate::extract::OpenAiJson;
use crate::params::{self, Sampling};
use crate::respond::{Format, lp_value};
use crate::scheduler::{Finish, TokenLogprob};
use crate::{AppState, GenSpec};

pub async fn completions(
    State(state): State<AppState>,
    OpenAiJson(req): OpenAiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    state.check_model(&req.model)?;
    let n = params::choices(req.n)?;
    if let Some(b) = req.best_of
        && b as usize != n
    {
        return Err(ApiError::invalid(
            "best_of",
            "`best_of` (picking the best of more choices than returned) is not supported; leave it out or equal to `n`.",
        ));
    }
    if req.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid(
            "suffix",
            "`suffix` (insertion) is not supported.",
        ));
    }
    let stream = req.stream.unwrap_or(false);
    params::check_stream_options(stream, req.stream_options.is_some())?;
    let echo = req.echo.unwrap_or(false);
    let logprobs = match req.logprobs {
        Some(k) if k > 20 => {
            return Err(ApiError::invalid(
                "logprobs",
                "`logprobs` must be at most 20.",
            ));
        }
        Some(_) if echo => {
            return Err(ApiError::invalid(
                "echo",
                "`echo` together with `logprobs` is not supported.",
            ));
        }
        k => k.map(|k| k as usize),
    };
    let n_vocab = state.n_vocab();
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
        n_vocab,
    )?;
    let max_tokens = params::max_tokens("max_tokens", req.max_tokens)?;
    let stop = params::stop_strings(req.stop.as_ref())?;
    // One completion per prompt and choice, prompt-major (as OpenAI numbers them).
    let count = match &req.prompt {
        Some(Prompt::Texts(t)) => t.len(),
        Some(Prompt::Tokens(t)) => t.len(),
        None => 0,
    };
    if count * n > MAX_JOBS {
        return Err(ApiError::invalid(
            "prompt",
            format!(
                "{count} prompts × n={n} is {} completions; at most {MAX_JOBS} per request.",
                count * n
            ),
        ));
    }
    let prompts: Vec<(Vec<u32>, String)> = match req.prompt {
        None => return Err(ApiError::invalid("prompt", "`prompt` is required.")),
        Some(Prompt::Texts(texts)) => {
            let engine = state.engine();
            tokio::task::spawn_blocking(move || {
                texts
                    .into_iter()
                    .map(|t| engine.text_tokens(&t, true).map(|ids| (ids, t)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .map_err(|_| ApiError::internal("tokenization failed"))?
            .map_err(|e| {
                ApiError::invalid("prompt", format!("Could not tokenize the prompt: {e}"))
            })?
        }
        Some(Prompt::Tokens(lists)) => {
            let mut out = Vec::with_capacity(lists.len());
            for ids in lists {
                if let Some(bad) = ids.iter().find(|&&id| id as usize >= n_vocab) {
                    return Err(ApiError::invalid(
                        "prompt",
                        format!("Token id {bad} is outside the vocabulary of {n_vocab} tokens."),
                    ));
                }
                // The text is only shown back by `echo`.
                let text = if echo {
                    state.engine_ref().tokenizer().decode(&ids, false)
                } else {
                    String::new()
                };
                out.push((ids, text));
            }
            out
        }
    };
    if prompts.is_empty() {
        return Err(ApiError::invalid("prompt", "`prompt` must not be empty."));
    }
    let id = format!("cmpl-{}", crate::new_id());
    let created = crate::unix_now();
    let include_usage = req
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let (mut specs, mut fmts) = (Vec::new(), Vec::new());
    for (ids, text) in prompts {
        fmts.extend((0..n).map(|_| CompletionFormat {
            id: id.clone(),
            created,
            model: state.model_id().to_string(),
            state: state.clone(),
            want_logprobs: logprobs.is_some(),
            echo: echo.then(|| text.clone()),
            offset: 0,
        }));
        let spec = GenSpec {
            prompt: ids,
            sampler: sampler.clone(),
            max_tokens,
            stop: stop.clone(),
            logprobs,
            stream,
            include_usage,
            ignore_eos: req.ignore_eos.unwrap_or(false),
            constraint: None,
            reasoning: None,
        };
        specs.extend(spec.choices(n));
    }
    state.generate_many(specs, fmts, n).await
}

/// Most completions (prompts × `n`) one request may ask for.
const MAX_JOBS: usize = 64;

struct CompletionFormat {
    id: String,
    created: u64,
    model: String,
    state: AppState,
    want_logprobs: bool,
    /// The prompt text to put in front of the answer (`echo`).
    echo: Option<String>,
    /// Bytes of answer text so far, for `text_offset`.
    offset: usize,
}

impl CompletionFormat {
    fn logprobs(&mut self, lps: &[TokenLogprob]) -> CompletionLogprobs {
        let tok = self.state.engine_ref().tokenizer();
        let text = |id: u32| String::from_utf8_lossy(&tok.token_bytes(id)).into_owned();
        let mut out = CompletionLogprobs::default();
        for lp in lps {
            let t = text(lp.token);
            out.text_offset.push(self.offset);
            self.offset += t.len();
            out.tokens.push(t);
            out.token_logprobs.push(lp_value(lp.logprob));
            let mut top = Map::new();
            for &(id, l) in &lp.top {
                top.insert(text(id), Value::from(lp_value(l)));
            }
            out.top_logprobs.push(top);
        }
        out
    }

    fn body(&self, choices: Vec<CompletionChoice>, usage: Option<Usage>) -> Value {
        serde_json::to_value(CompletionResponse {
            id: self.id.clone(),
            object: "text_completion".into(),
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: Some(crate::FINGERPRINT.into()),
            choices,
            usage,
        })
        .unwrap_or(Value::Null)
    }

    fn choice(
        text: String,
        logprobs: Option<CompletionLogprobs>,
        finish: Option<Finish>,
    ) -> CompletionChoice {
        CompletionChoice {
            text,
            index: 0,
            logprobs,
            finish_reason: finish.map(|f| f.as_str().to_string()),
        }
    }
}

impl Format for CompletionFormat {
    fn first_chunk(&mut self) -> Option<Value> {
        let echo = self.echo.clone()?;
        Some(self.body(vec![Self::choice(echo, None, None)], None))
    }

    fn text_chunk(&mut self, text: &str, lps: &[TokenLogprob]) -> Option<Value> {
        let logprobs = self.want_logprobs.then(|| self.logprobs(lps));
        Some(self.body(vec![Self::choice(text.to_string(), logprobs, None)], None))
    }

    fn final_chunk(&mut self, finish: Finish) -> Value {
        self.body(vec![Self::choice(String::new(), None, Some(finish))], None)
    }

    fn usage_chunk(&mut self, usage: Usage) -> Value {
        self.body(Vec::new(), Some(usage))
    }

    fn whole(&mut self, text: &str, lps: &[TokenLogprob], finish: Finish, usage: Usage) -> Value {
        let logprobs = self.want_logprobs.then(|| self.logprobs(lps));
        let full = match &self.echo {
            Some(p) => format!("{p}{text}"),
            None => text.to_string(),
        };
        self.body(
            vec![Self::choice(full, logprobs, Some(finish))],
            Some(usage),
        )
    }
}
