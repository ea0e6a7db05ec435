//! Perplexity computed exactly like llama.cpp's perplexity tool, so the numbers can
//! be compared: non-overlapping chunks of `n_ctx` tokens, a fresh cache per chunk,
//! the chunk's first token replaced by BOS when the tokenizer adds one, and only the
//! second half of each chunk scored (the logits at position `j` predict token `j+1`).

use thaw_kernels::ThreadPool;

use crate::{Logits, Model, ModelError};

/// The result of [`perplexity`].
#[derive(Debug, Clone, PartialEq)]
pub struct PerplexityReport {
    /// Chunks scored (`tokens.len() / n_ctx`).
    pub n_chunks: usize,
    /// Tokens scored (`n_chunks × (n_ctx - n_ctx/2 - 1)`).
    pub n_scored: usize,
    /// Running perplexity after each chunk (what llama.cpp prints as `[i]ppl`).
    pub running: Vec<f64>,
    /// `exp(mean negative log-likelihood)` over all scored tokens.
    pub perplexity: f64,
}

/// Score `tokens` (the whole text, tokenized as the caller's tokenizer does, with its
/// BOS if it adds one) in chunks of `n_ctx`. `add_bos` is the BOS id when the
/// tokenizer adds BOS. `progress(chunk, n_chunks, running_ppl)` is called per chunk.
pub fn perplexity(
    model: &Model,
    pool: &ThreadPool,
    tokens: &[u32],
    n_ctx: usize,
    add_bos: Option<u32>,
    mut progress: impl FnMut(usize, usize, f64),
) -> Result<PerplexityReport, ModelError> {
    if n_ctx < 4 {
        return Err(ModelError::Perplexity(format!(
            "a context of {n_ctx} tokens is too small"
        )));
    }
    if tokens.len() < 2 * n_ctx {
        return Err(ModelError::Perplexity(format!(
            "need at least {} tokens for a context of {n_ctx}; the text has {}",
            2 * n_ctx,
            tokens.len()
        )));
    }
    let n_vocab = model.config().n_vocab;
    let n_chunks = tokens.len() / n_ctx;
    let first = n_ctx / 2;
    let mut cache = model.new_cache(n_ctx)?;
    let mut chunk = Vec::with_capacity(n_ctx);
    let (mut nll, mut count) = (0.0f64, 0usize);
    let mut running = Vec::with_capacity(n_chunks);
    for i in 0..n_chunks {
        let start = i * n_ctx;
        chunk.clear();
        chunk.extend_from_slice(&tokens[start..start + n_ctx]);
        if let Some(bos) = add_bos {
            chunk[0] = bos;
        }
        cache.clear();
        // The first half only fills the cache; logits are needed from `first` on.
        model.forward(pool, &mut cache, &chunk[..first], Logits::None)?;
        let logits = model.forward(pool, &mut cache, &chunk[first..], Logits::All)?;
        // Rows first..n_ctx-2 predict tokens first+1..n_ctx-1 (the original tokens).
        for (j, row) in logits
            .chunks_exact(n_vocab)
            .take(n_ctx - 1 - first)
            .enumerate()
        {
            let target = tokens[start + first + j + 1] as usize;
            nll -= log_softmax(row, target);
            count += 1;
        }
        let ppl = (nll / count as f64).exp();
        running.push(ppl);
        progress(i, n_chunks, ppl);
    }
    Ok(PerplexityReport {
        n_chunks,
        n_scored: count,
        perplexity: (nll / count as f64).exp(),
        running,
    })
}

/// `log softmax(logits)[target]`, as llama.cpp computes it (sum of exps in f64).
fn log_softmax(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
    f64::from(logits[target] - max) - sum.ln()
}

#[cfg(test)]
mod tests {
    use super::log_softmax;

    #[test]
    fn log_softmax_of_uniform_is_minus_log_n() {
        let l = vec![3.0f32; 8];
        assert!((log_softmax(&l, 5) + 8f64.ln()).abs() < 1e-9);
        let l = vec![0.0, 100.0];
        assert!(log_softmax(&l, 1).abs() < 1e-9);
    }
}
