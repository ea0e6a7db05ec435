//! Token sampling for `thaw`: turns one step of model logits into the next token id.
//!
//! It serves both the CLI (`--temperature --top-k --top-p --min-p --repeat-penalty --seed`)
//! and the OpenAI-compatible server (`temperature`, `top_p`, `seed`, `frequency_penalty`,
//! `presence_penalty`, `logit_bias`, `logprobs`/`top_logprobs`).
//!
//! The chain follows llama.cpp's default order:
//! logit bias → penalties → (greedy if `temperature <= 0`) → top-k → top-p → min-p →
//! temperature → softmax → draw. Draws are reproducible: a hand-written xoshiro256** generator
//! and a hand-written `exp` built only from IEEE basic operations make the same seed and the
//! same logits give the same tokens on every run and platform.
//!
//! The crate is pure logic with no dependency except `thiserror`.

mod config;
mod error;
mod logprobs;
mod math;
mod penalties;
pub mod rng;
mod sampler;
mod select;

pub use config::SamplerConfig;
pub use error::SamplingError;
pub use logprobs::{logprob_of, logprobs, top_logprobs};
pub use penalties::{apply_logit_bias, apply_penalties};
pub use sampler::Sampler;
