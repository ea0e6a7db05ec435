//! Weights as views of a byte buffer: a GGUF mapping today, a snapshot's mapping or
//! repacked buffers later, through the same `Storage` type. Matrices stay where they
//! are (zero-copy); small vectors (norms, biases) are dequantized to `Vec<f32>` at load.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;

use thaw_gguf::{GgmlType, GgufFile};
use thaw_kernels::{QMatrix, interleave};

use crate::ModelError;

/// Shared, immutable bytes that weights point into.
#[derive(Clone)]
pub struct Storage(Arc<dyn Deref<Target = [u8]> + Send + Sync>);

impl Storage {
    /// A file mapping (e.g. [`GgufFile::mapping`]).
    pub fn from_mmap(map: Arc<memmap2::Mmap>) -> Self {
        Self(map)
    }

    /// Bytes owned by the process (repacked or synthetic weights).
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        Self(Arc::new(bytes))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A `rows × cols` matrix of type `ty` at `offset..offset + len` of a [`Storage`].
#[derive(Clone)]
pub struct Tensor {
    storage: Storage,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    offset: usize,
    len: usize,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor({} {}x{} @{})",
            self.ty, self.rows, self.cols, self.offset
        )
    }
}

impl Tensor {
    /// A view checked against the storage: the type must be one the kernels compute
    /// with and the bytes must cover exactly `rows` rows.
    pub fn new(
        name: &str,
        storage: Storage,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        offset: usize,
    ) -> Result<Self, ModelError> {
        if !thaw_kernels::is_supported(ty) {
            return Err(ModelError::UnsupportedType {
                name: name.into(),
                ty,
            });
        }
        let bad = |what: String| ModelError::BadTensor {
            name: name.into(),
            what,
        };
        let row_bytes = ty.row_bytes(cols).ok_or_else(|| {
            bad(format!(
                "{cols} columns is not a whole number of {ty} blocks"
            ))
        })?;
        let len = row_bytes
            .checked_mul(rows)
            .ok_or_else(|| bad("size overflows".into()))?;
        let end = offset
            .checked_add(len)
            .ok_or_else(|| bad("size overflows".into()))?;
        if end > storage.bytes().len() {
            return Err(bad(format!(
                "bytes {offset}..{end} lie outside the {}-byte buffer",
                storage.bytes().len()
            )));
        }
        Ok(Self {
            storage,
            ty,
            rows,
            cols,
            offset,
            len,
        })
    }

    pub fn ty(&self) -> GgmlType {
        self.ty
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn bytes(&self) -> &[u8] {
        // In bounds: checked in `new`, and storage never changes.
        &self.storage.bytes()[self.offset..self.offset + self.len]
    }

    /// The view the kernels take.
    pub fn matrix(&self) -> QMatrix<'_> {
        QMatrix {
            ty: self.ty,
            rows: self.rows,
            cols: self.cols,
            data: self.bytes(),
        }
    }

    /// Dequantize row `r` (< rows) into `dst` (`cols` long).
    pub fn row_into(&self, r: usize, dst: &mut [f32]) {
        let rb = self.len / self.rows.max(1);
        if let Some(plain) = interleave::plain(self.ty) {
            let mut row = vec![0u8; rb];
            interleave::plain_row(plain, self.cols, self.rows, self.bytes(), r, &mut row);
            thaw_kernels::dequantize_row(plain, &row, dst);
            return;
        }
        thaw_kernels::dequantize_row(self.ty, &self.bytes()[r * rb..(r + 1) * rb], dst);
    }

    /// All elements as f32 (for small tensors).
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        for (r, dst) in out.chunks_exact_mut(self.cols.max(1)).enumerate() {
            self.row_into(r, dst);
        }
        out
    }
}

pub(crate) use interleave::EMBEDDINGS;

/// Looks up tensors of a GGUF file by name and checks their shapes.
pub(crate) struct Loader<'a> {
    file: &'a GgufFile,
    storage: Storage,
    /// Matrices whose Q4_1 layout changed for the kernels in use: (name, type, bytes
    /// in memory of the process, offset of the 64-byte aligned start).
    relaid: HashMap<String, (GgmlType, Storage, usize)>,
}

impl<'a> Loader<'a> {
    pub fn new(file: &'a GgufFile) -> Self {
        Self {
            file,
            storage: Storage::from_mmap(file.mapping()),
            relaid: relayout(file),
        }
    }

    /// A weight matrix with `rows` outputs of `cols` inputs (GGUF dims `[cols, rows]`).
    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Tensor, ModelError> {
        self.opt_matrix(name, rows, cols)?
            .ok_or_else(|| ModelError::MissingTensor(name.into()))
    }

    pub fn opt_matrix(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
    ) -> Result<Option<Tensor>, ModelError> {
        let Some(info) = self.file.tensor_info(name) else {
            return Ok(None);
        };
        let expected = [cols as u64, rows as u64];
        // A trailing dimension of 1 is the same shape.
        let dims: Vec<u64> = match info.dims.as_slice() {
            [c] => vec![*c, 1],
            d => d.to_vec(),
        };
        let offset = located(name, info, &dims, &expected)?;
        let t = match self.relaid.get(name) {
            Some((ty, storage, start)) => {
                Tensor::new(name, storage.clone(), *ty, rows, cols, *start)?
            }
            None => Tensor::new(name, self.storage.clone(), info.ty, rows, cols, offset)?,
        };
        if t.len as u64 != info.size {
            return Err(ModelError::BadTensor {
                name: name.into(),
                what: format!(
                    "{} bytes stored, {} expected for its shape",
                    info.size, t.len
                ),
            });
        }
        Ok(Some(t))
    }

    /// The `n` matrices of a mixture of experts' 3-D tensor (GGUF dims `[cols, rows,
    /// n]`), each a `rows × cols` view of its own slice (nothing copied).
    pub fn experts(
        &self,
        name: &str,
        n: usize,
        rows: usize,
        cols: usize,
    ) -> Result<Vec<Tensor>, ModelError> {
        let info = self
            .file
            .tensor_info(name)
            .ok_or_else(|| ModelError::MissingTensor(name.into()))?;
        let expected = [cols as u64, rows as u64, n as u64];
        let offset = located(name, info, &info.dims, &expected)?;
        let bytes = info.ty.row_bytes(cols).unwrap_or(0) * rows;
        if (bytes * n) as u64 != info.size {
            return Err(ModelError::BadTensor {
                name: name.into(),
                what: format!(
                    "{} bytes stored, {} expected for its shape",
                    info.size,
                    bytes * n
                ),
            });
        }
        (0..n)
            .map(|e| {
                let at = offset + e * bytes;
                Tensor::new(name, self.storage.clone(), info.ty, rows, cols, at)
            })
            .collect()
    }

    /// A vector of `n` values (norm weights, biases), dequantized.
    pub fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>, ModelError> {
        self.opt_vector(name, n)?
            .ok_or_else(|| ModelError::MissingTensor(name.into()))
    }

    pub fn opt_vector(&self, name: &str, n: usize) -> Result<Option<Vec<f32>>, ModelError> {
        let Some(info) = self.file.tensor_info(name) else {
            return Ok(None);
        };
        if info.dims.as_slice() != [n as u64] {
            return Err(ModelError::Shape {
                name: name.into(),
                expected: vec![n as u64],
                found: info.dims.clone(),
            });
        }
        Ok(self.opt_matrix(name, 1, n)?.map(|t| t.to_f32()))
    }
}

/// The offset of tensor `name` (`info`), once its dims (as compared) are `expected`.
fn located(
    name: &str,
    info: &thaw_gguf::TensorInfo,
    dims: &[u64],
    expected: &[u64],
) -> Result<usize, ModelError> {
    if dims != expected {
        return Err(ModelError::Shape {
            name: name.into(),
            expected: expected.to_vec(),
            found: info.dims.clone(),
        });
    }
    usize::try_from(info.offset).map_err(|_| ModelError::BadTensor {
        name: name.into(),
        what: "offset does not fit in memory".into(),
    })
}

/// The Q4_1 and Q8_0 matrices of `file` in the layout the kernels in use read best:
/// plain ones interleaved by 16 rows where the kernels read that (a GGUF), interleaved
/// ones (a snapshot) back in plain rows where they do not. One copy of those matrices
/// into memory of the process, made on every core (SmolLM2: 105 MB).
fn relayout(file: &GgufFile) -> HashMap<String, (GgmlType, Storage, usize)> {
    type Convert = fn(GgmlType, usize, usize, &[u8], &mut [u8]);
    let wants = thaw_kernels::reads_interleaved();
    // (tensor, its type after, the plain type, the conversion)
    type Job<'f> = (&'f thaw_gguf::TensorInfo, GgmlType, GgmlType, Convert);
    let jobs: Vec<Job<'_>> = file
        .tensors()
        .iter()
        .filter_map(|t| {
            let (ty, plain, f): (GgmlType, GgmlType, Convert) = match t.ty {
                ty if wants && interleave::interleaves(ty, &t.dims) => {
                    (interleave::interleaved(ty)?, ty, interleave::pack_matrix)
                }
                ty if !wants => {
                    let plain = interleave::plain(ty)?;
                    (plain, plain, interleave::unpack_matrix)
                }
                _ => return None,
            };
            // Shapes the conversion cannot take are left for the loader to report.
            let [cols, rows] = t.dims[..] else {
                return None;
            };
            let (cols, rows) = (usize::try_from(cols).ok()?, usize::try_from(rows).ok()?);
            let whole = cols.is_multiple_of(32)
                && Some(file.tensor_data(t).len()) == plain.row_bytes(cols).map(|b| b * rows);
            whole.then_some((t, ty, plain, f))
        })
        .collect();
    // A snapshot for these kernels: nothing to convert, and no thread to start.
    if jobs.is_empty() {
        return HashMap::new();
    }
    // Every matrix's copy, 64-byte aligned so that no 512-bit load of a group splits a
    // cache line; filled below in pieces of whole groups, spread over the cores (a
    // 178 MB embedding would otherwise keep one core busy alone).
    let mut bufs: Vec<(Vec<u8>, usize)> = jobs
        .iter()
        .map(|(t, ..)| {
            let buf = vec![0u8; t.size as usize + 64];
            let start = buf.as_ptr().align_offset(64);
            (buf, start)
        })
        .collect();
    let mut pieces = Vec::new();
    for ((t, _, plain, f), (buf, start)) in jobs.iter().zip(bufs.iter_mut()) {
        let src = file.tensor_data(t);
        let (cols, rows) = (t.dims[0] as usize, t.dims[1] as usize);
        let rb = src.len() / rows;
        let per = (RELAYOUT_PIECE / (16 * rb)).max(1) * 16;
        let mut dst = &mut buf[*start..*start + src.len()];
        for r0 in (0..rows).step_by(per) {
            let n = per.min(rows - r0);
            let (mine, rest) = dst.split_at_mut(n * rb);
            dst = rest;
            pieces.push((*plain, *f, cols, n, &src[r0 * rb..(r0 + n) * rb], mine));
        }
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(pieces.len().max(1));
    let mut shares: Vec<Vec<_>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, p) in pieces.into_iter().enumerate() {
        shares[i % threads].push(p);
    }
    std::thread::scope(|s| {
        for share in shares {
            s.spawn(move || {
                for (plain, f, cols, rows, src, dst) in share {
                    f(plain, cols, rows, src, dst);
                }
            });
        }
    });
    jobs.iter()
        .zip(bufs)
        .map(|((t, ty, ..), (buf, start))| (t.name.clone(), (*ty, Storage::from_vec(buf), start)))
        .collect()
}

/// Bytes of a matrix converted as one piece by one thread.
const RELAYOUT_PIECE: usize = 4 << 20;
