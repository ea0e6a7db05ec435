//! The matrix × activations driver. Activations are quantized once per distinct
//! activation format (one pass serves every matrix of a [`crate::matmul_many`] call);
//! then the weight rows of all matrices are cut into chunks of about equal work and
//! handed to the pool in ONE `run`. Inside a chunk, tokens are walked in tiles: with a
//! GEMM tile kernel (n ≥ the type's `gemm_min_tokens`) each weight block is unpacked once per R rows × T tokens
//! (single tokens and token tails use the R × 1 `gemv` tile), otherwise each weight
//! row is reused for a few tokens while it is in L1. Types with a packed tile (AVX-512:
//! Q5_0, Q4_K, Q6_K) have each chunk's rows repacked once per call for batches of
//! ≥ `min_tokens`, and their activations prepared once per call where the tile wants
//! that; the packed tile gives the gemm tile's bits.
//!
//! Chunk boundaries are multiples of the tile height and tiles start at row 0 of each
//! matrix, so every output element is computed by the same kernel whatever the thread
//! count or the grouping of matrices: results are bit-identical across both.

use std::cell::RefCell;

use crate::dispatch::{KernelSet, PackedGemm, TileOut, TypeKernels};
use crate::{GgmlType, KernelError, QMatrix, ThreadPool};

/// Tokens per tile for the per-row dot path: 8 activation rows of a few hundred bytes
/// each stay in L1 next to the weight rows of one chunk.
const TOKEN_TILE: usize = 8;
/// Tokens per block for the GEMM path: a block of activations (≤ 64 rows) stays in L2
/// while the chunk's weight rows (L1) are swept over it.
const GEMM_TOKEN_BLOCK: usize = 64;
/// Packed weights are made and used in pieces of about this many bytes per thread, so
/// that a piece stays in L2 while all tokens sweep it.
const PACK_PIECE_BYTES: usize = 256 * 1024;
/// Chunks per thread: slack for dynamic balancing when a core is shared, without so
/// many tiny chunks that claiming them costs more than it balances.
const CHUNKS_PER_THREAD: usize = 4;
/// Smallest chunk (in weight bytes × tokens) worth a task hand-off.
const MIN_CHUNK_WORK: usize = 16 * 1024;
/// Chunk row counts are multiples of this (every gemm and gemv tile height divides it,
/// and so does an interleaved matrix's group height), so tiles start at the same rows
/// whatever the chunking.
const ROW_ALIGN: usize = 16;

thread_local! {
    /// Reused activation buffer of the calling thread (taken out during a call, so a
    /// re-entrant call just allocates its own).
    static ACT_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Packed weight rows of the chunk a thread is working on (same take/put pattern).
    static PACK_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Prepared activations of the calling thread's call (same take/put pattern).
    static PREP_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Makes `buf` hold at least `len` bytes from a 64-byte boundary (packed tiles load
/// whole cache lines; a split load costs two) and returns where that boundary is.
/// Contents are left as they are: every byte used is written before it is read.
fn aligned(buf: &mut Vec<u8>, len: usize) -> usize {
    if buf.len() < len + 64 {
        buf.resize(len + 64, 0);
    }
    buf.as_ptr().align_offset(64)
}

/// The packed tile `k` runs a batch of `n` tokens with, if any.
fn packed_for(k: &TypeKernels, n: usize) -> Option<PackedGemm> {
    let gemm = k.gemm.is_some() && n > 1 && n >= k.gemm_min_tokens;
    k.packed.filter(|p| gemm && n >= p.min_tokens)
}

/// `out` pointers shared with tasks that write disjoint elements.
struct OutPtrs(Vec<*mut f32>);
// SAFETY: tasks write disjoint indices (distinct weight rows of a matrix), see
// `matmul_many_with`.
unsafe impl Sync for OutPtrs {}

impl OutPtrs {
    /// Accessed through a method so closures capture the `Sync` wrapper, not the field.
    fn get(&self, i: usize) -> *mut f32 {
        self.0[i]
    }
}

/// Byte pointer for the parallel activation quantization (disjoint rows per task).
struct BytePtr(*mut u8);
// SAFETY: each task writes its own activation row only.
unsafe impl Sync for BytePtr {}
impl BytePtr {
    fn get(&self) -> *mut u8 {
        self.0
    }
}

/// Validates shapes; returns the weight row size in bytes.
fn check(w: &QMatrix<'_>, x: &[f32], n: usize, out: &[f32]) -> Result<usize, KernelError> {
    if !crate::is_supported(w.ty) {
        return Err(KernelError::Unsupported(w.ty));
    }
    let row_bytes = w.ty.row_bytes(w.cols).ok_or_else(|| {
        KernelError::Shape(format!(
            "{} columns are not a whole number of {} blocks",
            w.cols, w.ty
        ))
    })?;
    let want = row_bytes
        .checked_mul(w.rows)
        .ok_or_else(|| KernelError::Shape("matrix size overflows".into()))?;
    if w.data.len() != want {
        return Err(KernelError::Shape(format!(
            "{}x{} {} matrix needs {want} bytes, got {}",
            w.rows,
            w.cols,
            w.ty,
            w.data.len()
        )));
    }
    if Some(x.len()) != n.checked_mul(w.cols) {
        return Err(KernelError::Shape(format!(
            "x has {} values, expected {n} rows of {}",
            x.len(),
            w.cols
        )));
    }
    if Some(out.len()) != n.checked_mul(w.rows) {
        return Err(KernelError::Shape(format!(
            "out has {} values, expected {n} rows of {}",
            out.len(),
            w.rows
        )));
    }
    Ok(row_bytes)
}

/// [`crate::matmul`] with an explicit kernel set, returning shape errors.
pub fn matmul_with(
    set: &KernelSet,
    pool: &ThreadPool,
    w: &QMatrix<'_>,
    x: &[f32],
    n: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    matmul_many_with(set, pool, &[w], x, n, &mut [out])
}

/// One matrix of a call, resolved (an interleaved matrix with a plain tail is two).
struct Mat<'a> {
    w: QMatrix<'a>,
    k: TypeKernels,
    row_bytes: usize,
    /// Which output this writes, from which row, and that output's row count (the
    /// stride between tokens).
    out_idx: usize,
    out_row0: usize,
    ld: usize,
    /// Offset of this matrix's activation format in the activation buffer.
    act_off: usize,
    act_row: usize,
    /// Offset and row size of this matrix's prepared activations (packed tile only).
    prep_off: usize,
    prep_row: usize,
    /// Rows per chunk and first task index.
    chunk: usize,
    first_task: usize,
}

/// `w` as the parts the kernels run separately: an interleaved matrix's whole 16-row
/// groups, and its plain tail rows as a matrix of the plain type (so that they take
/// the tiles and dots a plain matrix's rows there would), with the row each part
/// starts at.
fn parts<'a>(w: &QMatrix<'a>, row_bytes: usize) -> Vec<(QMatrix<'a>, usize)> {
    let full = crate::interleave::interleaved_rows(w.rows);
    let Some(plain) = crate::interleave::plain(w.ty).filter(|_| full < w.rows) else {
        return vec![(*w, 0)];
    };
    let (head, tail) = w.data.split_at(full * row_bytes);
    let mut v = Vec::with_capacity(2);
    if full > 0 {
        v.push((
            QMatrix {
                rows: full,
                data: head,
                ..*w
            },
            0,
        ));
    }
    v.push((
        QMatrix {
            ty: plain,
            rows: w.rows - full,
            data: tail,
            ..*w
        },
        full,
    ));
    v
}

/// [`crate::matmul_many`] with an explicit kernel set, returning shape errors.
pub fn matmul_many_with(
    set: &KernelSet,
    pool: &ThreadPool,
    ws: &[&QMatrix<'_>],
    x: &[f32],
    n: usize,
    outs: &mut [&mut [f32]],
) -> Result<(), KernelError> {
    if ws.len() != outs.len() {
        return Err(KernelError::Shape(format!(
            "{} matrices but {} outputs",
            ws.len(),
            outs.len()
        )));
    }
    // Distinct activation formats, each quantized once: (type, offset, row bytes).
    let mut formats: Vec<(GgmlType, usize, usize)> = Vec::new();
    let mut act_len = 0usize;
    let mut mats = Vec::with_capacity(ws.len());
    for (out_idx, (w, out)) in ws.iter().zip(outs.iter()).enumerate() {
        let row_bytes = check(w, x, n, out)?;
        for (w, out_row0) in parts(w, row_bytes) {
            let k = set.for_type(w.ty)?;
            let (act_off, act_row) = match formats.iter().find(|f| f.0 == k.act_type) {
                Some(&(_, off, row)) => (off, row),
                None => {
                    let row = k
                        .act_type
                        .row_bytes(w.cols)
                        .expect("activation blocks divide weight blocks");
                    let off = act_len;
                    act_len += row * n;
                    formats.push((k.act_type, off, row));
                    (off, row)
                }
            };
            mats.push(Mat {
                w,
                k,
                row_bytes,
                out_idx,
                out_row0,
                ld: out.len() / n.max(1),
                act_off,
                act_row,
                prep_off: 0,
                prep_row: 0,
                chunk: 0,
                first_task: 0,
            });
        }
    }
    if n == 0 || mats.iter().all(|m| m.w.rows == 0) {
        return Ok(());
    }
    let cols = mats[0].w.cols;
    if mats.iter().any(|m| m.w.cols != cols) {
        return Err(KernelError::Shape(
            "matmul_many: all matrices must have the same number of columns".into(),
        ));
    }

    let mut act = ACT_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
    act.clear();
    act.resize(act_len, 0);
    quantize_activations(pool, &mats, &formats, x, n, cols, &mut act);
    let mut prep = PREP_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
    prepare_activations(pool, &mut mats, &act, n, cols, &mut prep);

    // Chunking: about CHUNKS_PER_THREAD equal-work chunks per thread over all matrices.
    let threads = pool.n_threads();
    let total: usize = mats.iter().map(|m| m.row_bytes * m.w.rows).sum::<usize>() * n;
    let target = if threads == 1 {
        usize::MAX
    } else {
        (total / (threads * CHUNKS_PER_THREAD)).max(MIN_CHUNK_WORK)
    };
    let mut n_tasks = 0;
    for m in &mut mats {
        let rows = m.w.rows;
        let per_row = (m.row_bytes * n).max(1);
        let want = (target / per_row).max(1);
        let n_chunks = rows.div_ceil(want).max(1);
        // Equal chunks, rounded up to the alignment (the last one takes the rest).
        m.chunk = rows
            .div_ceil(n_chunks)
            .next_multiple_of(ROW_ALIGN)
            .max(ROW_ALIGN);
        m.first_task = n_tasks;
        n_tasks += rows.div_ceil(m.chunk);
    }

    let outp = OutPtrs(outs.iter_mut().map(|o| o.as_mut_ptr()).collect());
    let act_ref = &act;
    let prep_ref = &prep;
    let mats_ref = &mats;
    pool.run(n_tasks, |task| {
        let mi = mats_ref.partition_point(|m| m.first_task <= task) - 1;
        let m = &mats_ref[mi];
        let r0 = (task - m.first_task) * m.chunk;
        let r1 = (r0 + m.chunk).min(m.w.rows);
        let acts = &act_ref[m.act_off..][..m.act_row * n];
        let preps = &prep_ref[m.prep_off..][..m.prep_row * n];
        // SAFETY: rows r0..r1 of part mi belong to this task only, and its output
        // holds n * ld values from row out_row0 + r (checked above) that outlive `run`.
        let out = outp.get(m.out_idx).wrapping_add(m.out_row0);
        unsafe { run_chunk(m, acts, preps, n, r0, r1, out) };
    });
    ACT_BUF.with(|b| *b.borrow_mut() = act);
    PREP_BUF.with(|b| *b.borrow_mut() = prep);
    Ok(())
}

/// Quantizes every token row into each distinct activation format.
fn quantize_activations(
    pool: &ThreadPool,
    mats: &[Mat<'_>],
    formats: &[(GgmlType, usize, usize)],
    x: &[f32],
    n: usize,
    cols: usize,
    act: &mut [u8],
) {
    // The quantizer of each format (any matrix using it has the same one).
    let quants: Vec<_> = formats
        .iter()
        .map(|f| {
            mats.iter()
                .find(|m| m.k.act_type == f.0)
                .expect("format came from a matrix")
                .k
                .quantize
        })
        .collect();
    let jobs = formats.len() * n;
    if n >= 4 && pool.n_threads() > 1 {
        let base = BytePtr(act.as_mut_ptr());
        pool.run(jobs, |j| {
            let (fi, t) = (j / n, j % n);
            let (_, off, row) = formats[fi];
            // SAFETY: job j writes only its own row [off + t * row, off + (t + 1) * row)
            // of `act`, which outlives `run`.
            let dst = unsafe { std::slice::from_raw_parts_mut(base.get().add(off + t * row), row) };
            (quants[fi])(&x[t * cols..][..cols], dst);
        });
    } else {
        for (fi, &(_, off, row)) in formats.iter().enumerate() {
            for t in 0..n {
                (quants[fi])(&x[t * cols..][..cols], &mut act[off + t * row..][..row]);
            }
        }
    }
}

/// Fills `prep` with the prepared activations of every matrix whose packed tile wants
/// them (one pass per distinct activation format and transform) and records where.
fn prepare_activations(
    pool: &ThreadPool,
    mats: &mut [Mat<'_>],
    act: &[u8],
    n: usize,
    cols: usize,
    prep: &mut Vec<u8>,
) {
    // (transform, source offset, source row, offset, row bytes)
    type Job = (fn(usize, &[u8], &mut [u8]), usize, usize, usize, usize);
    let mut jobs: Vec<Job> = Vec::new();
    let mut len = 0;
    for m in mats.iter_mut() {
        let Some(pr) = packed_for(&m.k, n).and_then(|p| p.prep) else {
            continue;
        };
        let same = |j: &&Job| j.0 as usize == pr.f as usize && j.1 == m.act_off;
        let (off, row) = match jobs.iter().find(same) {
            Some(j) => (j.3, j.4),
            None => {
                let row = (pr.row_bytes)(cols);
                jobs.push((pr.f, m.act_off, m.act_row, len, row));
                len += row * n;
                (len - row * n, row)
            }
        };
        (m.prep_off, m.prep_row) = (off, row);
    }
    if jobs.is_empty() {
        return;
    }
    let start = aligned(prep, len);
    for m in mats.iter_mut().filter(|m| m.prep_row > 0) {
        m.prep_off += start;
    }
    for j in &mut jobs {
        j.3 += start;
    }
    let base = BytePtr(prep.as_mut_ptr());
    let one = |ji: usize, t: usize| {
        let (f, src, src_row, off, row) = jobs[ji];
        // SAFETY: (ji, t) writes only its own row [off + t * row, off + (t + 1) * row)
        // of `prep`, which outlives this function.
        let dst = unsafe { std::slice::from_raw_parts_mut(base.get().add(off + t * row), row) };
        f(cols, &act[src + t * src_row..][..src_row], dst);
    };
    if pool.n_threads() > 1 {
        pool.run(jobs.len() * n, |j| one(j / n, j % n));
    } else {
        (0..jobs.len() * n).for_each(|j| one(j / n, j % n));
    }
}

/// Computes rows r0..r1 of one matrix for all n tokens into `out` (token t's row r at
/// `t * m.ld + r`).
///
/// # Safety
/// `out` must be valid for writes at `t * m.ld + r` for t < n, r0 <= r < r1, which no
/// other thread writes.
unsafe fn run_chunk(
    m: &Mat<'_>,
    acts: &[u8],
    preps: &[u8],
    n: usize,
    r0: usize,
    r1: usize,
    out: *mut f32,
) {
    let (w, k, rb, ar) = (&m.w, &m.k, m.row_bytes, m.act_row);
    let rows = m.ld;
    let put = |t: usize, r: usize, v: f32| {
        // SAFETY: t < n and r0 <= r < r1 <= rows (caller contract).
        unsafe { *out.add(t * rows + r) = v };
    };
    let gemm = k.gemm.filter(|_| n > 1 && n >= k.gemm_min_tokens);
    // The packed tile stands in for the gemm tile (same bits) on whole token tiles.
    let packed = packed_for(k, n);
    // Prepared activation rows, if the packed tile reads those.
    let (pacts, par) = match m.prep_row {
        0 => (acts, ar),
        row => (preps, row),
    };
    // Tokens 0..np (whole tiles) through the packed tile: the chunk's rows are packed
    // in pieces of about PACK_PIECE_BYTES (an L2-sized scratch, whatever the matrix),
    // each swept over all tokens in blocks of GEMM_TOKEN_BLOCK. GEMM_TOKEN_BLOCK is a
    // multiple of every tile's tokens, so this covers the tokens the gemm tiles would.
    let np = packed.map_or(0, |p| n / p.tokens * p.tokens);
    if let Some(p) = packed {
        let mut pbuf = PACK_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
        let gb = (p.group_bytes)(w.cols);
        let piece = (PACK_PIECE_BYTES / gb).max(1) * p.rows;
        for pr0 in (r0..r1).step_by(piece) {
            let pr1 = (pr0 + piece).min(r1);
            let len = (pr1 - pr0).div_ceil(p.rows) * gb;
            let start = aligned(&mut pbuf, len);
            let groups = &mut pbuf[start..][..len];
            for (g0, dst) in (pr0..pr1).step_by(p.rows).zip(groups.chunks_exact_mut(gb)) {
                let kr = (pr1 - g0).min(p.rows);
                (p.pack)(w.cols, &w.data[g0 * rb..][..kr * rb], kr, dst);
            }
            for t0 in (0..np).step_by(GEMM_TOKEN_BLOCK) {
                let t1 = (t0 + GEMM_TOKEN_BLOCK).min(np);
                for (g0, pg) in (pr0..pr1).step_by(p.rows).zip(groups.chunks_exact(gb)) {
                    let kr = (pr1 - g0).min(p.rows);
                    for t in (t0..t1).step_by(p.tokens) {
                        let o = TileOut {
                            ptr: out.wrapping_add(t * rows + g0),
                            ld: rows,
                            rows: kr,
                        };
                        // SAFETY: (row g0 + i, token t + j) for i < kr ≤ r1 - g0 and
                        // j < p.tokens ≤ np - t are inside `out` and belong to this
                        // chunk's rows (caller contract).
                        unsafe { (p.f)(w.cols, pg, &pacts[t * par..][..p.tokens * par], o) };
                    }
                }
            }
        }
        PACK_BUF.with(|b| *b.borrow_mut() = pbuf);
    }
    if gemm.is_some() || k.gemv.is_some() {
        let mut tile = [0.0f32; 64];
        for t0 in (np..n).step_by(GEMM_TOKEN_BLOCK) {
            let t1 = (t0 + GEMM_TOKEN_BLOCK).min(n);
            // Whole token tiles with the gemm tile, rows r0.. in tiles of its height.
            let mut full_t = t0;
            if let Some(g) = gemm {
                full_t = t0 + (t1 - t0) / g.tokens * g.tokens;
                let mut r = r0;
                while full_t > t0 && r + g.rows <= r1 {
                    let wr = &w.data[r * rb..][..g.rows * rb];
                    for t in (t0..full_t).step_by(g.tokens) {
                        (g.f)(w.cols, wr, &acts[t * ar..][..g.tokens * ar], &mut tile);
                        for i in 0..g.rows {
                            for j in 0..g.tokens {
                                put(t + j, r + i, tile[i * g.tokens + j]);
                            }
                        }
                    }
                    r += g.rows;
                }
                for r in r..r1 {
                    let wr = &w.data[r * rb..][..rb];
                    for t in t0..full_t {
                        put(t, r, (k.dot)(w.cols, wr, &acts[t * ar..][..ar]));
                    }
                }
            }
            // The remaining tokens one at a time: gemv tiles, then per-row dots.
            for t in full_t..t1 {
                let a = &acts[t * ar..][..ar];
                let mut r = r0;
                if let Some(v) = k.gemv {
                    while r + v.rows <= r1 {
                        (v.f)(w.cols, &w.data[r * rb..][..v.rows * rb], a, &mut tile);
                        for (i, &x) in tile[..v.rows].iter().enumerate() {
                            put(t, r + i, x);
                        }
                        r += v.rows;
                    }
                }
                for r in r..r1 {
                    put(t, r, (k.dot)(w.cols, &w.data[r * rb..][..rb], a));
                }
            }
        }
        return;
    }
    for t0 in (0..n).step_by(TOKEN_TILE) {
        let t1 = (t0 + TOKEN_TILE).min(n);
        for r in r0..r1 {
            let wr = &w.data[r * rb..][..rb];
            for t in t0..t1 {
                put(t, r, (k.dot)(w.cols, wr, &acts[t * ar..][..ar]));
            }
        }
    }
}
