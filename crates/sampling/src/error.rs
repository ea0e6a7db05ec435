//! The crate's error type.

use thiserror::Error;

/// Everything that can go wrong while configuring a sampler or sampling.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SamplingError {
    /// A [`SamplerConfig`](crate::SamplerConfig) field is out of range or NaN.
    #[error("invalid sampler setting `{field}` = {value}: {reason}")]
    InvalidConfig {
        /// Field name as written in `SamplerConfig` (e.g. `top_p`, `logit_bias[42]`).
        field: String,
        /// The offending value.
        value: f32,
        /// What the allowed range is.
        reason: &'static str,
    },
    /// The logits slice is empty.
    #[error("logits are empty")]
    EmptyLogits,
    /// Every logit is NaN or -inf after bias and penalties: there is nothing to choose from.
    #[error("no token has a usable logit (all are NaN or -inf)")]
    NoValidLogits,
    /// A `logit_bias` entry names a token outside the vocabulary.
    #[error("logit_bias token {token} is outside the vocabulary of {vocab} tokens")]
    BiasTokenOutOfRange {
        /// The token id in `logit_bias`.
        token: u32,
        /// Length of the logits slice.
        vocab: usize,
    },
}
