//! `KvCache::copy_prefix`: the first n positions of another cache, copied or (for a
//! stored prefix it covers) shared, give the same K/V as the source and the same
//! logits afterwards as computing them.

mod common;

use std::sync::Arc;

use common::Spec;
use thaw_kernels::ThreadPool;
use thaw_models::{KvSource, Logits, Model};

struct Bytes(Vec<u8>);

impl KvSource for Bytes {
    fn kv_bytes(&self) -> &[u8] {
        &self.0
    }
}

#[test]
fn copied_prefixes_equal_their_source() {
    let model = Model::load(&common::model_file(&Spec::llama(), 5)).unwrap();
    let pool = ThreadPool::new(2);
    let toks: Vec<u32> = (0..20).map(|i| (i * 7 + 2) % 67).collect();
    // A source computed directly, and one reading its first 8 positions from a
    // stored prefix.
    let mut plain = model.new_cache(64).unwrap();
    model
        .forward(&pool, &mut plain, &toks[..12], Logits::None)
        .unwrap();
    let mut stored = model.new_cache(64).unwrap();
    stored
        .share(Arc::new(Bytes(plain.export(8))), 8)
        .expect("share");
    model
        .forward(&pool, &mut stored, &toks[8..12], Logits::None)
        .unwrap();
    assert_eq!(stored.shared_len(), 8);
    for src in [&plain, &stored] {
        for n in [0, 5, 8, 12] {
            let mut dst = model.new_cache(32).unwrap();
            dst.copy_prefix(src, n).unwrap();
            assert_eq!(dst.len(), n);
            assert_eq!(dst.export(n), plain.export(n), "n {n}");
            // Going on from the copy computes what going on from the source does.
            let mut a = model.new_cache(64).unwrap();
            a.copy_prefix(&plain, n).unwrap();
            let want = model
                .forward(&pool, &mut a, &toks[n..16], Logits::Last)
                .unwrap();
            let got = model
                .forward(&pool, &mut dst, &toks[n..16], Logits::Last)
                .unwrap();
            assert!(
                want.iter()
                    .zip(&got)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "n {n}"
            );
        }
    }
    // More positions than the source holds, or another shape: an error, not a panic.
    let mut dst = model.new_cache(32).unwrap();
    assert!(dst.copy_prefix(&plain, 13).is_err());
    let other = Model::load(&common::model_file(&Spec::qwen3(), 5)).unwrap();
    let mut wrong = other.new_cache(32).unwrap();
    assert!(wrong.copy_prefix(&plain, 4).is_err());
}
