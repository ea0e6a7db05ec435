//! The weighted sum of attention values (`crate::attn::f16_accumulate`): value rows
//! added into per-query, per-lane accumulators in ggml's order. One control flow
//! (runs of queries that share rows; the rows before, inside and after whole groups of
//! lanes) over two sets of register tiles that keep accumulators in registers across
//! all rows: 16 columns per zmm (AVX-512) and 8 per ymm (AVX2). Every accumulator
//! receives the same FMAs in the same order as row by row, so both give the scalar
//! reference's bits.

use core::arch::x86_64::*;
use core::array::from_fn;
use core::ops::Range;

use half::f16;

use super::attn::{load_h, load_h16};
use crate::attn::QueryWeights;

/// The register tiles of one vector width.
trait Tiles {
    /// Rows `0..w.len()` of one query, row `j` into lane `(slot + j) % lanes` if that
    /// lane is in `keep`.
    ///
    /// # Safety
    /// As the width's `accumulate_rows_*`.
    unsafe fn rows(
        w: &[f32],
        v: *const f16,
        hd: usize,
        slot: usize,
        lanes: (usize, &Range<usize>),
        acc: *mut f32,
    );

    /// Whole groups of `lanes` rows for `Q` queries, the lanes in `keep`.
    ///
    /// # Safety
    /// As the width's `accumulate_groups_*`.
    unsafe fn groups<const Q: usize>(
        w: [*const f32; Q],
        v: *const f16,
        hd: usize,
        shape: (usize, usize),
        keep: &Range<usize>,
        acc: [*mut f32; Q],
    );
}

/// AVX-512F tiles (`hd` a multiple of 16).
struct Zmm;

impl Tiles for Zmm {
    unsafe fn rows(
        w: &[f32],
        v: *const f16,
        hd: usize,
        slot: usize,
        lanes: (usize, &Range<usize>),
        acc: *mut f32,
    ) {
        // SAFETY: forwarded contract (AVX-512F checked by the entry point's caller).
        unsafe { accumulate_rows_512(w, v, hd, slot, lanes, acc) }
    }

    unsafe fn groups<const Q: usize>(
        w: [*const f32; Q],
        v: *const f16,
        hd: usize,
        shape: (usize, usize),
        keep: &Range<usize>,
        acc: [*mut f32; Q],
    ) {
        // SAFETY: forwarded contract.
        unsafe { accumulate_groups_512::<Q>(w, v, hd, shape, keep, acc) }
    }
}

/// AVX2 tiles (`hd` a multiple of 8).
struct Ymm;

impl Tiles for Ymm {
    unsafe fn rows(
        w: &[f32],
        v: *const f16,
        hd: usize,
        slot: usize,
        lanes: (usize, &Range<usize>),
        acc: *mut f32,
    ) {
        // SAFETY: forwarded contract (AVX2, FMA and F16C checked by the entry point's
        // caller).
        unsafe { accumulate_rows_256(w, v, hd, slot, lanes, acc) }
    }

    unsafe fn groups<const Q: usize>(
        w: [*const f32; Q],
        v: *const f16,
        hd: usize,
        shape: (usize, usize),
        keep: &Range<usize>,
        acc: [*mut f32; Q],
    ) {
        // SAFETY: forwarded contract.
        unsafe { accumulate_groups_256::<Q>(w, v, hd, shape, keep, acc) }
    }
}

/// See `crate::attn::f16_accumulate` (the lanes in `keep` only): AVX-512 tiles.
///
/// # Safety
/// As `crate::attn::f16_accumulate` checks, with AVX-512F available and `hd` a
/// multiple of 16.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
pub unsafe fn f16_accumulate_512(
    qw: &QueryWeights<'_>,
    vals: &[f16],
    hd: usize,
    first_slot: usize,
    lanes: (usize, Range<usize>),
    acc: &mut [f32],
) {
    // SAFETY: forwarded contract.
    unsafe { accumulate::<Zmm>(qw, vals, hd, first_slot, lanes, acc) }
}

/// See `crate::attn::f16_accumulate` (the lanes in `keep` only): AVX2 tiles.
///
/// # Safety
/// As `crate::attn::f16_accumulate` checks, with AVX2, FMA and F16C available and
/// `hd` a multiple of 8.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f16_accumulate_256(
    qw: &QueryWeights<'_>,
    vals: &[f16],
    hd: usize,
    first_slot: usize,
    lanes: (usize, Range<usize>),
    acc: &mut [f32],
) {
    // SAFETY: forwarded contract.
    unsafe { accumulate::<Ymm>(qw, vals, hd, first_slot, lanes, acc) }
}

/// Asks for every cache line of `x` to be brought into L2 (a hint: nothing is read
/// into registers, and lines already cached cost a few cycles).
fn prefetch_l2<T>(x: &[T]) {
    let p = x.as_ptr().cast::<i8>();
    for off in (0..core::mem::size_of_val(x)).step_by(64) {
        // SAFETY: prefetching never faults; every address is inside `x` anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(p.add(off)) };
    }
}

/// Queries per shared pass over value rows, largest first: the tiles' query counts.
const SHARE: [usize; 3] = [8, 4, 2];

/// The weighted sum through `T`'s tiles. The f16 rows are read in place and
/// converted as they are read, once per up to 8 queries that add them (the heads of a
/// token and consecutive tokens share all but their last few rows).
///
/// # Safety
/// As `crate::attn::f16_accumulate` checks, with `T`'s instructions available and
/// `hd` a multiple of its width.
unsafe fn accumulate<T: Tiles>(
    qw: &QueryWeights<'_>,
    vals: &[f16],
    hd: usize,
    first_slot: usize,
    (lanes, keep): (usize, Range<usize>),
    acc: &mut [f32],
) {
    let rows = qw.rows;
    let lanes = (lanes, &keep);
    // The register tiles read every 16th row (2 KiB apart at head_dim 64), a pattern
    // the hardware prefetchers do not follow; a stored prefix's values are not in any
    // cache yet. One sequential pass of prefetches brings them into L2 first.
    let used = rows.iter().filter(|r| !r.is_empty());
    let lo = used.clone().map(|r| r.start).min().unwrap_or(0);
    let hi = used.map(|r| r.end).max().unwrap_or(0);
    prefetch_l2(&vals[lo * hd..hi * hd]);
    let mut i = 0;
    while i < rows.len() {
        // The widest run of queries from i whose rows overlap in at least a group;
        // each adds its own rows before the shared ones, then the shared ones with
        // the others, then its own after them: every query's rows stay in order.
        let run = SHARE.iter().find_map(|&k| {
            let qs = rows.get(i..i + k)?;
            let lo = qs.iter().map(|r| r.start).max()?;
            let hi = qs.iter().map(|r| r.end).min()?;
            (hi >= lo + lanes.0).then_some((k, lo..hi))
        });
        let Some((k, shared)) = run else {
            // SAFETY: query i's own rows (checked by `f16_accumulate`).
            unsafe { add_rows::<T>(qw, &[i], rows[i].clone(), vals, hd, first_slot, lanes, acc) };
            i += 1;
            continue;
        };
        // On the stack: this runs per run of queries, per task, per layer.
        let run_of: [usize; 8] = from_fn(|j| i + j);
        let qs = &run_of[..k];
        // SAFETY (all calls): the ranges lie inside each query's rows (checked by
        // `f16_accumulate`) and are added in increasing order per query.
        unsafe {
            for &q in qs {
                let before = rows[q].start..shared.start;
                add_rows::<T>(qw, &[q], before, vals, hd, first_slot, lanes, acc);
            }
            add_rows::<T>(qw, qs, shared.clone(), vals, hd, first_slot, lanes, acc);
            for &q in qs {
                let after = shared.end..rows[q].end;
                add_rows::<T>(qw, &[q], after, vals, hd, first_slot, lanes, acc);
            }
        }
        i += k;
    }
}

/// Value rows `r` into the accumulators of queries `qs` (1, 2, 4 or 8), only those
/// whose lane is in `lanes.1`: rows up to the next slot-0 boundary and after the last
/// whole group of `lanes.0` go row by row; the groups in between through register
/// tiles.
///
/// # Safety
/// As [`accumulate`], with `r` inside the rows of every query in `qs`.
#[allow(clippy::too_many_arguments)]
unsafe fn add_rows<T: Tiles>(
    qw: &QueryWeights<'_>,
    qs: &[usize],
    r: Range<usize>,
    vals: &[f16],
    hd: usize,
    first_slot: usize,
    (lanes, keep): (usize, &Range<usize>),
    acc: &mut [f32],
) {
    if r.is_empty() {
        return;
    }
    let (r0, n) = (r.start, r.len());
    let v = vals[r0 * hd..].as_ptr();
    let slot = (first_slot + r0) % lanes;
    let lead = ((lanes - slot) % lanes).min(n);
    let groups = (n - lead) / lanes;
    let mid = lead + lanes * groups;
    let w = |q: usize| &qw.w[q * qw.stride + r0..q * qw.stride + r.end];
    let acc_base = acc.as_mut_ptr();
    let a = |q: usize| acc_base.wrapping_add(q * lanes * hd);
    // SAFETY: rows [r0, r.end) of each query lie inside its weights, the value rows
    // and its lanes (caller contract); [0, lead), [lead, mid), [mid, n) partition
    // them and are added in that order.
    unsafe {
        for &q in qs {
            T::rows(&w(q)[..lead], v, hd, slot, (lanes, keep), a(q));
        }
        let gv = v.add(lead * hd);
        let ws = |k: usize| w(qs[k]).as_ptr().add(lead);
        let g = (lanes, groups);
        match qs.len() {
            8 => T::groups::<8>(from_fn(ws), gv, hd, g, keep, from_fn(|k| a(qs[k]))),
            4 => T::groups::<4>(from_fn(ws), gv, hd, g, keep, from_fn(|k| a(qs[k]))),
            2 => T::groups::<2>(from_fn(ws), gv, hd, g, keep, from_fn(|k| a(qs[k]))),
            _ => T::groups::<1>([ws(0)], gv, hd, g, keep, [a(qs[0])]),
        }
        let tail = v.add(mid * hd);
        for &q in qs {
            let slot = (slot + mid) % lanes;
            T::rows(&w(q)[mid..], tail, hd, slot, (lanes, keep), a(q));
        }
    }
}

/// Rows `0..w.len()` of one query, row `j` into lane `(slot + j) % lanes` if that
/// lane is in `keep`.
///
/// # Safety
/// `v` holds `w.len()` rows of `hd` f16 (a multiple of 16) and `acc` `lanes` × `hd`
/// f32; AVX-512F available.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn accumulate_rows_512(
    w: &[f32],
    v: *const f16,
    hd: usize,
    mut slot: usize,
    (lanes, keep): (usize, &Range<usize>),
    acc: *mut f32,
) {
    for (j, &wj) in w.iter().enumerate() {
        if !keep.contains(&slot) {
            slot = if slot + 1 == lanes { 0 } else { slot + 1 };
            continue;
        }
        let wv = _mm512_set1_ps(wj);
        // SAFETY: row j and lane `slot` are inside `v` and `acc` (caller contract).
        unsafe {
            let dst = acc.add(slot * hd);
            for d in (0..hd).step_by(16) {
                let p = dst.add(d);
                let x = load_h16(v.add(j * hd + d));
                _mm512_storeu_ps(p, _mm512_fmadd_ps(wv, x, _mm512_loadu_ps(p)));
            }
        }
        slot += 1;
        if slot == lanes {
            slot = 0;
        }
    }
}

/// Rows `lanes * groups` (row `j` feeds lane `j % lanes`) of `Q` queries,
/// lanes `l0..l0 + L` and 16-wide column chunks `c0..c0 + C` only: the `Q·L·C`
/// accumulators stay in registers over all rows, each weight broadcast serves `C`
/// chunks and each value load `Q` queries (one load per FMA instead of two). Each
/// accumulator receives the same FMAs in the same order as row by row.
///
/// # Safety
/// `w[q]` holds `lanes * groups` weights, `v` that many rows of `hd` f16 (a multiple
/// of 16, at least `16 * (c0 + C)`), and `acc[q]` `lanes` × `hd` f32, with
/// `l0 + L <= lanes`; AVX-512F available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
// Query, lane and chunk index the register tile together; iterators would hide that.
#[allow(clippy::needless_range_loop)]
unsafe fn groups_tile_512<const Q: usize, const L: usize, const C: usize>(
    w: [*const f32; Q],
    v: *const f16,
    hd: usize,
    (lanes, groups): (usize, usize),
    (l0, c0): (usize, usize),
    acc: [*mut f32; Q],
) {
    let at = |l: usize, c: usize| (l0 + l) * hd + (c0 + c) * 16;
    // SAFETY: every (lane, chunk) addressed lies inside each query's `acc`.
    let mut a: [[[__m512; C]; L]; Q] = core::array::from_fn(|q| {
        core::array::from_fn(|l| {
            core::array::from_fn(|c| unsafe { _mm512_loadu_ps(acc[q].add(at(l, c))) })
        })
    });
    for g in 0..groups {
        for l in 0..L {
            let j = lanes * g + l0 + l;
            // SAFETY: row j < 16 * groups of every `w[q]` and of `v` (caller contract).
            unsafe {
                let wb: [__m512; Q] = core::array::from_fn(|q| _mm512_set1_ps(*w[q].add(j)));
                for c in 0..C {
                    let vv = load_h16(v.add(j * hd + (c0 + c) * 16));
                    for q in 0..Q {
                        a[q][l][c] = _mm512_fmadd_ps(wb[q], vv, a[q][l][c]);
                    }
                }
            }
        }
    }
    for q in 0..Q {
        for l in 0..L {
            for c in 0..C {
                // SAFETY: as above.
                unsafe { _mm512_storeu_ps(acc[q].add(at(l, c)), a[q][l][c]) };
            }
        }
    }
}

/// Whole groups of `lanes` rows for `Q` queries (1, 2, 4 or 8): the lanes in `keep`
/// (whole sixteens) and every chunk, in tiles of at most 16 accumulators.
///
/// # Safety
/// As [`groups_tile_512`], for lanes `keep` (inside `0..lanes`, multiples of 16 at both
/// ends) and `hd / 16` chunks.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn accumulate_groups_512<const Q: usize>(
    w: [*const f32; Q],
    v: *const f16,
    hd: usize,
    (lanes, groups): (usize, usize),
    keep: &Range<usize>,
    acc: [*mut f32; Q],
) {
    if groups == 0 {
        return;
    }
    let chunks = hd / 16;
    // SAFETY (all arms): the tiles cover lanes `keep` (L divides 16) and chunks
    // 0..hd / 16 (C divides `chunks`), inside what the caller guarantees.
    macro_rules! tiles {
        ($l:literal, $c:literal) => {
            for l0 in keep.clone().step_by($l) {
                for c0 in (0..chunks).step_by($c) {
                    let shape = (lanes, groups);
                    unsafe { groups_tile_512::<Q, $l, $c>(w, v, hd, shape, (l0, c0), acc) };
                }
            }
        };
    }
    // More queries per tile means fewer value conversions per FMA (a conversion costs
    // about two FMA slots): 8 queries × 2 chunks reads each chunk of a row twice in
    // all, but converts it once per 8 queries instead of once per 2.
    match (Q, chunks % 4, chunks % 2) {
        (1, 0, _) => tiles!(4, 4),
        (1, _, 0) => tiles!(8, 2),
        (1, _, _) => tiles!(16, 1),
        (2, 0, _) => tiles!(2, 4),
        (2, _, 0) => tiles!(4, 2),
        (2, _, _) => tiles!(8, 1),
        (4, 0, _) => tiles!(1, 4),
        (4, _, 0) => tiles!(2, 2),
        (4, _, _) => tiles!(4, 1),
        (_, _, 0) => tiles!(1, 2),
        _ => tiles!(2, 1),
    }
}

/// [`accumulate_rows_512`] on 8 columns per register.
///
/// # Safety
/// `v` holds `w.len()` rows of `hd` f16 (a multiple of 8) and `acc` `lanes` × `hd`
/// f32; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn accumulate_rows_256(
    w: &[f32],
    v: *const f16,
    hd: usize,
    mut slot: usize,
    (lanes, keep): (usize, &Range<usize>),
    acc: *mut f32,
) {
    for (j, &wj) in w.iter().enumerate() {
        if keep.contains(&slot) {
            let wv = _mm256_set1_ps(wj);
            // SAFETY: row j and lane `slot` are inside `v` and `acc` (caller contract).
            unsafe {
                let dst = acc.add(slot * hd);
                for d in (0..hd).step_by(8) {
                    let p = dst.add(d);
                    let x = load_h(v.add(j * hd + d));
                    _mm256_storeu_ps(p, _mm256_fmadd_ps(wv, x, _mm256_loadu_ps(p)));
                }
            }
        }
        slot = if slot + 1 == lanes { 0 } else { slot + 1 };
    }
}

/// [`groups_tile_512`] on 8-wide column chunks: `Q·L·C` accumulators (at most 8 of
/// the 16 ymm registers), each value load converted once for `Q` queries.
///
/// # Safety
/// `w[q]` holds `lanes * groups` weights, `v` that many rows of `hd` f16 (a multiple
/// of 8, at least `8 * (c0 + C)`), and `acc[q]` `lanes` × `hd` f32, with
/// `l0 + L <= lanes`; AVX2, FMA and F16C available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
// Query, lane and chunk index the register tile together; iterators would hide that.
#[allow(clippy::needless_range_loop)]
unsafe fn groups_tile_256<const Q: usize, const L: usize, const C: usize>(
    w: [*const f32; Q],
    v: *const f16,
    hd: usize,
    (lanes, groups): (usize, usize),
    (l0, c0): (usize, usize),
    acc: [*mut f32; Q],
) {
    let at = |l: usize, c: usize| (l0 + l) * hd + (c0 + c) * 8;
    // SAFETY: every (lane, chunk) addressed lies inside each query's `acc`.
    let mut a: [[[__m256; C]; L]; Q] =
        from_fn(|q| from_fn(|l| from_fn(|c| unsafe { _mm256_loadu_ps(acc[q].add(at(l, c))) })));
    for g in 0..groups {
        for l in 0..L {
            let j = lanes * g + l0 + l;
            // SAFETY: row j < lanes * groups of every `w[q]` and of `v` (caller
            // contract).
            unsafe {
                for c in 0..C {
                    let vv = load_h(v.add(j * hd + (c0 + c) * 8));
                    for q in 0..Q {
                        // Broadcast where it is used: with 8 queries there are not
                        // registers enough to keep them across chunks.
                        let wb = _mm256_broadcast_ss(&*w[q].add(j));
                        a[q][l][c] = _mm256_fmadd_ps(wb, vv, a[q][l][c]);
                    }
                }
            }
        }
    }
    for q in 0..Q {
        for l in 0..L {
            for c in 0..C {
                // SAFETY: as above.
                unsafe { _mm256_storeu_ps(acc[q].add(at(l, c)), a[q][l][c]) };
            }
        }
    }
}

/// [`accumulate_groups_512`] on 8-wide column chunks.
///
/// # Safety
/// As [`groups_tile_256`], for lanes `keep` (inside `0..lanes`, multiples of 16 at
/// both ends) and `hd / 8` chunks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn accumulate_groups_256<const Q: usize>(
    w: [*const f32; Q],
    v: *const f16,
    hd: usize,
    (lanes, groups): (usize, usize),
    keep: &Range<usize>,
    acc: [*mut f32; Q],
) {
    if groups == 0 {
        return;
    }
    let chunks = hd / 8;
    // SAFETY (all arms): the tiles cover lanes `keep` (L divides 16) and chunks
    // 0..hd / 8 (C divides `chunks`), inside what the caller guarantees.
    macro_rules! tiles {
        ($l:literal, $c:literal) => {
            for l0 in keep.clone().step_by($l) {
                for c0 in (0..chunks).step_by($c) {
                    let shape = (lanes, groups);
                    unsafe { groups_tile_256::<Q, $l, $c>(w, v, hd, shape, (l0, c0), acc) };
                }
            }
        };
    }
    // 8 accumulators per tile; more queries per tile convert each value chunk for
    // more FMAs.
    match (Q, chunks % 4, chunks % 2) {
        (1, 0, _) => tiles!(2, 4),
        (1, _, 0) => tiles!(4, 2),
        (1, _, _) => tiles!(8, 1),
        (2, 0, _) => tiles!(1, 4),
        (2, _, 0) => tiles!(2, 2),
        (2, _, _) => tiles!(4, 1),
        (4, _, 0) => tiles!(1, 2),
        (4, _, _) => tiles!(2, 1),
        _ => tiles!(1, 1),
    }
}
