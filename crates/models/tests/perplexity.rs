//! `perplexity` against a direct computation from `Logits::All` on a tiny model.

mod common;

use common::Spec;
use thaw_kernels::ThreadPool;
use thaw_models::{Logits, Model, ModelError, perplexity};

fn manual(model: &Model, pool: &ThreadPool, tokens: &[u32], n_ctx: usize, bos: Option<u32>) -> f64 {
    let n_vocab = model.config().n_vocab;
    let (mut nll, mut count) = (0.0f64, 0);
    for c in 0..tokens.len() / n_ctx {
        let mut chunk = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
        if let Some(b) = bos {
            chunk[0] = b;
        }
        let mut cache = model.new_cache(n_ctx).unwrap();
        let all = model
            .forward(pool, &mut cache, &chunk, Logits::All)
            .unwrap();
        for j in n_ctx / 2..n_ctx - 1 {
            let row = &all[j * n_vocab..(j + 1) * n_vocab];
            let max = row.iter().copied().fold(f32::MIN, f32::max) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&v| (v as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            nll += lse - row[tokens[c * n_ctx + j + 1] as usize] as f64;
            count += 1;
        }
    }
    (nll / count as f64).exp()
}

#[test]
fn perplexity_matches_direct_computation() {
    let pool = ThreadPool::new(2);
    let model = Model::load(&common::model_file(&Spec::llama(), 21)).unwrap();
    let tokens: Vec<u32> = (0..70).map(|i| ((i * i * 7 + 3) % 67) as u32).collect();
    for bos in [None, Some(1)] {
        let mut seen = Vec::new();
        let r = perplexity(&model, &pool, &tokens, 16, bos, |i, n, p| {
            seen.push((i, n, p))
        })
        .unwrap();
        assert_eq!(r.n_chunks, 4);
        assert_eq!(r.n_scored, 4 * 7);
        assert_eq!(seen.len(), 4);
        assert_eq!(seen[3].2, r.perplexity);
        let want = manual(&model, &pool, &tokens, 16, bos);
        assert!(
            (r.perplexity - want).abs() < 1e-6 * want,
            "{} vs {want}",
            r.perplexity
        );
        assert!(r.perplexity > 1.0 && r.perplexity.is_finite());
    }
    // BOS replacement changes the result (the first token is context for the rest).
    let a = perplexity(&model, &pool, &tokens, 16, None, |_, _, _| {}).unwrap();
    let b = perplexity(&model, &pool, &tokens, 16, Some(1), |_, _, _| {}).unwrap();
    assert_ne!(a.perplexity, b.perplexity);
    // Too little text is an error, as in llama.cpp.
    assert!(matches!(
        perplexity(&model, &pool, &tokens[..31], 16, None, |_, _, _| {}),
        Err(ModelError::Perplexity(_))
    ));
}
