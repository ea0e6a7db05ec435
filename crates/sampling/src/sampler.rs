//! The sampling chain.

use std::cmp::Ordering;
use std::collections::HashMap;

use crate::math::det_exp;
use crate::penalties::{apply_logit_bias, apply_penalties_with};
use crate::rng::{Xoshiro256StarStar, os_seed};
use crate::select::{collect_top, desc};
use crate::{SamplerConfig, SamplingError};

/// One surviving token during filtering.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    id: u32,
    logit: f32,
    /// `exp(logit - max)`; filled once the candidate set is fixed by top-k.
    w: f64,
}

fn by_logit_desc(a: &Candidate, b: &Candidate) -> Ordering {
    desc((a.id, a.logit), (b.id, b.logit))
}

/// First prefix chunk sorted by top-p; doubled each round so the work stays O(V) for the
/// common peaked distribution and O(V log V) only in the worst case.
const TOP_P_FIRST_CHUNK: usize = 64;

/// Draws next tokens from logits according to a [`SamplerConfig`]. Holds the RNG and scratch
/// buffers, so keep one per generation stream.
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplerConfig,
    rng: Xoshiro256StarStar,
    cands: Vec<Candidate>,
    counts: HashMap<u32, u32>,
    window: Vec<u32>,
}

impl Sampler {
    /// Validates `config` and seeds the RNG from `config.seed` (or OS randomness if `None`).
    pub fn new(config: SamplerConfig) -> Result<Sampler, SamplingError> {
        config.validate()?;
        let seed = config.seed.unwrap_or_else(os_seed);
        Ok(Sampler {
            config,
            rng: Xoshiro256StarStar::seed_from_u64(seed),
            cands: Vec::new(),
            counts: HashMap::new(),
            window: Vec::new(),
        })
    }

    /// The settings this sampler was built with.
    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// Restarts the RNG as if the sampler had been built with `seed`.
    pub fn reseed(&mut self, seed: u64) {
        self.rng = Xoshiro256StarStar::seed_from_u64(seed);
    }

    /// Picks the next token.
    ///
    /// `logits` is modified in place (bias and penalties are applied to it); take
    /// [`logprobs`](crate::logprobs) from the model's logits *before* calling this.
    /// `history` is the token sequence the penalties look at (see
    /// [`apply_penalties`](crate::apply_penalties)).
    ///
    /// NaN and -inf logits are never chosen. If some logits are +inf, the choice is among
    /// those only (uniformly when sampling). Errors if `logits` is empty, a `logit_bias` id is
    /// out of range, or no logit is usable.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> Result<u32, SamplingError> {
        if logits.is_empty() {
            return Err(SamplingError::EmptyLogits);
        }
        apply_logit_bias(logits, &self.config.logit_bias)?;
        apply_penalties_with(
            logits,
            history,
            &self.config,
            &mut self.counts,
            &mut self.window,
        );
        if self.config.temperature <= 0.0 {
            return greedy(logits);
        }
        self.collect_candidates(logits)?;
        let weighted = self.filter();
        Ok(self.draw(weighted))
    }

    /// Fills `cands` with the usable tokens, already cut to top-k when it is on. If any logit
    /// is +inf, only those are candidates (as equal logits 0.0), since a softmax over +inf is
    /// undefined.
    fn collect_candidates(&mut self, logits: &[f32]) -> Result<(), SamplingError> {
        let make = |id, logit| Candidate { id, logit, w: 0.0 };
        if logits.contains(&f32::INFINITY) {
            self.cands.clear();
            self.cands.extend(
                (0..logits.len() as u32)
                    .filter(|&i| logits[i as usize] == f32::INFINITY)
                    .map(|i| make(i, 0.0)),
            );
        } else {
            collect_top(logits, self.config.top_k, &mut self.cands, make, |c| {
                (c.id, c.logit)
            });
        }
        if self.cands.is_empty() {
            return Err(SamplingError::NoValidLogits);
        }
        Ok(())
    }

    /// top-p → min-p on `cands` (non-empty, already cut to top-k), leaving the survivors in
    /// `cands`. Returns whether their `w` holds `exp(logit - max)` (skipped when no filter
    /// needs it).
    fn filter(&mut self) -> bool {
        let cfg = &self.config;
        let c = &mut self.cands;
        if cfg.top_p >= 1.0 && cfg.min_p <= 0.0 {
            return false;
        }

        // Weights relative to the max; the normaliser is over the post-top-k set, as top-p's
        // softmax is in llama.cpp.
        let max = c.iter().map(|x| x.logit).fold(f32::NEG_INFINITY, f32::max) as f64;
        let mut z = 0.0f64;
        for x in c.iter_mut() {
            x.w = det_exp(x.logit as f64 - max);
            z += x.w;
        }

        // min-p keeps p_i >= min_p * p_max, i.e. w_i >= min_p (normalisation cancels, so it is
        // the same before or after top-p's cut). The kept set is a top-by-logit prefix, so
        // top-p then min-p = the shorter of the two prefixes. Partitioning by min-p first lets
        // top-p sort only inside the min-p set.
        let mut kept = c.len();
        if cfg.min_p > 0.0 {
            let min_p = cfg.min_p as f64;
            kept = partition_in_place(c, |x| x.w >= min_p);
        }
        if cfg.top_p < 1.0 {
            let target = cfg.top_p as f64 * z;
            let mass: f64 = c[..kept].iter().map(|x| x.w).sum();
            if mass >= target {
                // top-p's cut falls inside the min-p set.
                kept = top_p_prefix(&mut c[..kept], target);
            }
        }
        c.truncate(kept.max(1));
        true
    }

    /// Temperature, softmax and one draw from the survivors in `cands`; `weighted` says
    /// whether `w` already holds `exp(logit - max)`.
    fn draw(&mut self, weighted: bool) -> u32 {
        let c = &mut self.cands;
        let t = self.config.temperature as f64;
        // The max always survives filtering, so it is the max of `c` too; temperature 1 keeps w.
        if t != 1.0 || !weighted {
            let max = c.iter().map(|x| x.logit).fold(f32::NEG_INFINITY, f32::max) as f64;
            for x in c.iter_mut() {
                x.w = det_exp((x.logit as f64 - max) / t);
            }
        }
        let total: f64 = c.iter().map(|x| x.w).sum();
        let u = self.rng.next_f64() * total;
        let mut cum = 0.0;
        for x in c.iter() {
            cum += x.w;
            if u < cum {
                return x.id;
            }
        }
        // Rounding can leave u == total: take the last token with any weight.
        c.iter().rev().find(|x| x.w > 0.0).map_or(c[0].id, |x| x.id)
    }
}

/// Argmax ignoring NaN (every comparison with NaN is false); ties go to the lowest id.
fn greedy(logits: &[f32]) -> Result<u32, SamplingError> {
    let mut best = 0;
    let mut best_l = f32::NEG_INFINITY;
    for (i, &l) in logits.iter().enumerate() {
        if l > best_l {
            best = i;
            best_l = l;
        }
    }
    if best_l == f32::NEG_INFINITY {
        return Err(SamplingError::NoValidLogits);
    }
    Ok(best as u32)
}

/// Moves the elements satisfying `keep` to the front (order not preserved); returns how many.
fn partition_in_place(c: &mut [Candidate], keep: impl Fn(&Candidate) -> bool) -> usize {
    let mut n = 0;
    for i in 0..c.len() {
        if keep(&c[i]) {
            c.swap(n, i);
            n += 1;
        }
    }
    n
}

/// Buckets used to locate top-p's cut without sorting a large candidate set.
const TOP_P_BUCKETS: usize = 2048;
/// Below this many candidates, chunked selection alone is cheap enough.
const TOP_P_HISTOGRAM_MIN: usize = 4096;

/// Finds the shortest highest-logit prefix of `c` whose weight reaches `target` (llama.cpp
/// includes the token that crosses it), moves it to the front and returns its length.
///
/// For large sets it first buckets candidates by logit (a monotone map, so ties share a
/// bucket) and sums each bucket's weight in one pass; buckets before the one where the running
/// mass crosses `target` are kept whole, and only that boundary bucket is ordered.
fn top_p_prefix(c: &mut [Candidate], target: f64) -> usize {
    if c.len() < TOP_P_HISTOGRAM_MIN {
        return top_p_sorted_prefix(c, 0.0, target);
    }
    let (mut hi, mut lo) = (f32::NEG_INFINITY, f32::INFINITY);
    for x in c.iter() {
        hi = hi.max(x.logit);
        lo = lo.min(x.logit);
    }
    let range = hi as f64 - lo as f64;
    if range <= 0.0 {
        return top_p_sorted_prefix(c, 0.0, target);
    }
    let scale = (TOP_P_BUCKETS as f64) / range;
    let bucket =
        |x: &Candidate| (((hi as f64 - x.logit as f64) * scale) as usize).min(TOP_P_BUCKETS - 1);
    let mut mass = [0.0f64; TOP_P_BUCKETS];
    for x in c.iter() {
        mass[bucket(x)] += x.w;
    }
    let mut before = 0.0;
    let mut cut = TOP_P_BUCKETS - 1;
    for (b, &m) in mass.iter().enumerate() {
        if before + m >= target {
            cut = b;
            break;
        }
        before += m;
    }
    let whole = partition_in_place(c, |x| bucket(x) < cut);
    let edge = partition_in_place(&mut c[whole..], |x| bucket(x) == cut);
    whole + top_p_sorted_prefix(&mut c[whole..whole + edge], before, target)
}

/// Sorts just enough of `c` (highest logit first) to find the shortest prefix with
/// `start + weight >= target`; returns its length (all of `c` if never reached). Selection
/// in growing chunks avoids a full sort when the prefix is short.
fn top_p_sorted_prefix(c: &mut [Candidate], start: f64, target: f64) -> usize {
    let n = c.len();
    let mut done = 0;
    let mut cum = start;
    let mut chunk = TOP_P_FIRST_CHUNK;
    while done < n {
        let rest = &mut c[done..];
        let take = chunk.min(rest.len());
        if take < rest.len() {
            rest.select_nth_unstable_by(take - 1, by_logit_desc);
        }
        rest[..take].sort_unstable_by(by_logit_desc);
        for (i, x) in rest[..take].iter().enumerate() {
            cum += x.w;
            if cum >= target {
                return done + i + 1;
            }
        }
        done += take;
        chunk *= 2;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(id: u32, logit: f32) -> Candidate {
        Candidate {
            id,
            logit,
            w: det_exp(logit as f64),
        }
    }

    #[test]
    fn top_p_prefix_across_chunks() {
        // 1000 equal weights: reaching 70% needs exactly 700 tokens, i.e. several chunks.
        let mut c: Vec<_> = (0..1000).map(|i| cand(i, 0.0)).collect();
        assert_eq!(top_p_prefix(&mut c, 700.0), 700);
        // The prefix is the lowest 700 ids (ties → lower id first).
        let mut ids: Vec<u32> = c[..700].iter().map(|x| x.id).collect();
        ids.sort();
        assert_eq!(ids, (0..700).collect::<Vec<_>>());
    }

    #[test]
    fn top_p_prefix_picks_highest() {
        let mut c: Vec<_> = (0..500u32).map(|i| cand(i, -(i as f32) * 0.01)).collect();
        c.reverse();
        let total: f64 = c.iter().map(|x| x.w).sum();
        let k = top_p_prefix(&mut c, 0.5 * total);
        let mut ids: Vec<u32> = c[..k].iter().map(|x| x.id).collect();
        ids.sort();
        assert_eq!(ids, (0..k as u32).collect::<Vec<_>>());
        // Cross-check the length against a plain running sum in id order.
        let mut cum = 0.0;
        let expect = (0..500)
            .position(|i| {
                cum += det_exp(-(i as f64 as f32 * 0.01) as f64);
                cum >= 0.5 * total
            })
            .unwrap()
            + 1;
        assert_eq!(k, expect);
    }

    /// The obvious implementation: full sort, then each filter in llama.cpp's order.
    fn naive_kept(logits: &[f32], top_k: usize, top_p: f64, min_p: f64) -> Vec<u32> {
        let mut v: Vec<Candidate> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| cand(i as u32, l))
            .collect();
        v.sort_by(by_logit_desc);
        if top_k > 0 {
            v.truncate(top_k);
        }
        let max = v[0].logit as f64;
        let w: Vec<f64> = v.iter().map(|x| det_exp(x.logit as f64 - max)).collect();
        let z: f64 = w.iter().sum();
        let mut n = v.len();
        if top_p < 1.0 {
            let mut cum = 0.0;
            n = w
                .iter()
                .position(|&x| {
                    cum += x / z;
                    cum >= top_p
                })
                .map_or(v.len(), |i| i + 1);
        }
        let mut ids: Vec<u32> = v[..n]
            .iter()
            .zip(&w)
            .filter(|(_, w)| **w >= min_p)
            .map(|(x, _)| x.id)
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn filter_matches_naive_full_sort() {
        let mut rng = Xoshiro256StarStar::seed_from_u64(42);
        for case in 0..120 {
            let n = [50, 700, 5000, 30_000][case % 4];
            // Scales from flat (many survivors, many top-p chunks) to peaked.
            let scale = [0.3, 1.0, 3.0, 8.0, 0.05][case % 5];
            let logits: Vec<f32> = (0..n)
                .map(|_| ((rng.next_f64() * 2.0 - 1.0) * scale) as f32)
                .collect();
            let top_k = [0, 1, 10, 40, 100000, 0][case % 6];
            let top_p = [1.0f32, 0.95, 0.5, 0.1][(case / 2) % 4];
            let min_p = [0.0f32, 0.05, 0.3][(case / 3) % 3];
            let mut s = Sampler::new(SamplerConfig {
                temperature: 1.0,
                top_k,
                top_p,
                min_p,
                seed: Some(1),
                ..SamplerConfig::default()
            })
            .unwrap();
            s.collect_candidates(&logits).unwrap();
            let _ = s.filter();
            let mut got: Vec<u32> = s.cands.iter().map(|x| x.id).collect();
            got.sort();
            let want = naive_kept(&logits, top_k, top_p as f64, min_p as f64);
            assert_eq!(
                got, want,
                "case {case}: n={n} k={top_k} p={top_p} min_p={min_p}"
            );
        }
    }
}
