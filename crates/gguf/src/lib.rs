//! Read GGUF model files by `mmap`: header, typed metadata, tensor infos and
//! zero-copy tensor views. Hostile input is an error naming the file and the
//! problem, never a panic, an out-of-bounds view or a huge allocation.
//!
//! API SKELETON: bodies are filled in by the gguf work; signatures are the contract
//! other crates code against.

use std::path::{Path, PathBuf};

mod types;
pub use types::GgmlType;

/// Errors from opening or querying a GGUF file. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a GGUF file (bad magic); expected a .gguf model file")]
    BadMagic { path: PathBuf },
    #[error("{path}: unsupported GGUF version {version} (thaw reads versions 2 and 3)")]
    UnsupportedVersion { path: PathBuf, version: u32 },
    #[error("{path}: file is truncated or corrupt: {what}")]
    Corrupt { path: PathBuf, what: String },
    #[error("{path}: metadata key `{key}` is missing")]
    MissingKey { path: PathBuf, key: String },
    #[error("{path}: metadata key `{key}` has type {found}, expected {expected}")]
    WrongType { path: PathBuf, key: String, expected: &'static str, found: &'static str },
    #[error("{path}: tensor `{name}` not found")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: tensor `{name}` has unsupported type {ty}")]
    UnsupportedType { path: PathBuf, name: String, ty: String },
}

/// One metadata value. Arrays may nest.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
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
    /// Byte length of the tensor data.
    pub size: u64,
}

/// An opened GGUF file: parsed header and metadata, tensor data left in the mapping.
pub struct GgufFile {
    path: PathBuf,
    version: u32,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorInfo>,
    data_offset: u64,
    alignment: u64,
    mmap: std::sync::Arc<memmap2::Mmap>,
}

impl GgufFile {
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> { let _ = path; todo!() }
    pub fn path(&self) -> &Path { &self.path }
    pub fn version(&self) -> u32 { self.version }
    pub fn alignment(&self) -> u64 { self.alignment }
    pub fn data_offset(&self) -> u64 { self.data_offset }
    /// All metadata in file order.
    pub fn metadata(&self) -> &[(String, Value)] { &self.metadata }
    pub fn get(&self, key: &str) -> Option<&Value> { let _ = key; todo!() }
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> { let _ = key; todo!() }
    /// Any integer type that fits in u64 (u8..u64, non-negative i8..i64).
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> { let _ = key; todo!() }
    /// f32 or f64 (narrowed), or any integer.
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> { let _ = key; todo!() }
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> { let _ = key; todo!() }
    pub fn get_array(&self, key: &str) -> Result<&[Value], GgufError> { let _ = key; todo!() }
    pub fn tensors(&self) -> &[TensorInfo] { &self.tensors }
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> { let _ = name; todo!() }
    /// Zero-copy view of a tensor's bytes (bounds were checked at open).
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] { let _ = info; todo!() }
    /// The whole mapping (used by the snapshot builder).
    pub fn bytes(&self) -> &[u8] { &self.mmap }
}

impl GgufFile {
    /// A shared handle to the mapping, so model weights can outlive this struct.
    pub fn mapping(&self) -> std::sync::Arc<memmap2::Mmap> { self.mmap.clone() }
}
