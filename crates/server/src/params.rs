//! Request fields → sampler settings and limits, with a 400 naming the first bad field.

use std::collections::BTreeMap;

use thaw_openai::StopSpec;
use thaw_sampling::SamplerConfig;

use crate::error::ApiError;

/// The sampling fields both endpoints share.
pub struct Sampling<'a> {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub seed: Option<i64>,
    pub logit_bias: Option<&'a BTreeMap<String, f32>>,
}

fn range(param: &str, v: Option<f32>, lo: f32, hi: f32) -> Result<Option<f32>, ApiError> {
    match v {
        Some(x) if !(x >= lo && x <= hi) => Err(ApiError::invalid(
            param,
            format!("`{param}` must be between {lo} and {hi}, got {x}."),
        )),
        other => Ok(other),
    }
}

/// Omitted fields keep llama.cpp's defaults (temperature 0.8, top-k 40, top-p 0.95,
/// min-p 0.05), as llama.cpp's server does.
pub fn sampler_config(s: &Sampling, n_vocab: usize) -> Result<SamplerConfig, ApiError> {
    let mut c = SamplerConfig::default();
    if let Some(t) = range("temperature", s.temperature, 0.0, 2.0)? {
        c.temperature = t;
    }
    if let Some(p) = range("top_p", s.top_p, 0.0, 1.0)? {
        if p == 0.0 {
            // Only the single most likely token survives: greedy.
            c.temperature = 0.0;
        } else {
            c.top_p = p;
        }
    }
    if let Some(k) = s.top_k {
        c.top_k = k as usize;
    }
    if let Some(p) = range("min_p", s.min_p, 0.0, 1.0)? {
        c.min_p = p;
    }
    if let Some(r) = s.repeat_penalty {
        if !(r.is_finite() && r > 0.0) {
            return Err(ApiError::invalid(
                "repeat_penalty",
                "`repeat_penalty` must be > 0.",
            ));
        }
        c.repeat_penalty = r;
    }
    if let Some(p) = range("frequency_penalty", s.frequency_penalty, -2.0, 2.0)? {
        c.frequency_penalty = p;
    }
    if let Some(p) = range("presence_penalty", s.presence_penalty, -2.0, 2.0)? {
        c.presence_penalty = p;
    }
    // Any 64-bit pattern is a valid seed; negative seeds are reinterpreted.
    c.seed = s.seed.map(|x| x as u64);
    if let Some(bias) = s.logit_bias {
        for (k, &v) in bias {
            let id = k.parse::<u32>().ok().filter(|&id| (id as usize) < n_vocab);
            let Some(id) = id else {
                return Err(ApiError::invalid(
                    "logit_bias",
                    format!("`logit_bias` key `{k}` is not a token id below {n_vocab}."),
                ));
            };
            if !(-100.0..=100.0).contains(&v) {
                return Err(ApiError::invalid(
                    "logit_bias",
                    format!("`logit_bias` values must be between -100 and 100, got {v}."),
                ));
            }
            c.logit_bias.push((id, v));
        }
    }
    c.validate()
        .map_err(|e| ApiError::invalid("", e.to_string()))?;
    Ok(c)
}

pub fn stop_strings(stop: Option<&StopSpec>) -> Result<Vec<String>, ApiError> {
    let v = stop.map(|s| s.0.clone()).unwrap_or_default();
    if v.len() > 4 {
        return Err(ApiError::invalid(
            "stop",
            format!("`stop` takes at most 4 sequences, got {}.", v.len()),
        ));
    }
    Ok(v)
}

pub fn max_tokens(param: &str, v: Option<u32>) -> Result<Option<usize>, ApiError> {
    match v {
        Some(0) => Err(ApiError::invalid(
            param,
            format!("`{param}` must be at least 1."),
        )),
        other => Ok(other.map(|x| x as usize)),
    }
}

/// Most choices one request may ask for (`n`, times the prompts of a completion).
pub const MAX_CHOICES: usize = 16;

/// Choices per prompt (`n`, default 1).
pub fn choices(n: Option<u32>) -> Result<usize, ApiError> {
    match n {
        None => Ok(1),
        Some(0) => Err(ApiError::invalid("n", "`n` must be at least 1.")),
        Some(n) if n as usize > MAX_CHOICES => Err(ApiError::invalid(
            "n",
            format!("`n` must be at most {MAX_CHOICES}, got {n}."),
        )),
        Some(n) => Ok(n as usize),
    }
}

/// The sampler of choice `i` of a request: with a seed, each choice gets its own
/// (`seed + i`), so choices differ but a request repeats exactly.
pub fn for_choice(s: &SamplerConfig, i: usize) -> SamplerConfig {
    let mut s = s.clone();
    s.seed = s.seed.map(|seed| seed.wrapping_add(i as u64));
    s
}

pub fn check_stream_options(stream: bool, has_options: bool) -> Result<(), ApiError> {
    if has_options && !stream {
        return Err(ApiError::invalid(
            "stream_options",
            "`stream_options` is only allowed when `stream` is true.",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Sampling<'static> {
        Sampling {
            temperature: None,
            top_p: None,
            top_k: None,
            min_p: None,
            repeat_penalty: None,
            frequency_penalty: None,
            presence_penalty: None,
            seed: None,
            logit_bias: None,
        }
    }

    #[test]
    fn ranges_name_the_param() {
        let e = sampler_config(
            &Sampling {
                temperature: Some(3.0),
                ..base()
            },
            10,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temperature"));
        let e = sampler_config(
            &Sampling {
                top_p: Some(f32::NAN),
                ..base()
            },
            10,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("top_p"));
        let bias: BTreeMap<String, f32> = [("99".to_string(), 1.0)].into();
        let e = sampler_config(
            &Sampling {
                logit_bias: Some(&bias),
                ..base()
            },
            10,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("logit_bias"));
        let c = sampler_config(
            &Sampling {
                top_p: Some(0.0),
                seed: Some(-1),
                ..base()
            },
            10,
        )
        .unwrap();
        assert_eq!(c.temperature, 0.0);
        assert_eq!(c.seed, Some(u64::MAX));
        assert!(stop_strings(Some(&StopSpec(vec!["a".into(); 5]))).is_err());
        assert!(max_tokens("max_tokens", Some(0)).is_err());
        assert_eq!(choices(None).unwrap(), 1);
        assert_eq!(choices(Some(16)).unwrap(), 16);
        assert!(choices(Some(0)).is_err() && choices(Some(17)).is_err());
        let seeded = SamplerConfig {
            seed: Some(u64::MAX),
            ..SamplerConfig::default()
        };
        assert_eq!(for_choice(&seeded, 2).seed, Some(1));
        assert_eq!(for_choice(&SamplerConfig::default(), 2).seed, None);
    }
}
