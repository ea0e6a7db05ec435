//! Attention primitives: the active (SIMD where the CPU has it) kernels against their
//! scalar references, bit for bit, on random data of odd shapes. Bit equality is the
//! requirement, not a tolerance: llama.cpp parity depends on the exact rounding.

mod common;

use common::Rng;
use half::f16;
use thaw_kernels::attn::{self, F16Sum, QueryWeights};

fn halves(rng: &mut Rng, n: usize, scale: f32) -> Vec<f16> {
    (0..n).map(|_| f16::from_f32(rng.f32() * scale)).collect()
}

fn query(rng: &mut Rng, n: usize) -> Vec<f32> {
    halves(rng, n, 3.0).iter().map(|h| h.to_f32()).collect()
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn these_tests_pass_in_every_kernel_set() {
    thaw_kernels::rerun_tests_in_other_kernel_sets(&[
        "--skip",
        "these_tests_pass_in_every_kernel_set",
    ]);
}

#[test]
fn scores_match_scalar_bit_for_bit() {
    let mut rng = Rng(11);
    for order in [F16Sum::TinyBlas, F16Sum::VecDot] {
        for hd in [16usize, 64, 128, 192, 256] {
            if !hd.is_multiple_of(order.lanes()) {
                continue;
            }
            for n_keys in [1, 3, 4, 5, 16, 17, 35, 130] {
                let q = query(&mut rng, hd);
                let keys = halves(&mut rng, n_keys * hd, 4.0);
                let (mut got, mut want) = (vec![0.0; n_keys], vec![0.0; n_keys]);
                attn::f16_scores(&q, &keys, order, 0.125, &mut got);
                attn::f16_scores_scalar(&q, &keys, order, 0.125, &mut want);
                assert_eq!(bits(&got), bits(&want), "{order:?} hd {hd} keys {n_keys}");
            }
        }
    }
}

#[test]
fn scores_of_many_queries_match_scalar_bit_for_bit() {
    // Blocks of queries against shared keys: query counts around the 4-query tile,
    // key counts around the 4-key tile and the widened block, and a row stride
    // wider than the keys (the caller's score matrix).
    let mut rng = Rng(15);
    for order in [F16Sum::TinyBlas, F16Sum::VecDot] {
        for hd in [16usize, 64, 128, 256] {
            if !hd.is_multiple_of(order.lanes()) {
                continue;
            }
            for m in [1, 3, 4, 5, 9] {
                for n_keys in [1, 3, 4, 7, 63, 64, 65, 130] {
                    let stride = n_keys + 3;
                    let q = query(&mut rng, m * hd);
                    let keys = halves(&mut rng, n_keys * hd, 4.0);
                    let (mut got, mut want) = (vec![f32::NAN; m * stride], vec![0.0; m * stride]);
                    attn::f16_scores_many(&q, &keys, hd, order, 0.125, &mut got, stride);
                    attn::f16_scores_many_scalar(&q, &keys, hd, order, 0.125, &mut want, stride);
                    for i in 0..m {
                        let (g, w) = (&got[i * stride..][..n_keys], &want[i * stride..][..n_keys]);
                        assert_eq!(bits(g), bits(w), "{order:?} hd {hd} m {m} keys {n_keys}");
                        // Each row is the single-query kernel's.
                        let mut one = vec![0.0; n_keys];
                        attn::f16_scores_scalar(&q[i * hd..][..hd], &keys, order, 0.125, &mut one);
                        assert_eq!(bits(g), bits(&one));
                    }
                }
            }
        }
    }
}

/// Attention weights of queries over `n` positions, each row a softmax over its own
/// range (zero elsewhere), rounded to f16 as ggml rounds them before the weighted sum.
fn query_weights(rng: &mut Rng, rows: &[std::ops::Range<usize>], n: usize) -> Vec<f32> {
    let mut w: Vec<f32> = (0..rows.len() * n).map(|_| rng.f32().abs()).collect();
    for (row, r) in w.chunks_exact_mut(n).zip(rows) {
        if !r.is_empty() {
            attn::softmax_scalar(&mut row[r.clone()]);
        }
    }
    attn::round_f16_slice_scalar(&mut w);
    w
}

#[test]
fn accumulate_with_per_query_rows_matches_weighted_sum_bit_for_bit() {
    // Causal and sliding-window masks: each query adds its own range of the shared
    // value rows; the result is the one-query weighted sum over that range.
    let mut rng = Rng(16);
    for order in [F16Sum::TinyBlas, F16Sum::VecDot] {
        let lanes = order.lanes();
        for hd in [8usize, 64, 256] {
            for (n, first) in [(40, 0), (150, 9), (700, 3)] {
                let rows: Vec<_> = [
                    (0, n),
                    (0, n - 1),
                    (5, n - 20),
                    (n / 2, n),
                    (17, 18),
                    (3, 3),
                ]
                .iter()
                .map(|&(a, b)| a..b)
                .collect();
                let m = rows.len();
                let w = query_weights(&mut rng, &rows, n);
                let vals = halves(&mut rng, n * hd, 2.0);
                let qw = QueryWeights {
                    w: &w,
                    stride: n,
                    rows: &rows,
                };
                let (mut acc, mut acc_ref) = (vec![0.0; m * lanes * hd], vec![0.0; m * lanes * hd]);
                attn::f16_accumulate(&qw, &vals, hd, first, order, &mut acc);
                attn::f16_accumulate_scalar(&qw, &vals, hd, first, order, &mut acc_ref);
                assert_eq!(bits(&acc), bits(&acc_ref), "{order:?} hd {hd} n {n}");
                for (i, r) in rows.iter().enumerate() {
                    let mut got = vec![0.0; hd];
                    attn::f16_reduce_lanes(&acc[i * lanes * hd..], order, &mut got);
                    let (mut want, mut scratch) = (vec![0.0; hd], vec![0.0; lanes * hd]);
                    attn::f16_weighted_sum_scalar(
                        &w[i * n..][r.clone()],
                        &vals[r.start * hd..r.end * hd],
                        first + r.start,
                        order,
                        &mut scratch,
                        &mut want,
                    );
                    assert_eq!(
                        bits(&got),
                        bits(&want),
                        "{order:?} hd {hd} n {n} rows {r:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn accumulate_for_runs_of_queries_matches_scalar_bit_for_bit() {
    // A chat turn's query rows: `heads` heads per token over a causal range that grows
    // by one row per token (runs of 2, 4 and 8 queries share the value loads), and
    // a sliding window that cuts the front off, at every head_dim tile shape.
    let mut rng = Rng(18);
    for hd in [16usize, 32, 48, 64, 128] {
        for (n, first, heads, window) in [
            (40, 0, 3, None),
            (300, 5, 3, None),
            (300, 0, 1, Some(100)),
            (1221, 0, 3, None),
            (90, 11, 4, Some(30)),
        ] {
            for tokens in [1usize, 2, 3, 6, 11] {
                let rows: Vec<_> = (0..tokens)
                    .flat_map(|t| {
                        let end = n - tokens + t + 1;
                        let start = window.map_or(0, |w: usize| end.saturating_sub(w));
                        std::iter::repeat_n(start..end, heads)
                    })
                    .collect();
                let m = rows.len();
                let w = query_weights(&mut rng, &rows, n);
                let vals = halves(&mut rng, n * hd, 2.0);
                let qw = QueryWeights {
                    w: &w,
                    stride: n,
                    rows: &rows,
                };
                let order = F16Sum::TinyBlas;
                let lanes = order.lanes();
                let (mut acc, mut acc_ref) = (vec![0.0; m * lanes * hd], vec![0.0; m * lanes * hd]);
                attn::f16_accumulate(&qw, &vals, hd, first, order, &mut acc);
                attn::f16_accumulate_scalar(&qw, &vals, hd, first, order, &mut acc_ref);
                assert_eq!(
                    bits(&acc),
                    bits(&acc_ref),
                    "hd {hd} n {n} first {first} heads {heads} window {window:?} tokens {tokens}"
                );
            }
        }
    }
}

#[test]
fn weighted_sum_matches_scalar_bit_for_bit() {
    let mut rng = Rng(12);
    for order in [F16Sum::TinyBlas, F16Sum::VecDot] {
        // 40 and 12 are not multiples of 8 (the scalar path inside the dispatcher).
        for hd in [8, 12, 40, 64, 256] {
            for (n, first) in [
                (1, 0),
                (5, 3),
                (16, 0),
                (17, 15),
                (64, 1),
                (65, 63),
                (300, 7),
            ] {
                let mut w: Vec<f32> = (0..n).map(|_| rng.f32().abs()).collect();
                attn::softmax_scalar(&mut w);
                let vals = halves(&mut rng, n * hd, 2.0);
                let mut acc = vec![f32::NAN; order.lanes() * hd];
                let (mut got, mut want) = (vec![0.0; hd], vec![0.0; hd]);
                attn::f16_weighted_sum(&w, &vals, first, order, &mut acc, &mut got);
                attn::f16_weighted_sum_scalar(&w, &vals, first, order, &mut acc, &mut want);
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "{order:?} hd {hd} n {n} first {first}"
                );
            }
        }
    }
}

#[test]
fn accumulate_over_split_ranges_matches_weighted_sum_bit_for_bit() {
    // A stored prefix read in place and the session's own cache: the weighted sum
    // accumulated over two consecutive slot ranges, for one and several queries,
    // against the one-range kernel and the scalar reference.
    let mut rng = Rng(14);
    for order in [F16Sum::TinyBlas, F16Sum::VecDot] {
        let lanes = order.lanes();
        for hd in [8, 12, 64, 256] {
            for (n, first, split) in [
                (1, 0, 0),
                (5, 3, 2),
                (17, 15, 16),
                (65, 63, 1),
                (300, 7, 290),
                (1100, 5, 1000),
            ] {
                // One query (attention's path: register-resident lanes for whole groups
                // of 16 slots) and several.
                for m in [1, 3] {
                    let mut w: Vec<f32> = (0..m * n).map(|_| rng.f32().abs()).collect();
                    for row in w.chunks_exact_mut(n) {
                        attn::softmax_scalar(row);
                    }
                    let mut rounded = w.clone();
                    attn::round_f16_slice(&mut rounded);
                    let mut want_round = w.clone();
                    attn::round_f16_slice_scalar(&mut want_round);
                    assert_eq!(bits(&rounded), bits(&want_round));
                    let vals = halves(&mut rng, n * hd, 2.0);
                    let mut acc = vec![0.0; m * lanes * hd];
                    let mut acc_ref = vec![0.0; m * lanes * hd];
                    for r in [0..split, split..n] {
                        let (wr, vr) = (&rounded[r.start..], &vals[r.start * hd..r.end * hd]);
                        let rows = vec![0..r.len(); m];
                        let qw = QueryWeights {
                            w: wr,
                            stride: n,
                            rows: &rows,
                        };
                        attn::f16_accumulate(&qw, vr, hd, first + r.start, order, &mut acc);
                        let a = &mut acc_ref;
                        attn::f16_accumulate_scalar(&qw, vr, hd, first + r.start, order, a);
                    }
                    assert_eq!(bits(&acc), bits(&acc_ref), "{order:?} hd {hd} n {n}");
                    for i in 0..m {
                        let mut got = vec![0.0; hd];
                        attn::f16_reduce_lanes(&acc[i * lanes * hd..], order, &mut got);
                        let (mut want, mut scratch) = (vec![0.0; hd], vec![0.0; lanes * hd]);
                        let wi = &w[i * n..(i + 1) * n];
                        attn::f16_weighted_sum_scalar(
                            wi,
                            &vals,
                            first,
                            order,
                            &mut scratch,
                            &mut want,
                        );
                        assert_eq!(bits(&got), bits(&want), "{order:?} hd {hd} n {n} query {i}");
                    }
                }
            }
        }
    }
}

#[test]
fn accumulate_by_lanes_adds_up_to_the_whole_bit_for_bit() {
    // A single token's weighted sum split across tasks by accumulator lanes: each
    // part against its scalar reference, and the parts together against the whole.
    let mut rng = Rng(16);
    for order in [F16Sum::TinyBlas, F16Sum::VecDot] {
        let lanes = order.lanes();
        let splits: Vec<Vec<std::ops::Range<usize>>> = match order {
            F16Sum::TinyBlas => vec![vec![0..16]],
            F16Sum::VecDot => vec![vec![0..32, 32..64], vec![0..16, 16..48, 48..64]],
        };
        for hd in [8, 12, 64, 256] {
            for (n, first) in [(1, 0), (40, 3), (130, 63), (700, 5), (1300, 100)] {
                for m in [1, 3, 5] {
                    let mut w: Vec<f32> = (0..m * n).map(|_| rng.f32().abs()).collect();
                    for row in w.chunks_exact_mut(n) {
                        attn::softmax_slots_f16_scalar(row, first);
                    }
                    let vals = halves(&mut rng, n * hd, 2.0);
                    // Rows that start and end at different places (causal queries).
                    let rows: Vec<_> = (0..m)
                        .map(|i| {
                            let end = n - i.min(n - 1);
                            (i * n / 7).min(end)..end
                        })
                        .collect();
                    let qw = QueryWeights {
                        w: &w,
                        stride: n,
                        rows: &rows,
                    };
                    let mut whole = vec![0.0; m * lanes * hd];
                    attn::f16_accumulate(&qw, &vals, hd, first, order, &mut whole);
                    for split in &splits {
                        let mut joined = vec![0.0; m * lanes * hd];
                        for keep in split {
                            let mut got = vec![0.0; m * lanes * hd];
                            let mut want = vec![0.0; m * lanes * hd];
                            let k = keep.clone();
                            attn::f16_accumulate_lanes(&qw, &vals, hd, first, order, k, &mut got);
                            let (k, a) = (keep.clone(), &mut want);
                            attn::f16_accumulate_lanes_scalar(&qw, &vals, hd, first, order, k, a);
                            let what = format!("{order:?} hd {hd} n {n} m {m} lanes {keep:?}");
                            assert_eq!(bits(&got), bits(&want), "{what}");
                            for (i, l) in (0..m).flat_map(|i| keep.clone().map(move |l| (i, l))) {
                                let at = (i * lanes + l) * hd..(i * lanes + l + 1) * hd;
                                joined[at.clone()].copy_from_slice(&got[at]);
                            }
                        }
                        assert_eq!(bits(&joined), bits(&whole), "{order:?} hd {hd} n {n} m {m}");
                    }
                }
            }
        }
    }
}

#[test]
fn f16_view_reads_little_endian_bytes_in_place() {
    let x = [f16::from_f32(1.5), f16::from_f32(-2.0), f16::from_f32(0.25)];
    let bytes: Vec<u8> = x.iter().flat_map(|h| h.to_bits().to_le_bytes()).collect();
    // Bytes at an even and at an odd address.
    let mut buf = [0u8; 8];
    let at = buf.as_ptr().align_offset(2);
    buf[at..at + 6].copy_from_slice(&bytes);
    assert_eq!(attn::f16_view(&buf[at..at + 6]).unwrap(), &x);
    assert!(attn::f16_view(&buf[at + 1..at + 7]).is_none());
    assert!(attn::f16_view(&buf[at..at + 5]).is_none());
}

#[test]
fn weighted_sum_uses_ggml_lane_order() {
    // One value per slot except slot 0, which gets two: lane order decides the
    // rounding, so compare with an explicit 16-lane sum.
    let hd = 8;
    let w = [1.0f32, 2.0f32.powi(-12), 0.5];
    let mut vals = vec![f16::ZERO; 3 * hd];
    vals[0] = f16::from_f32(1.0);
    vals[hd] = f16::from_f32(1.0);
    vals[2 * hd] = f16::from_f32(1.0);
    let mut acc = vec![0.0; 16 * hd];
    let mut out = vec![0.0; hd];
    // Slots 15, 0, 1: lanes 15 (1.0), 0 (2^-12), 1 (0.5).
    attn::f16_weighted_sum(&w, &vals, 15, F16Sum::TinyBlas, &mut acc, &mut out);
    let mut l = [0.0f32; 16];
    l[15] = 1.0;
    l[0] = 2.0f32.powi(-12);
    l[1] = 0.5;
    assert_eq!(out[0], F16Sum::TinyBlas.reduce(&l));
    assert!(out[1..].iter().all(|&v| v == 0.0));
}

#[test]
fn softmax_and_swiglu_match_scalar_bit_for_bit() {
    let mut rng = Rng(13);
    for n in [1, 2, 7, 8, 9, 31, 64, 79, 130, 513, 1221] {
        for scale in [0.1f32, 5.0, 60.0] {
            let x = rng.vec(n, scale);
            let (mut got, mut want) = (x.clone(), x.clone());
            attn::softmax(&mut got);
            attn::softmax_scalar(&mut want);
            assert_eq!(bits(&got), bits(&want), "softmax n {n} scale {scale}");
            for first_slot in [3, 16, 509] {
                let (mut got, mut want) = (x.clone(), x.clone());
                attn::softmax_slots(&mut got, first_slot);
                attn::softmax_scalar_slots(&mut want, first_slot);
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "softmax n {n} from slot {first_slot}"
                );
                let (mut got, mut want) = (x.clone(), x.clone());
                attn::softmax_slots_f16(&mut got, first_slot);
                attn::softmax_slots_f16_scalar(&mut want, first_slot);
                assert_eq!(bits(&got), bits(&want), "rounded, n {n} slot {first_slot}");
            }
            let up = rng.vec(n, 2.0);
            let (mut got, mut want) = (x.clone(), x.clone());
            attn::swiglu(&mut got, &up);
            attn::swiglu_scalar(&mut want, &up);
            assert_eq!(bits(&got), bits(&want), "swiglu n {n} scale {scale}");
        }
    }
    // Saturation and masked (-inf) entries.
    let x = vec![
        0.0,
        f32::NEG_INFINITY,
        -300.0,
        1.0,
        -1e30,
        2.0,
        3.0,
        -90.0,
        0.5,
    ];
    let (mut got, mut want) = (x.clone(), x.clone());
    attn::softmax(&mut got);
    attn::softmax_scalar(&mut want);
    assert_eq!(bits(&got), bits(&want));
    let (mut got, mut want) = (x.clone(), x.clone());
    attn::softmax_slots_f16(&mut got, 5);
    attn::softmax_slots_f16_scalar(&mut want, 5);
    assert_eq!(bits(&got), bits(&want));
    let g = vec![-200.0, -100.0, -88.0, 0.0, 88.0, 100.0, 200.0, 1e-40];
    let (mut got, mut want) = (g.clone(), g.clone());
    attn::swiglu(&mut got, &[1.0; 8]);
    attn::swiglu_scalar(&mut want, &[1.0; 8]);
    assert_eq!(bits(&got), bits(&want));
}

#[test]
fn expf_is_within_two_ulp_of_exp() {
    let mut x = -100.0f32;
    while x < 88.0 {
        let (got, want) = (attn::ggml_expf(x), f64::from(x).exp());
        let ulp = f64::from(f32::EPSILON) * want;
        assert!(
            (f64::from(got) - want).abs() <= 2.0 * ulp.max(f64::from(f32::MIN_POSITIVE)),
            "expf({x}) = {got}, want {want}"
        );
        x += 0.0137;
    }
    assert_eq!(attn::ggml_expf(0.0), 1.0);
    assert_eq!(attn::ggml_expf(-1000.0), 0.0);
    assert_eq!(attn::ggml_expf(1000.0), f32::INFINITY);
}

/// ggml's AVX-512 softmax sums the exps per aligned group of 16 cache slots in f32,
/// then the groups in f64: the grouping follows the slots, not the row.
#[test]
fn softmax_sum_groups_follow_cache_slots() {
    let x: Vec<f32> = (0..40).map(|i| 1.0 + (i as f32) * 1e-3).collect();
    let group = |v: &[f32]| -> f32 {
        let mut l = [0.0f32; 16];
        l[..v.len()].copy_from_slice(v);
        let t8: Vec<f32> = (0..8).map(|i| l[i] + l[i + 8]).collect();
        let t4: Vec<f32> = (0..4).map(|i| t8[i] + t8[i + 4]).collect();
        (t4[0] + t4[2]) + (t4[1] + t4[3])
    };
    // Slots 5..45: groups 5..16, 16..32, 32..45 (lanes 5.., 0.., 0..).
    let mut first = [0.0f32; 16];
    first[5..].copy_from_slice(&x[..11]);
    let want = f64::from(group(&first)) + f64::from(group(&x[11..27])) + f64::from(group(&x[27..]));
    assert_eq!(attn::slot_sum(&x, 5), want);
    let want0 =
        f64::from(group(&x[..16])) + f64::from(group(&x[16..32])) + f64::from(group(&x[32..]));
    assert_eq!(attn::slot_sum(&x, 0), want0);
}
