//! Streaming top-k selection over a logits slice.

use std::cmp::Ordering;

/// Order used everywhere: higher logit first, then lower id. Inputs never hold NaN here;
/// `partial_cmp` (not `total_cmp`) keeps -0.0 and +0.0 equal so such ties go to the lower id.
pub(crate) fn desc(a: (u32, f32), b: (u32, f32)) -> Ordering {
    b.1.partial_cmp(&a.1)
        .unwrap_or(Ordering::Equal)
        .then(a.0.cmp(&b.0))
}

/// Appends to `out` (cleared first) a superset-free selection of the `k` best usable logits
/// (`> -inf`, not NaN) in arbitrary order — exactly the top `k` by [`desc`], or all usable
/// ones if fewer. `k = 0` means all usable logits.
///
/// Instead of collecting the whole vocabulary and selecting once, it keeps a buffer of at most
/// ~2k entries and a running threshold (the current k-th logit): after the buffer first fills,
/// almost every logit costs one comparison, which is what makes top-k cheap on a 262k
/// vocabulary. Ids arrive in increasing order, so a later logit equal to the threshold loses
/// the tie and can be skipped (strict `>`).
pub(crate) fn collect_top<T>(
    logits: &[f32],
    k: usize,
    out: &mut Vec<T>,
    make: impl Fn(u32, f32) -> T,
    key: impl Fn(&T) -> (u32, f32) + Copy,
) {
    out.clear();
    let cap = if k == 0 {
        usize::MAX
    } else {
        k.saturating_mul(2).max(256)
    };
    let mut threshold = f32::NEG_INFINITY;
    for (i, &l) in logits.iter().enumerate() {
        // False for NaN and -inf.
        if l > threshold {
            out.push(make(i as u32, l));
            if out.len() >= cap {
                out.select_nth_unstable_by(k - 1, |a, b| desc(key(a), key(b)));
                out.truncate(k);
                threshold = key(&out[k - 1]).1;
            }
        }
    }
    if k > 0 && out.len() > k {
        out.select_nth_unstable_by(k - 1, |a, b| desc(key(a), key(b)));
        out.truncate(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_full_sort() {
        let mut x: u64 = 1;
        for (n, k) in [
            (10, 3),
            (1000, 40),
            (5000, 1),
            (5000, 300),
            (3000, 0),
            (20, 50),
        ] {
            // Coarse values (many ties) from a tiny LCG; some NaN and -inf mixed in.
            let logits: Vec<f32> = (0..n)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    match x >> 60 {
                        0 => f32::NAN,
                        1 => f32::NEG_INFINITY,
                        v => ((x >> 33) % 50) as f32 * 0.5 - v as f32,
                    }
                })
                .collect();
            let mut got = Vec::new();
            collect_top(&logits, k, &mut got, |i, l| (i, l), |&p| p);
            got.sort_by(|a, b| desc(*a, *b));
            let mut want: Vec<(u32, f32)> = logits
                .iter()
                .enumerate()
                .filter(|(_, l)| **l > f32::NEG_INFINITY)
                .map(|(i, &l)| (i as u32, l))
                .collect();
            want.sort_by(|a, b| desc(*a, *b));
            if k > 0 {
                want.truncate(k);
            }
            assert_eq!(got, want, "n={n} k={k}");
        }
    }
}
