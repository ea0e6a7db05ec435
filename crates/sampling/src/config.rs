//! Sampler settings and their validation.

use crate::SamplingError;

/// Settings for one [`Sampler`](crate::Sampler). Defaults match llama.cpp's.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    /// Softmax temperature. `<= 0` means greedy (argmax, ties → lowest id). Must be finite
    /// and not negative. Default 0.8.
    pub temperature: f32,
    /// Keep only the `top_k` highest logits; `0` disables. Default 40.
    pub top_k: usize,
    /// Nucleus sampling: keep the smallest highest-probability prefix whose mass reaches
    /// `top_p`. In `(0, 1]`; `1` disables. Default 0.95.
    pub top_p: f32,
    /// Keep tokens whose probability is at least `min_p` times the top token's. In `[0, 1]`;
    /// `0` disables. Default 0.05.
    pub min_p: f32,
    /// llama.cpp repetition penalty over the last `repeat_last_n` tokens of history: positive
    /// logits are divided by it, negative ones multiplied. `> 0`; `1` disables. Default 1.0.
    pub repeat_penalty: f32,
    /// How many of the most recent history tokens the repeat penalty looks at; `0` disables.
    /// Default 64.
    pub repeat_last_n: usize,
    /// OpenAI frequency penalty: `logit -= count * frequency_penalty`, with `count` the token's
    /// occurrences in the whole history slice passed to `sample`. OpenAI allows `[-2, 2]`
    /// (the server checks that); here any finite value. Default 0.
    pub frequency_penalty: f32,
    /// OpenAI presence penalty: `logit -= presence_penalty` once for every token present in
    /// the history slice. Any finite value. Default 0.
    pub presence_penalty: f32,
    /// RNG seed; `None` seeds from OS randomness and the clock. Default `None`.
    pub seed: Option<u64>,
    /// Added to the logit of each listed token before anything else (OpenAI `logit_bias`).
    /// Values may be any finite number or `-inf` (bans the token). Default empty.
    pub logit_bias: Vec<(u32, f32)>,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            seed: None,
            logit_bias: Vec::new(),
        }
    }
}

impl SamplerConfig {
    /// Settings for plain greedy decoding (argmax at every step).
    pub fn greedy() -> Self {
        SamplerConfig {
            temperature: 0.0,
            ..SamplerConfig::default()
        }
    }

    /// Checks every field's range; the error names the first bad field.
    pub fn validate(&self) -> Result<(), SamplingError> {
        let bad = |field: &str, value: f32, reason: &'static str| {
            Err(SamplingError::InvalidConfig {
                field: field.to_string(),
                value,
                reason,
            })
        };
        // Written as negated range checks so NaN (which fails every comparison) is rejected.
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(
                "temperature",
                self.temperature,
                "must be finite and >= 0 (0 means greedy)",
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", self.top_p, "must be in (0, 1]");
        }
        if !(self.min_p >= 0.0 && self.min_p <= 1.0) {
            return bad("min_p", self.min_p, "must be in [0, 1]");
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad(
                "repeat_penalty",
                self.repeat_penalty,
                "must be finite and > 0 (1 disables)",
            );
        }
        if !self.frequency_penalty.is_finite() {
            return bad(
                "frequency_penalty",
                self.frequency_penalty,
                "must be finite",
            );
        }
        if !self.presence_penalty.is_finite() {
            return bad("presence_penalty", self.presence_penalty, "must be finite");
        }
        for &(token, bias) in &self.logit_bias {
            // +inf would turn the softmax into inf/inf = NaN; -inf is a legitimate ban.
            if bias.is_nan() || bias == f32::INFINITY {
                return bad(
                    &format!("logit_bias[{token}]"),
                    bias,
                    "must be finite or -inf",
                );
            }
        }
        Ok(())
    }
}
