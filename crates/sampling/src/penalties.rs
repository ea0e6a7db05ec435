//! Logit bias and repetition/frequency/presence penalties, applied in place.

use std::collections::HashMap;

use crate::{SamplerConfig, SamplingError};

/// Adds each `(token, bias)` to `logits[token]` (OpenAI `logit_bias`; `-inf` bans a token).
pub fn apply_logit_bias(logits: &mut [f32], bias: &[(u32, f32)]) -> Result<(), SamplingError> {
    let vocab = logits.len();
    // Check every id first so an error leaves `logits` untouched.
    if let Some(&(token, _)) = bias.iter().find(|(t, _)| *t as usize >= vocab) {
        return Err(SamplingError::BiasTokenOutOfRange { token, vocab });
    }
    for &(token, b) in bias {
        logits[token as usize] += b;
    }
    Ok(())
}

/// Applies the config's penalties to `logits`, given the tokens seen so far.
///
/// - Repeat penalty (llama.cpp): each distinct token among the last `repeat_last_n` of
///   `history` has a positive logit divided by `repeat_penalty`, a non-positive one multiplied.
/// - Frequency/presence (OpenAI): `logit -= count * frequency_penalty + presence_penalty`
///   for each token with `count > 0` occurrences in the whole `history` slice. (llama.cpp
///   counts only within the repeat window; OpenAI counts the whole text so far. The caller
///   chooses what `history` holds, e.g. only generated tokens.)
///
/// Repeat is applied before frequency/presence, as llama.cpp does. History ids outside the
/// vocabulary are ignored.
pub fn apply_penalties(logits: &mut [f32], history: &[u32], config: &SamplerConfig) {
    let mut counts = HashMap::new();
    let mut window = Vec::new();
    apply_penalties_with(logits, history, config, &mut counts, &mut window);
}

/// [`apply_penalties`] with caller-owned scratch buffers, so a sampler reuses allocations.
pub(crate) fn apply_penalties_with(
    logits: &mut [f32],
    history: &[u32],
    config: &SamplerConfig,
    counts: &mut HashMap<u32, u32>,
    window: &mut Vec<u32>,
) {
    let vocab = logits.len();
    if config.repeat_penalty != 1.0 && config.repeat_last_n > 0 {
        let start = history.len().saturating_sub(config.repeat_last_n);
        window.clear();
        window.extend(
            history[start..]
                .iter()
                .copied()
                .filter(|&t| (t as usize) < vocab),
        );
        window.sort_unstable();
        window.dedup();
        for &t in window.iter() {
            let l = &mut logits[t as usize];
            if *l <= 0.0 {
                *l *= config.repeat_penalty;
            } else {
                *l /= config.repeat_penalty;
            }
        }
    }
    if config.frequency_penalty != 0.0 || config.presence_penalty != 0.0 {
        counts.clear();
        for &t in history.iter().filter(|&&t| (t as usize) < vocab) {
            *counts.entry(t).or_insert(0) += 1;
        }
        for (&t, &c) in counts.iter() {
            logits[t as usize] -= c as f32 * config.frequency_penalty + config.presence_penalty;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SamplerConfig {
        SamplerConfig {
            repeat_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            ..SamplerConfig::default()
        }
    }

    #[test]
    fn bias_adds_and_rejects_out_of_range() {
        let mut l = vec![0.0, 1.0, 2.0];
        apply_logit_bias(&mut l, &[(0, 5.0), (2, -1.5), (0, 1.0)]).unwrap();
        assert_eq!(l, vec![6.0, 1.0, 0.5]);
        assert_eq!(
            apply_logit_bias(&mut l, &[(3, 1.0)]),
            Err(SamplingError::BiasTokenOutOfRange { token: 3, vocab: 3 })
        );
    }

    #[test]
    fn repeat_penalty_llama_cpp_way() {
        let c = SamplerConfig {
            repeat_penalty: 2.0,
            repeat_last_n: 3,
            ..cfg()
        };
        // Token 0 occurs only outside the window of the last 3 tokens; token 1 twice inside
        // (penalised once), token 2 negative (multiplied), token 4 zero (stays 0).
        let mut l = vec![4.0, 3.0, -1.0, 5.0, 0.0];
        apply_penalties(&mut l, &[0, 1, 2, 1, 4], &c);
        assert_eq!(l, vec![4.0, 1.5, -2.0, 5.0, 0.0]);
    }

    #[test]
    fn frequency_and_presence_openai_way() {
        let c = SamplerConfig {
            frequency_penalty: 0.5,
            presence_penalty: 0.25,
            repeat_last_n: 1, // must not limit frequency/presence
            ..cfg()
        };
        let mut l = vec![1.0, 1.0, 1.0, 1.0];
        apply_penalties(&mut l, &[2, 0, 2, 2, 99], &c);
        // token 0: 1 - (1*0.5 + 0.25); token 2: 1 - (3*0.5 + 0.25); id 99 ignored.
        assert_eq!(l, vec![0.25, 1.0, -0.75, 1.0]);
    }

    #[test]
    fn repeat_then_frequency_order() {
        let c = SamplerConfig {
            repeat_penalty: 2.0,
            frequency_penalty: 1.0,
            ..cfg()
        };
        let mut l = vec![3.0];
        apply_penalties(&mut l, &[0], &c);
        // (3 / 2) - 1, not (3 - 1) / 2.
        assert_eq!(l, vec![0.5]);
    }

    #[test]
    fn disabled_penalties_change_nothing() {
        let mut l = vec![1.0, -2.0, 3.0];
        apply_penalties(&mut l, &[0, 1, 2, 2], &cfg());
        assert_eq!(l, vec![1.0, -2.0, 3.0]);
    }
}
