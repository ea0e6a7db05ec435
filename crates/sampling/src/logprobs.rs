//! Log-probabilities of the model's own distribution (before any sampling filter), as
//! OpenAI's `logprobs` / `top_logprobs` report them. NaN logits count as probability 0.

use crate::SamplingError;
use crate::select::{collect_top, desc};

/// `max` and `ln Σ exp(l - max)` over non-NaN logits, accumulated in f64.
fn log_sum_exp(logits: &[f32]) -> Result<f64, SamplingError> {
    if logits.is_empty() {
        return Err(SamplingError::EmptyLogits);
    }
    let max = logits
        .iter()
        .copied()
        .filter(|l| !l.is_nan())
        .fold(f32::NEG_INFINITY, f32::max);
    if !(max > f32::NEG_INFINITY && max < f32::INFINITY) {
        // All NaN/-inf, or +inf which has no finite softmax.
        return Err(SamplingError::NoValidLogits);
    }
    let max = max as f64;
    let sum: f64 = logits
        .iter()
        .filter(|l| !l.is_nan())
        .map(|&l| (l as f64 - max).exp())
        .sum();
    Ok(max + sum.ln())
}

/// Log-softmax of `logits`, computed stably. NaN logits get `-inf`.
pub fn logprobs(logits: &[f32]) -> Result<Vec<f32>, SamplingError> {
    let lse = log_sum_exp(logits)?;
    Ok(logits
        .iter()
        .map(|&l| {
            if l.is_nan() {
                f32::NEG_INFINITY
            } else {
                (l as f64 - lse) as f32
            }
        })
        .collect())
}

/// Log-probability of one token (e.g. the sampled one); `-inf` for an out-of-range id.
pub fn logprob_of(logits: &[f32], token: u32) -> Result<f32, SamplingError> {
    let lse = log_sum_exp(logits)?;
    Ok(match logits.get(token as usize) {
        Some(&l) if !l.is_nan() => (l as f64 - lse) as f32,
        _ => f32::NEG_INFINITY,
    })
}

/// The `k` most likely tokens with their log-probabilities, most likely first (ties → lower
/// id). Fewer than `k` if the vocabulary is smaller; NaN logits are never listed, `-inf` ones
/// (probability 0) only to fill up `k`.
pub fn top_logprobs(logits: &[f32], k: usize) -> Result<Vec<(u32, f32)>, SamplingError> {
    let lse = log_sum_exp(logits)?;
    let mut v = Vec::new();
    if k == 0 {
        return Ok(v);
    }
    // NaN is skipped by the selection; -inf (probability 0) is listed only to fill up `k`.
    collect_top(logits, k, &mut v, |i, l| (i, l), |&p| p);
    if v.len() < k {
        let ninf = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| **l == f32::NEG_INFINITY);
        v.extend(ninf.take(k - v.len()).map(|(i, &l)| (i as u32, l)));
    }
    v.sort_unstable_by(|a, b| desc(*a, *b));
    Ok(v.into_iter()
        .map(|(i, l)| (i, (l as f64 - lse) as f32))
        .collect())
}
