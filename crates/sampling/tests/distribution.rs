//! Empirical frequencies of many draws against the exact distribution.

use thaw_sampling::{Sampler, SamplerConfig};

/// Chi-square statistic of `counts` against probabilities `p` (all p > 0).
fn chi_square(counts: &[usize], p: &[f64]) -> f64 {
    let n: usize = counts.iter().sum();
    counts
        .iter()
        .zip(p)
        .map(|(&c, &p)| {
            let e = p * n as f64;
            (c as f64 - e).powi(2) / e
        })
        .sum()
}

fn draw(config: SamplerConfig, logits: &[f32], n: usize) -> Vec<usize> {
    let mut s = Sampler::new(config).unwrap();
    let mut counts = vec![0; logits.len()];
    for _ in 0..n {
        counts[s.sample(&mut logits.to_vec(), &[]).unwrap() as usize] += 1;
    }
    counts
}

fn softmax(x: &[f64]) -> Vec<f64> {
    let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = x.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

// Bound: for 5 categories and a correct sampler the statistic follows chi-square with 4
// degrees of freedom; P(chi2_4 > 23.5) ≈ 1e-4, so a correct sampler fails for fewer than 1 in
// 10,000 seeds (the seeds are fixed, so the test is deterministic). The errors this guards
// against (temperature applied wrongly or not at all, wrong normalisation, off-by-one in the
// draw) shift expected counts by hundreds out of 20,000 and give chi2 in the hundreds.
const CHI2_4DF_P1E4: f64 = 23.5;

#[test]
fn frequencies_match_softmax_with_temperature() {
    let logits = [1.0f32, 2.0, 0.5, -1.0, 1.5];
    for (temperature, seed) in [(1.0f32, 11u64), (0.7, 12), (1.8, 13)] {
        let config = SamplerConfig {
            temperature,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: Some(seed),
            ..SamplerConfig::default()
        };
        let counts = draw(config, &logits, 20_000);
        let p = softmax(
            &logits
                .iter()
                .map(|&l| l as f64 / temperature as f64)
                .collect::<Vec<_>>(),
        );
        let chi2 = chi_square(&counts, &p);
        assert!(
            chi2 < CHI2_4DF_P1E4,
            "T={temperature}: chi2={chi2:.1} counts={counts:?} p={p:?}"
        );
    }
}

#[test]
fn frequencies_after_filters_are_renormalised() {
    // 7 tokens; top-k 5 drops the two smallest, then temperature 0.8 over the rest.
    let logits = [0.2f32, 1.0, -3.0, 2.0, 0.5, -2.5, 1.5];
    let config = SamplerConfig {
        temperature: 0.8,
        top_k: 5,
        top_p: 1.0,
        min_p: 0.0,
        seed: Some(5),
        ..SamplerConfig::default()
    };
    let counts = draw(config, &logits, 20_000);
    assert_eq!(
        counts[2] + counts[5],
        0,
        "filtered tokens drawn: {counts:?}"
    );
    let kept = [0usize, 1, 3, 4, 6];
    let p = softmax(
        &kept
            .iter()
            .map(|&i| logits[i] as f64 / 0.8)
            .collect::<Vec<_>>(),
    );
    let kept_counts: Vec<usize> = kept.iter().map(|&i| counts[i]).collect();
    let chi2 = chi_square(&kept_counts, &p);
    assert!(chi2 < CHI2_4DF_P1E4, "chi2={chi2:.1} counts={counts:?}");
}
