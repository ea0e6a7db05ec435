//! Log-probabilities as reported to OpenAI clients.

use thaw_sampling::{SamplingError, logprob_of, logprobs, top_logprobs};

#[test]
fn logprobs_sum_to_one_in_probability_space() {
    for logits in [
        vec![0.0f32, 1.0, 2.0, 3.0],
        vec![1000.0, 999.0, -1000.0],
        vec![-500.0; 50],
        (0..262_144)
            .map(|i| ((i * 7919) % 1000) as f32 * 0.02 - 10.0)
            .collect(),
    ] {
        let lp = logprobs(&logits).unwrap();
        assert!(lp.iter().all(|x| !x.is_nan()));
        let total: f64 = lp.iter().map(|&x| (x as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-4, "sum = {total}");
    }
}

#[test]
fn logprobs_hand_computed() {
    // Two equal logits: ln 0.5 each. Shifting all logits changes nothing.
    let lp = logprobs(&[3.0, 3.0]).unwrap();
    assert!((lp[0] - 0.5f32.ln()).abs() < 1e-6);
    let a = logprobs(&[1.0, 2.0, 3.0]).unwrap();
    let b = logprobs(&[101.0, 102.0, 103.0]).unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-5);
    }
    // ln(e^3 / (e + e^2 + e^3))
    let want = (3.0f64 - (1f64.exp() + 2f64.exp() + 3f64.exp()).ln()) as f32;
    assert!((a[2] - want).abs() < 1e-6);
}

#[test]
fn nan_logits_have_zero_probability() {
    let lp = logprobs(&[f32::NAN, 0.0, 0.0]).unwrap();
    assert_eq!(lp[0], f32::NEG_INFINITY);
    assert!((lp[1] - 0.5f32.ln()).abs() < 1e-6);
    assert_eq!(
        logprobs(&[f32::NAN, f32::NEG_INFINITY]),
        Err(SamplingError::NoValidLogits)
    );
    assert_eq!(logprobs(&[]), Err(SamplingError::EmptyLogits));
}

#[test]
fn top_logprobs_are_sorted_and_consistent() {
    let logits = [0.5f32, 2.0, f32::NAN, 2.0, -1.0, 1.0];
    let all = logprobs(&logits).unwrap();
    let top = top_logprobs(&logits, 3).unwrap();
    let ids: Vec<u32> = top.iter().map(|x| x.0).collect();
    // Ties at 2.0 → lower id first.
    assert_eq!(ids, vec![1, 3, 5]);
    for &(id, lp) in &top {
        assert!((lp - all[id as usize]).abs() < 1e-6);
        assert!((lp - logprob_of(&logits, id).unwrap()).abs() < 1e-6);
    }
    // k beyond the vocabulary lists every non-NaN token; k = 0 lists none.
    assert_eq!(top_logprobs(&logits, 100).unwrap().len(), 5);
    assert!(top_logprobs(&logits, 0).unwrap().is_empty());
    assert_eq!(logprob_of(&logits, 99).unwrap(), f32::NEG_INFINITY);
    // -inf tokens (probability 0) only fill up `k` after every finite one.
    let with_ban = [0.0f32, f32::NEG_INFINITY, 1.0];
    let top = top_logprobs(&with_ban, 3).unwrap();
    assert_eq!(top.iter().map(|x| x.0).collect::<Vec<_>>(), vec![2, 0, 1]);
    assert_eq!(top[2].1, f32::NEG_INFINITY);
    assert_eq!(top_logprobs(&with_ban, 2).unwrap().len(), 2);
}
