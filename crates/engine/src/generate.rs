//! One conversation's state and the generate loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use thaw_constrain::Constraint;
use thaw_kernels::ThreadPool;
use thaw_models::{BatchEntry, KvCache, KvSource, Logits, MAX_BATCH, Model};
use thaw_sampling::{Sampler, SamplerConfig};
use thaw_tokenizer::{StreamDecoder, Tokenizer};

use crate::EngineError;
use crate::prefix::Prefixes;
use crate::stop::StopMatcher;

/// What to generate and when to stop.
#[derive(Debug, Clone, Default)]
pub struct GenerateParams {
    pub sampler: SamplerConfig,
    /// Upper bound on generated tokens (`None` = until end of generation or context full).
    pub max_tokens: Option<usize>,
    /// Stop strings: generation ends before the first occurrence of any of them,
    /// across token boundaries; the stop string itself is not emitted.
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation tokens (benchmarks).
    pub ignore_eos: bool,
    /// Grammar the output must follow (JSON schema, tool call); masked each step.
    pub constraint: Option<Constraint>,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The KV cache is full.
    ContextFull,
    /// The caller's cancel flag was set.
    Cancelled,
}

/// Counts and timings of one `generate` call.
#[derive(Debug, Clone)]
pub struct GenerateStats {
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV state was reused from the session's previous turn.
    pub cached_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_time: Duration,
    pub decode_time: Duration,
    pub finish_reason: FinishReason,
}

impl GenerateStats {
    /// Prompt tokens actually computed per second.
    pub fn prefill_tokens_per_second(&self) -> f64 {
        let n = self.prompt_tokens - self.cached_tokens;
        n as f64 / self.prefill_time.as_secs_f64().max(1e-9)
    }
    /// Generated tokens per second, counting from the first generated token (the
    /// first comes out of prefill).
    pub fn decode_tokens_per_second(&self) -> f64 {
        let n = self.generated_tokens.saturating_sub(1);
        n as f64 / self.decode_time.as_secs_f64().max(1e-9)
    }
}

/// One session's share of [`Session::forward_batch`].
pub struct SessionBatch<'a> {
    pub session: &'a mut Session,
    /// Tokens to append (a decode step's one token, or a chunk of the prompt after
    /// [`Session::begin_prompt`]).
    pub tokens: &'a [u32],
    /// Return the logits of the last token.
    pub logits: bool,
}

/// A conversation: the KV cache and the token ids it holds. Feeding a prompt that
/// starts with the tokens already in the cache only computes the new ones (chat
/// history is not recomputed each turn).
pub struct Session {
    model: Arc<Model>,
    tokenizer: Arc<Tokenizer>,
    pool: Arc<ThreadPool>,
    cache: KvCache,
    /// Token ids whose K/V are in `cache`, in order.
    tokens: Vec<u32>,
    /// Stored prompt prefixes a prompt may start from.
    prefixes: Arc<Prefixes>,
}

impl Session {
    pub(crate) fn new(
        model: Arc<Model>,
        tokenizer: Arc<Tokenizer>,
        pool: Arc<ThreadPool>,
        cache: KvCache,
        prefixes: Arc<Prefixes>,
    ) -> Self {
        Self {
            model,
            tokenizer,
            pool,
            cache,
            tokens: Vec::new(),
            prefixes,
        }
    }

    /// When `prompt` starts with a stored prefix (a snapshot's PREFIXES) longer than
    /// what the cache already shares with it, use that prefix's K/V (read in place from
    /// the mapping) instead of computing it. Returns the tokens now shared with `prompt`. [`Self::begin_prompt`]
    /// (and so [`Self::prefill`] and the server's scheduler) calls this with the whole
    /// prompt.
    pub fn adopt_prefix(&mut self, prompt: &[u32]) -> usize {
        let common = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        let Some((tokens, kv)) = self.prefixes.best(prompt, common, self.cache.n_ctx()) else {
            return common;
        };
        // Read in place (nothing copied); a copy when the bytes cannot be viewed as
        // f16 (a big-endian target); sizes were checked at load, so only a cache of
        // another shape fails both, and computes instead.
        let n = tokens.len();
        if self.cache.share(kv.clone(), n).is_err() && self.cache.import(kv.kv_bytes(), n).is_err()
        {
            return common;
        }
        self.tokens.clear();
        self.tokens.extend_from_slice(tokens);
        tokens.len()
    }

    /// Take the first `n` cached positions of `other` (same model) in place of this
    /// session's contents: a prompt prefix another sequence has just computed (the
    /// other choices of an `n` > 1 request, concurrent requests with one system
    /// prompt) is copied instead of computed again.
    pub fn copy_prefix_from(&mut self, other: &Session, n: usize) -> Result<(), EngineError> {
        let n = n.min(other.tokens.len()).min(other.cache.len());
        self.cache.copy_prefix(&other.cache, n)?;
        self.tokens.clear();
        self.tokens.extend_from_slice(&other.tokens[..n]);
        Ok(())
    }

    /// Positions whose K/V the session reads in place from a stored prefix.
    pub fn stored_prefix_in_place(&self) -> usize {
        self.cache.shared_len()
    }

    /// K/V of every position the cache holds, in the model's export format.
    pub(crate) fn export_kv(&self) -> Vec<u8> {
        self.cache.export(self.cache.len())
    }

    /// Room in the context, in tokens.
    pub fn n_ctx(&self) -> usize {
        self.cache.n_ctx()
    }

    /// The token ids held in the cache.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Forget everything.
    pub fn reset(&mut self) {
        self.cache.clear();
        self.tokens.clear();
    }

    /// Compute K/V for `prompt`, reusing the longest common prefix with what the cache
    /// already holds, and return the logits of the last prompt token and how many
    /// prompt tokens were reused.
    pub fn prefill(&mut self, prompt: &[u32]) -> Result<(Vec<f32>, usize), EngineError> {
        let (logits, reuse) = self.prefill_cancellable(prompt, None)?;
        // Never cancelled, and `begin_prompt` leaves at least one token to compute.
        Ok((logits.unwrap_or_default(), reuse))
    }

    /// Get ready to feed `prompt` in pieces (see [`Session::forward_batch`]): keep
    /// the prefix the cache shares with it (at least the last prompt token is
    /// recomputed: its logits are needed) and return that prefix's length, from
    /// which the caller feeds `prompt[reuse..]`.
    pub fn begin_prompt(&mut self, prompt: &[u32]) -> Result<usize, EngineError> {
        let n_ctx = self.cache.n_ctx();
        if prompt.is_empty() || prompt.len() > n_ctx {
            return Err(EngineError::PromptTooLong {
                prompt: prompt.len(),
                n_ctx,
                n_ctx_train: self.model.config().n_ctx_train,
            });
        }
        let common = self.adopt_prefix(prompt);
        // At least the last prompt token is recomputed: its logits are needed. Keep
        // the recomputed tail at two tokens or more: a one-token pass takes the decode
        // arithmetic (llama.cpp's vec-dot attention order), a longer one the prompt
        // arithmetic, so a cache hit would give different logits than a cold prompt and
        // the same seed would give different text.
        let reuse = common.min(prompt.len().saturating_sub(2));
        self.cache.truncate(reuse);
        self.tokens.truncate(reuse);
        Ok(reuse)
    }

    /// Feed several sessions in ONE forward pass (each weight matrix read once for
    /// all of them): decode steps of running requests and prompt chunks of new ones.
    /// Returns, per entry, the logits of its last token when asked for. An entry
    /// that cannot run (context full, bad token) gets its own error and the others
    /// still run.
    pub fn forward_batch(
        batch: &mut [SessionBatch<'_>],
    ) -> Vec<Result<Option<Vec<f32>>, EngineError>> {
        let mut results: Vec<Result<Option<Vec<f32>>, EngineError>> =
            (0..batch.len()).map(|_| Ok(None)).collect();
        let mut ok = Vec::new();
        for (i, b) in batch.iter().enumerate() {
            match b.session.model.check(&b.session.cache, b.tokens) {
                Ok(()) => ok.push(i),
                Err(e) => results[i] = Err(e.into()),
            }
        }
        let Some(&first) = ok.first() else {
            return results;
        };
        let (model, pool) = {
            let s = &batch[first].session;
            (s.model.clone(), s.pool.clone())
        };
        let mut entries: Vec<BatchEntry<'_>> = Vec::with_capacity(ok.len());
        let mut tokens: Vec<(usize, &[u32])> = Vec::with_capacity(ok.len());
        for (i, b) in batch.iter_mut().enumerate() {
            if !ok.contains(&i) {
                continue;
            }
            // Sessions of one server share the model; a stranger runs on its own.
            if !Arc::ptr_eq(&b.session.model, &model) {
                results[i] = b.session.feed(b.tokens, b.logits);
                continue;
            }
            tokens.push((i, b.tokens));
            entries.push(BatchEntry {
                cache: &mut b.session.cache,
                tokens: b.tokens,
                logits: b.logits,
            });
        }
        match model.forward_batch(&pool, &mut entries) {
            Ok(out) => {
                drop(entries);
                for ((i, toks), logits) in tokens.into_iter().zip(out) {
                    batch[i].session.tokens.extend_from_slice(toks);
                    results[i] = Ok(logits);
                }
            }
            Err(e) => {
                drop(entries);
                let msg = e.to_string();
                for (i, _) in tokens {
                    results[i] = Err(EngineError::Batch(msg.clone()));
                }
            }
        }
        results
    }

    /// [`Session::forward_batch`] of one entry.
    fn feed(&mut self, tokens: &[u32], logits: bool) -> Result<Option<Vec<f32>>, EngineError> {
        let want = if logits { Logits::Last } else { Logits::None };
        let out = self
            .model
            .forward(&self.pool, &mut self.cache, tokens, want)?;
        self.tokens.extend_from_slice(tokens);
        Ok(logits.then_some(out))
    }

    /// Run one token through the model and return its logits.
    pub fn step(&mut self, token: u32) -> Result<Vec<f32>, EngineError> {
        let logits = self
            .model
            .forward(&self.pool, &mut self.cache, &[token], Logits::Last)?;
        self.tokens.push(token);
        Ok(logits)
    }

    /// [`Self::prefill`] that polls `cancel` between the [`MAX_BATCH`]-token chunks
    /// [`Model::forward`] cuts a prompt into (the same chunks, so the same K/V and
    /// logits bit for bit). Returns `None` for the logits when cancelled; the cache
    /// then holds the chunks computed so far.
    fn prefill_cancellable(
        &mut self,
        prompt: &[u32],
        cancel: Option<&AtomicBool>,
    ) -> Result<(Option<Vec<f32>>, usize), EngineError> {
        let reuse = self.begin_prompt(prompt)?;
        let rest = &prompt[reuse..];
        // Every chunk's checks up front: an error leaves the cache as it was.
        self.model.check(&self.cache, rest)?;
        let mut logits = None;
        let n_chunks = rest.len().div_ceil(MAX_BATCH);
        for (i, chunk) in rest.chunks(MAX_BATCH).enumerate() {
            if i > 0 && cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Ok((None, reuse));
            }
            // Only the last chunk's last row is sampled from: the others skip the
            // output head.
            let last = i + 1 == n_chunks;
            let want = if last { Logits::Last } else { Logits::None };
            let out = self
                .model
                .forward(&self.pool, &mut self.cache, chunk, want)?;
            self.tokens.extend_from_slice(chunk);
            logits = last.then_some(out);
        }
        Ok((logits, reuse))
    }

    /// Generate a continuation of `prompt`, calling `on_text` with each piece of text
    /// as soon as it is complete UTF-8 and cannot be part of a stop string. `cancel`
    /// is polled between tokens, and during the prompt between its chunks of
    /// [`MAX_BATCH`] tokens.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        cancel: Option<&AtomicBool>,
        mut on_text: impl FnMut(&str),
    ) -> Result<GenerateStats, EngineError> {
        let mut sampler = Sampler::new(params.sampler.clone())?;
        let start = Instant::now();
        let (logits, cached) = self.prefill_cancellable(prompt, cancel)?;
        let prefill_time = start.elapsed();
        let Some(mut logits) = logits else {
            return Ok(GenerateStats {
                prompt_tokens: prompt.len(),
                cached_tokens: cached,
                generated_tokens: 0,
                prefill_time,
                decode_time: Duration::ZERO,
                finish_reason: FinishReason::Cancelled,
            });
        };
        let decode_start = Instant::now();
        let mut decoder = StreamDecoder::continuation(true);
        let mut stop = StopMatcher::new(params.stop.clone());
        let mut generated = 0usize;
        let mut stop_string_hit = false;
        let mut constraint = params.constraint.clone();
        // Penalties look at the whole context, prompt included, as llama.cpp does.
        let finish = loop {
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                break FinishReason::Cancelled;
            }
            if params.max_tokens.is_some_and(|m| generated >= m) {
                break FinishReason::Length;
            }
            if let Some(c) = &mut constraint {
                // Close the output before max_tokens or the context cuts it off.
                let left = self.n_ctx().saturating_sub(self.tokens.len());
                let budget = params.max_tokens.map_or(left, |m| left.min(m - generated));
                c.mask_within(&mut logits, Some(budget))?;
            }
            let token = sampler.sample(&mut logits, &self.tokens)?;
            if let Some(c) = &mut constraint
                && !self.tokenizer.is_eog(token)
            {
                c.commit(token)?;
            }
            generated += 1;
            if !params.ignore_eos && self.tokenizer.is_eog(token) {
                break FinishReason::Stop;
            }
            let piece = decoder.push(&self.tokenizer, token);
            let (emit, hit) = stop.push(&piece);
            if !emit.is_empty() {
                on_text(&emit);
            }
            if hit {
                stop_string_hit = true;
                break FinishReason::Stop;
            }
            if self.cache.len() >= self.cache.n_ctx() {
                break FinishReason::ContextFull;
            }
            logits = self.step(token)?;
        };
        // Text held back as a possible stop-string start is real output unless a stop
        // string actually matched.
        if !stop_string_hit {
            let rest = stop.finish(&decoder.finish());
            if !rest.is_empty() {
                on_text(&rest);
            }
        }
        Ok(GenerateStats {
            prompt_tokens: prompt.len(),
            cached_tokens: cached,
            generated_tokens: generated,
            prefill_time,
            decode_time: decode_start.elapsed(),
            finish_reason: finish,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Engine, LoadOptions};

    fn engine() -> Option<Engine> {
        match thaw_hub::ensure_model("smollm2") {
            Ok(p) => Some(Engine::load(p, &LoadOptions { threads: 0 }).unwrap()),
            Err(e) => {
                eprintln!("skipped: smollm2 unavailable: {e}");
                None
            }
        }
    }

    /// A prompt of more than one chunk: text of `n` distinct-ish tokens.
    fn long_prompt(engine: &Engine, n: usize) -> Vec<u32> {
        let text: String = (0..n).map(|i| format!("{i} ")).collect();
        let mut t = engine.text_tokens(&text, false).unwrap();
        t.truncate(n);
        assert_eq!(t.len(), n);
        t
    }

    /// The prompt is fed in the chunks `Model::forward` uses: the K/V equals one
    /// `prefill` bit for bit, and a cancel flag set before generating stops after
    /// the first chunk, with nothing generated.
    #[test]
    fn prefill_is_chunked_as_forward_and_cancellable_between_chunks() {
        let Some(engine) = engine() else { return };
        let prompt = long_prompt(&engine, MAX_BATCH + 150);
        let params = GenerateParams {
            max_tokens: Some(0),
            ..GenerateParams::default()
        };

        // The reference: the model's own forward over the whole prompt.
        let mut whole = engine.session(2048).unwrap();
        let want = whole
            .model
            .forward(&whole.pool, &mut whole.cache, &prompt, Logits::Last)
            .unwrap();
        let mut chunked = engine.session(2048).unwrap();
        let stats = chunked.generate(&prompt, &params, None, |_| {}).unwrap();
        assert_eq!(stats.finish_reason, FinishReason::Length);
        assert_eq!(chunked.tokens(), &prompt[..]);
        assert!(chunked.export_kv() == whole.export_kv(), "K/V differ");
        let mut fresh = engine.session(2048).unwrap();
        let (got, reused) = fresh.prefill(&prompt).unwrap();
        assert_eq!(reused, 0);
        assert!(got == want, "prefill logits differ from one forward");
        assert!(fresh.export_kv() == whole.export_kv(), "K/V differ");

        let cancel = AtomicBool::new(true);
        let mut s = engine.session(2048).unwrap();
        let mut text = String::new();
        let params = GenerateParams::default();
        let stats = s
            .generate(&prompt, &params, Some(&cancel), |p| text.push_str(p))
            .unwrap();
        assert_eq!(stats.finish_reason, FinishReason::Cancelled);
        assert_eq!(stats.generated_tokens, 0);
        assert!(text.is_empty());
        assert_eq!(s.tokens(), &prompt[..MAX_BATCH], "stopped after one chunk");
        // The session stays usable: the next prompt reuses the chunk computed.
        cancel.store(false, Ordering::Relaxed);
        let params = GenerateParams {
            max_tokens: Some(0),
            ..GenerateParams::default()
        };
        let stats = s.generate(&prompt, &params, Some(&cancel), |_| {}).unwrap();
        assert_eq!(stats.cached_tokens, MAX_BATCH);
        assert!(
            s.export_kv() == whole.export_kv(),
            "K/V differ after resuming"
        );
    }
}
