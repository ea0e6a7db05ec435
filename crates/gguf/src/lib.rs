//! Read GGUF model files by `mmap`: header, typed metadata, tensor infos and
//! zero-copy tensor views. Hostile input is an error naming the file and the
//! problem, never a panic, an out-of-bounds view or a huge allocation.
//!
//! Reads GGUF versions 2 and 3 (little-endian). Limits enforced at open, all
//! checked against the actual file size before anything is allocated:
//! - every count (metadata entries, tensors, array elements, string lengths) is
//!   bounded by the bytes left in the file;
//! - arrays nest at most [`MAX_ARRAY_DEPTH`] deep and hold at most
//!   [`MAX_ARRAY_ELEMENTS`] elements in total over the whole file;
//! - each tensor has 1..=4 dimensions, none zero, a first dimension that is a whole
//!   number of blocks of its type, an offset that is a multiple of the alignment,
//!   and data that lies inside the file.
//!
//! [`writer::GgufWriter`] builds GGUF files in memory, for tests of this and other
//! crates.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod reader;
mod types;
mod value;
pub mod writer;

pub use reader::{DEFAULT_ALIGNMENT, MAX_ARRAY_DEPTH, MAX_ARRAY_ELEMENTS, MAX_DIMS};
pub use types::GgmlType;
pub use value::Value;

/// Errors from opening or querying a GGUF file. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The OS error is part of the message, not a separate cause, so that chained
    /// printing (`{:#}`) does not repeat it.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: not a GGUF file (bad magic); expected a .gguf model file")]
    BadMagic { path: PathBuf },
    #[error("{path}: unsupported GGUF version {version} (thaw reads versions 2 and 3)")]
    UnsupportedVersion { path: PathBuf, version: u32 },
    #[error("{path}: file is truncated or corrupt: {what}")]
    Corrupt { path: PathBuf, what: String },
    #[error("{path}: metadata key `{key}` is missing")]
    MissingKey { path: PathBuf, key: String },
    #[error("{path}: metadata key `{key}` has type {found}, expected {expected}")]
    WrongType {
        path: PathBuf,
        key: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{path}: tensor `{name}` not found")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: tensor `{name}` has unsupported type {ty}")]
    UnsupportedType {
        path: PathBuf,
        name: String,
        ty: String,
    },
}

/// Map a whole file read-only (e.g. a `.thaw` snapshot, whose GGUF section is then
/// read with [`GgufFile::from_mapping`]), so that crates above this one need no
/// `unsafe`. An empty file gives an empty mapping.
pub fn map_file(path: impl AsRef<Path>) -> Result<Arc<memmap2::Mmap>, GgufError> {
    let path = path.as_ref();
    let io = |error| GgufError::Io {
        path: path.to_path_buf(),
        error,
    };
    let file = File::open(path).map_err(io)?;
    Ok(Arc::new(map(&file).map_err(io)?))
}

fn map(file: &File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the mapping is read-only and lives as long as the `Arc` it is put in.
    // Mapping a file is only unsound if another process truncates or rewrites it while
    // it is mapped; model and snapshot files are treated as immutable (as llama.cpp
    // does; snapshots are replaced by rename, never rewritten in place), and every
    // view handed out is bounds-checked against the mapping's length.
    let map = unsafe { memmap2::Mmap::map(file) }?;
    // Pages not in the page cache yet are then read in 2 MiB folios that a fault maps
    // whole (one page-table entry instead of 512); a hint, so failure is ignored.
    #[cfg(target_os = "linux")]
    let _ = map.advise(memmap2::Advice::HugePage);
    Ok(map)
}

/// Where a tensor lives and what it holds. `dims[0]` is the innermost (contiguous)
/// dimension, as in ggml: a weight matrix of `rows × cols` has `dims = [cols, rows]`.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Byte offset from the start of the file (already includes the data section start).
    pub offset: u64,
    /// Byte length of the tensor data. 0 for types whose layout thaw does not know
    /// ([`GgmlType::Other`]): their size cannot be computed, so only their offset
    /// was checked at open and [`GgufFile::tensor_data`] returns an empty slice.
    pub size: u64,
}

impl TensorInfo {
    /// Number of elements (product of `dims`; checked not to overflow at open).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Number of rows: all dimensions but the innermost.
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }
}

/// An opened GGUF file: parsed header and metadata, tensor data left in the mapping.
pub struct GgufFile {
    path: PathBuf,
    version: u32,
    metadata: Vec<(String, Value)>,
    meta_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    data_offset: u64,
    alignment: u64,
    mmap: Arc<memmap2::Mmap>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("data_offset", &self.data_offset)
            .field("alignment", &self.alignment)
            .finish()
    }
}

impl GgufFile {
    /// Map the file and parse and validate its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref().to_path_buf();
        let io = |error| GgufError::Io {
            path: path.clone(),
            error,
        };
        let file = File::open(&path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len == 0 {
            return Err(GgufError::Corrupt {
                path,
                what: "the file is empty".into(),
            });
        }
        let mmap = map(&file).map_err(io)?;
        let header = reader::parse(&path, &mmap)?;
        Ok(Self::assemble(path, header, Arc::new(mmap)))
    }

    /// Parse GGUF bytes held in memory (copied into an anonymous mapping so that the
    /// result behaves exactly like an opened file). `name` stands in for the path in
    /// errors. Used by tests with [`writer::GgufWriter`] output and by the fuzzer.
    pub fn from_bytes(name: impl Into<PathBuf>, bytes: &[u8]) -> Result<Self, GgufError> {
        let path = name.into();
        // Validate before copying: a rejected buffer costs no mapping.
        let header = reader::parse(&path, bytes)?;
        let io = |error| GgufError::Io {
            path: path.clone(),
            error,
        };
        let mut anon = memmap2::MmapMut::map_anon(bytes.len()).map_err(io)?;
        anon.copy_from_slice(bytes);
        let mmap = anon.make_read_only().map_err(io)?;
        Ok(Self::assemble(path, header, Arc::new(mmap)))
    }

    /// Parse a GGUF file embedded at `offset..offset + len` of an existing mapping (a
    /// `.thaw` snapshot's GGUF section) without copying it. Tensor offsets and
    /// [`Self::data_offset`] come out absolute in `mmap`, so [`Self::tensor_data`] and
    /// [`Self::mapping`] work exactly as for an opened file; [`Self::bytes`] is the whole
    /// mapping. Every tensor is checked to lie within the embedded range. `path` names
    /// the containing file in errors.
    pub fn from_mapping(
        path: impl Into<PathBuf>,
        mmap: Arc<memmap2::Mmap>,
        offset: u64,
        len: u64,
    ) -> Result<Self, GgufError> {
        let path = path.into();
        let range = usize::try_from(offset).ok().and_then(|start| {
            let end = start.checked_add(usize::try_from(len).ok()?)?;
            (end <= mmap.len()).then_some(start..end)
        });
        let Some(range) = range else {
            return Err(GgufError::Corrupt {
                path,
                what: format!(
                    "embedded GGUF range {offset}+{len} lies outside the mapping ({} bytes)",
                    mmap.len()
                ),
            });
        };
        let mut header = reader::parse(&path, &mmap[range])?;
        // In range: parse checked every tensor against `len`, and offset + len fits.
        header.data_offset += offset;
        for t in &mut header.tensors {
            t.offset += offset;
        }
        Ok(Self::assemble(path, header, mmap))
    }

    fn assemble(path: PathBuf, h: reader::Header, mmap: Arc<memmap2::Mmap>) -> Self {
        Self {
            path,
            version: h.version,
            metadata: h.metadata,
            meta_index: h.meta_index,
            tensors: h.tensors,
            tensor_index: h.tensor_index,
            data_offset: h.data_offset,
            alignment: h.alignment,
            mmap,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn version(&self) -> u32 {
        self.version
    }
    pub fn alignment(&self) -> u64 {
        self.alignment
    }
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }
    /// All metadata in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            path: self.path.clone(),
            key: key.into(),
        })
    }

    fn wrong_type(&self, key: &str, expected: &'static str, found: &Value) -> GgufError {
        GgufError::WrongType {
            path: self.path.clone(),
            key: key.into(),
            expected,
            found: found.type_name(),
        }
    }

    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| self.wrong_type(key, "string", v))
    }

    /// Any integer type that fits in u64 (u8..u64, non-negative i8..i64).
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.require(key)?;
        v.as_u64()
            .ok_or_else(|| self.wrong_type(key, "non-negative integer", v))
    }

    /// f32 or f64 (narrowed), or any integer.
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        let v = self.require(key)?;
        v.as_f32().ok_or_else(|| self.wrong_type(key, "number", v))
    }

    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        let v = self.require(key)?;
        v.as_bool().ok_or_else(|| self.wrong_type(key, "bool", v))
    }

    pub fn get_array(&self, key: &str) -> Result<&[Value], GgufError> {
        let v = self.require(key)?;
        v.as_array().ok_or_else(|| self.wrong_type(key, "array", v))
    }

    /// An array of strings (e.g. `tokenizer.ggml.tokens`) as borrowed `&str`s.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        let v = self.require(key)?;
        let items = v
            .as_array()
            .ok_or_else(|| self.wrong_type(key, "array of string", v))?;
        items
            .iter()
            .map(|item| {
                item.as_str()
                    .ok_or_else(|| self.wrong_type(key, "array of string", v))
            })
            .collect()
    }

    /// `general.architecture`, e.g. `llama` or `gemma3`.
    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.get_str("general.architecture")
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// Like [`Self::tensor_info`], but a missing tensor is a [`GgufError::MissingTensor`].
    pub fn tensor(&self, name: &str) -> Result<&TensorInfo, GgufError> {
        self.tensor_info(name)
            .ok_or_else(|| GgufError::MissingTensor {
                path: self.path.clone(),
                name: name.into(),
            })
    }

    /// Zero-copy view of a tensor's bytes (bounds were checked at open).
    ///
    /// An info that did not come from this file and lies outside it yields an empty
    /// slice rather than a panic; so does a tensor of unknown type (size 0).
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        let range = usize::try_from(info.offset).ok().and_then(|start| {
            let end = start.checked_add(usize::try_from(info.size).ok()?)?;
            Some(start..end)
        });
        range.and_then(|r| self.mmap.get(r)).unwrap_or(&[])
    }

    /// The error a model returns for a tensor whose type it cannot use.
    pub fn unsupported_type(&self, info: &TensorInfo) -> GgufError {
        GgufError::UnsupportedType {
            path: self.path.clone(),
            name: info.name.clone(),
            ty: info.ty.name(),
        }
    }

    /// The whole mapping (for [`Self::from_mapping`], the containing file's).
    pub fn bytes(&self) -> &[u8] {
        &self.mmap
    }
}

impl GgufFile {
    /// A shared handle to the mapping, so model weights can outlive this struct.
    pub fn mapping(&self) -> std::sync::Arc<memmap2::Mmap> {
        self.mmap.clone()
    }
}
