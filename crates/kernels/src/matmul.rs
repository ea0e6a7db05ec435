//! The matrix × activations driver: quantize each activation row once, then split the
//! weight rows into contiguous chunks (one task each) and, inside a task, walk the
//! tokens in tiles so each weight row is reused for several tokens while it is in L1.

use std::cell::RefCell;

use crate::dispatch::KernelSet;
use crate::{KernelError, QMatrix, ThreadPool};

/// Tokens per tile: 8 activation rows of a few hundred bytes each stay in L1 next to
/// the weight rows of one chunk.
const TOKEN_TILE: usize = 8;
/// Chunks per thread: enough slack for dynamic balancing when a core is shared.
const CHUNKS_PER_THREAD: usize = 8;
/// Smallest chunk of weight rows worth a task hand-off.
const MIN_CHUNK_ROWS: usize = 16;

thread_local! {
    /// Reused activation buffer of the calling thread (taken out during a call, so a
    /// re-entrant call just allocates its own).
    static ACT_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// `out` pointer shared with tasks that write disjoint elements.
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint indices (distinct weight rows), see `matmul_with`.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Accessed through a method so closures capture the `Sync` wrapper, not the field.
    fn get(&self) -> *mut f32 {
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
    let row_bytes = check(w, x, n, out)?;
    if n == 0 || w.rows == 0 {
        return Ok(());
    }
    let k = set.for_type(w.ty)?;
    let act_row = k
        .act_type
        .row_bytes(w.cols)
        .expect("activation blocks divide weight blocks");

    let mut act = ACT_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
    act.clear();
    act.resize(act_row * n, 0);
    if n >= 4 && pool.n_threads() > 1 {
        let base = OutPtr(act.as_mut_ptr().cast());
        pool.run(n, |t| {
            // SAFETY: task t writes only bytes [t * act_row, (t + 1) * act_row) of `act`,
            // which outlives `run`.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(base.get().cast::<u8>().add(t * act_row), act_row)
            };
            (k.quantize)(&x[t * w.cols..][..w.cols], dst);
        });
    } else {
        for (xr, dst) in x.chunks_exact(w.cols).zip(act.chunks_exact_mut(act_row)) {
            (k.quantize)(xr, dst);
        }
    }

    let threads = pool.n_threads();
    let chunk = if threads == 1 {
        w.rows
    } else {
        w.rows
            .div_ceil(threads * CHUNKS_PER_THREAD)
            .max(MIN_CHUNK_ROWS)
    };
    let n_chunks = w.rows.div_ceil(chunk);
    let rows = w.rows;
    let outp = OutPtr(out.as_mut_ptr());
    let act_ref = &act;
    pool.run(n_chunks, |c| {
        let r0 = c * chunk;
        let r1 = (r0 + chunk).min(rows);
        for t0 in (0..n).step_by(TOKEN_TILE) {
            let t1 = (t0 + TOKEN_TILE).min(n);
            for r in r0..r1 {
                let wr = &w.data[r * row_bytes..][..row_bytes];
                for t in t0..t1 {
                    let v = (k.dot)(w.cols, wr, &act_ref[t * act_row..][..act_row]);
                    // SAFETY: t < n and r < rows, so the index is inside `out`
                    // (n * rows values, checked above); rows r0..r1 belong to this task
                    // only, so no other thread writes this element.
                    unsafe { *outp.get().add(t * rows + r) = v };
                }
            }
        }
    });
    ACT_BUF.with(|b| *b.borrow_mut() = act);
    Ok(())
}
