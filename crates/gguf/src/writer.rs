//! Build GGUF files in memory, for tests of this crate and of crates that need
//! synthetic models (kernels, models, snapshot).
//!
//! The writer writes what it is given: it does not check that tensor data matches
//! the declared dims and type, nor that keys are unique, so tests can also build
//! broken files on purpose.
//!
//! ```
//! use thaw_gguf::{GgmlType, GgufFile, writer::GgufWriter};
//! let mut w = GgufWriter::new();
//! w.kv("general.architecture", "llama").kv("llama.block_count", 2u32);
//! w.tensor_f32("output_norm.weight", &[4], &[1.0, 2.0, 3.0, 4.0]);
//! let file = GgufFile::from_bytes("test.gguf", &w.to_bytes()).unwrap();
//! assert_eq!(file.get_u64("llama.block_count").unwrap(), 2);
//! let t = file.tensor("output_norm.weight").unwrap();
//! assert_eq!(t.ty, GgmlType::F32);
//! assert_eq!(file.tensor_data(t).len(), 16);
//! ```

use std::path::Path;

use crate::{GgmlType, Value};

/// A GGUF file under construction. Defaults: version 3, alignment 32.
#[derive(Debug, Clone)]
pub struct GgufWriter {
    version: u32,
    alignment: u64,
    metadata: Vec<(String, Value)>,
    tensors: Vec<PendingTensor>,
}

#[derive(Debug, Clone)]
struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    data: Vec<u8>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    pub fn new() -> Self {
        Self {
            version: 3,
            alignment: 32,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// The version number written in the header. Versions 2 and 3 share one
    /// little-endian layout; any other number is written as-is (for rejection tests).
    pub fn version(&mut self, version: u32) -> &mut Self {
        self.version = version;
        self
    }

    /// Sets `general.alignment` (replacing an earlier value) and pads to it.
    /// A value that is not a power of two is written as-is (the reader rejects it);
    /// padding then uses 1.
    pub fn alignment(&mut self, alignment: u32) -> &mut Self {
        self.metadata.retain(|(k, _)| k != "general.alignment");
        self.metadata
            .push(("general.alignment".into(), Value::U32(alignment)));
        self.alignment = if alignment.is_power_of_two() {
            alignment.into()
        } else {
            1
        };
        self
    }

    /// Appends a metadata entry (duplicates are written too).
    pub fn kv(&mut self, key: impl Into<String>, value: impl Into<Value>) -> &mut Self {
        self.metadata.push((key.into(), value.into()));
        self
    }

    /// Appends a tensor with raw data bytes (e.g. already-quantized blocks).
    pub fn tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
        data: impl Into<Vec<u8>>,
    ) -> &mut Self {
        self.tensors.push(PendingTensor {
            name: name.into(),
            dims: dims.to_vec(),
            ty,
            data: data.into(),
        });
        self
    }

    /// Appends an F32 tensor.
    pub fn tensor_f32(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        values: &[f32],
    ) -> &mut Self {
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor(name, dims, GgmlType::F32, data)
    }

    /// The file's bytes.
    ///
    /// # Panics
    /// If an array mixes value types (GGUF arrays have one element type).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&self.version.to_le_bytes());
        put_u64(&mut out, self.tensors.len() as u64);
        put_u64(&mut out, self.metadata.len() as u64);
        for (key, value) in &self.metadata {
            put_str(&mut out, key);
            out.extend_from_slice(&value.gguf_type_id().to_le_bytes());
            put_value(&mut out, value);
        }
        let mut rel = 0u64;
        let mut offsets = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for &d in &t.dims {
                put_u64(&mut out, d);
            }
            out.extend_from_slice(&t.ty.id().to_le_bytes());
            put_u64(&mut out, rel);
            offsets.push(rel);
            rel = (rel + t.data.len() as u64).next_multiple_of(self.alignment);
        }
        pad(&mut out, self.alignment);
        let data_start = out.len();
        for (t, off) in self.tensors.iter().zip(offsets) {
            out.resize(data_start + off as usize, 0);
            out.extend_from_slice(&t.data);
        }
        if !self.tensors.is_empty() {
            pad(&mut out, self.alignment);
        }
        out
    }

    /// Writes [`Self::to_bytes`] to `path`.
    pub fn write_to(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, self.to_bytes())
    }
}

/// The header of a GGUF file whose tensor data is copied separately (a snapshot's
/// re-written GGUF section): magic, version, `metadata` and the infos of `tensors`
/// with their offsets made relative to `data_offset` again (the absolute offset
/// their source file's data section starts at), zero-padded to `alignment`. The
/// source's data section appended unchanged then makes a valid GGUF.
pub fn header_bytes(
    version: u32,
    alignment: u64,
    metadata: &[(String, Value)],
    tensors: &[crate::TensorInfo],
    data_offset: u64,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&version.to_le_bytes());
    put_u64(&mut out, tensors.len() as u64);
    put_u64(&mut out, metadata.len() as u64);
    for (key, value) in metadata {
        put_str(&mut out, key);
        out.extend_from_slice(&value.gguf_type_id().to_le_bytes());
        put_value(&mut out, value);
    }
    for t in tensors {
        put_str(&mut out, &t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for &d in &t.dims {
            put_u64(&mut out, d);
        }
        out.extend_from_slice(&t.ty.id().to_le_bytes());
        put_u64(&mut out, t.offset - data_offset);
    }
    pad(&mut out, alignment.max(1));
    out
}

fn pad(out: &mut Vec<u8>, alignment: u64) {
    let len = (out.len() as u64).next_multiple_of(alignment);
    out.resize(len as usize, 0);
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u64(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => out.push(*v),
        Value::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::String(s) => put_str(out, s),
        Value::Array(items) => {
            // An empty array's element type is not recorded in `Value`; u8 is as good as any.
            let elem_ty = items.first().map_or(0, Value::gguf_type_id);
            assert!(
                items.iter().all(|v| v.gguf_type_id() == elem_ty),
                "GGUF arrays hold one element type; this array mixes types"
            );
            out.extend_from_slice(&elem_ty.to_le_bytes());
            put_u64(out, items.len() as u64);
            for item in items {
                put_value(out, item);
            }
        }
    }
}
