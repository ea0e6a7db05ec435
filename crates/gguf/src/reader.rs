//! The GGUF header parser: a bounds-checked cursor over the raw bytes. Every count
//! read from the file is checked against the bytes that remain before anything is
//! allocated, so a hostile header cannot make us allocate more than a small multiple
//! of the file's own size.

use std::collections::HashMap;
use std::path::Path;

use crate::{GgmlType, GgufError, TensorInfo, Value};

/// `general.alignment` when the key is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Deepest array nesting accepted (an array of arrays is depth 2).
pub const MAX_ARRAY_DEPTH: usize = 8;
/// Most array elements accepted over the whole file. Each element becomes a
/// [`Value`] of 32 bytes, so this caps metadata memory at about 512 MiB plus
/// string contents; real vocabularies hold well under a million elements.
pub const MAX_ARRAY_ELEMENTS: u64 = 1 << 24;
/// ggml's `GGML_MAX_DIMS`.
pub const MAX_DIMS: u32 = 4;

const MAGIC: &[u8; 4] = b"GGUF";
/// Smallest possible metadata entry: key length (8) + value type (4) + 1-byte value.
const MIN_KV_BYTES: u64 = 13;
/// Smallest possible tensor info: name length (8) + n_dims (4) + one dim (8) +
/// type (4) + offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 32;

pub(crate) struct Header {
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub meta_index: HashMap<String, usize>,
    pub tensors: Vec<TensorInfo>,
    pub tensor_index: HashMap<String, usize>,
    pub data_offset: u64,
    pub alignment: u64,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
    /// What is being read, for error messages (set once per entry, not per element).
    ctx: String,
    /// Array elements still allowed (see [`MAX_ARRAY_ELEMENTS`]).
    elements_left: u64,
}

impl<'a> Cursor<'a> {
    fn corrupt(&self, what: impl Into<String>) -> GgufError {
        GgufError::Corrupt {
            path: self.path.to_path_buf(),
            what: what.into(),
        }
    }

    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn bytes(&mut self, n: u64) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(self.corrupt(format!(
                "unexpected end of file at byte {} while reading {} (needed {n} bytes, \
                 only {} left; file size {}): the file is truncated; download it again",
                self.pos,
                self.ctx,
                self.remaining(),
                self.buf.len()
            )));
        }
        // n <= remaining, which fits in usize.
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N as u64)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, GgufError> {
        Ok(self.array::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A length-prefixed string's raw bytes; the length is checked against the file.
    fn raw_string(&mut self) -> Result<&'a [u8], GgufError> {
        let at = self.pos;
        let len = self.u64()?;
        if len > self.remaining() {
            return Err(self.corrupt(format!(
                "string length {len} at byte {at} (in {}) exceeds the {} bytes left in the file",
                self.ctx,
                self.remaining()
            )));
        }
        self.bytes(len)
    }

    fn utf8(&mut self, what: impl FnOnce() -> String) -> Result<String, GgufError> {
        let raw = self.raw_string()?;
        match std::str::from_utf8(raw) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(self.corrupt(format!("{} is not valid UTF-8 ({e})", what()))),
        }
    }

    fn value(&mut self, ty: u32, depth: usize, key: &str) -> Result<Value, GgufError> {
        Ok(match ty {
            0 => Value::U8(self.u8()?),
            1 => Value::I8(i8::from_le_bytes(self.array()?)),
            2 => Value::U16(u16::from_le_bytes(self.array()?)),
            3 => Value::I16(i16::from_le_bytes(self.array()?)),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(i32::from_le_bytes(self.array()?)),
            6 => Value::F32(f32::from_le_bytes(self.array()?)),
            // Writers emit 0/1; like C readers we take any nonzero byte as true.
            7 => Value::Bool(self.u8()? != 0),
            8 => Value::String(self.utf8(|| format!("the string value of metadata key `{key}`"))?),
            9 => self.array_value(depth + 1, key)?,
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.array()?)),
            12 => Value::F64(f64::from_le_bytes(self.array()?)),
            other => {
                return Err(self.corrupt(format!(
                    "metadata key `{key}` has unknown value type {other} (valid types are 0 to 12)"
                )));
            }
        })
    }

    fn array_value(&mut self, depth: usize, key: &str) -> Result<Value, GgufError> {
        if depth > MAX_ARRAY_DEPTH {
            return Err(self.corrupt(format!(
                "metadata key `{key}` nests arrays more than {MAX_ARRAY_DEPTH} deep"
            )));
        }
        let elem_ty = self.u32()?;
        let count = self.u64()?;
        let Some(min) = min_value_bytes(elem_ty) else {
            return Err(self.corrupt(format!(
                "metadata key `{key}` is an array of unknown value type {elem_ty} \
                 (valid types are 0 to 12)"
            )));
        };
        if count
            .checked_mul(min)
            .is_none_or(|need| need > self.remaining())
        {
            return Err(self.corrupt(format!(
                "metadata key `{key}` claims an array of {count} elements of type {elem_ty}, \
                 more than the {} bytes left in the file can hold",
                self.remaining()
            )));
        }
        if count > self.elements_left {
            return Err(self.corrupt(format!(
                "metadata key `{key}`: arrays hold more than {MAX_ARRAY_ELEMENTS} elements \
                 in total, the limit thaw accepts"
            )));
        }
        self.elements_left -= count;
        // count <= remaining bytes, so this capacity is bounded by the file size.
        let mut items = Vec::with_capacity(count as usize);
        for _ in 0..count {
            items.push(self.value(elem_ty, depth, key)?);
        }
        Ok(Value::Array(items))
    }
}

/// Fewest bytes a value of this GGUF type can occupy, or `None` for unknown types.
fn min_value_bytes(ty: u32) -> Option<u64> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 => 8,     // length prefix
        9 => 4 + 8, // element type + count
        10..=12 => 8,
        _ => return None,
    })
}

pub(crate) fn parse(path: &Path, buf: &[u8]) -> Result<Header, GgufError> {
    let mut c = Cursor {
        buf,
        pos: 0,
        path,
        ctx: "the header".into(),
        elements_left: MAX_ARRAY_ELEMENTS,
    };
    if buf.len() < MAGIC.len() {
        if MAGIC.starts_with(buf) {
            return Err(c.corrupt(format!("the file is only {} bytes long", buf.len())));
        }
        return Err(GgufError::BadMagic {
            path: path.to_path_buf(),
        });
    }
    if c.array::<4>()? != *MAGIC {
        return Err(GgufError::BadMagic {
            path: path.to_path_buf(),
        });
    }
    let version = c.u32()?;
    if version != 2 && version != 3 {
        return Err(GgufError::UnsupportedVersion {
            path: path.to_path_buf(),
            version,
        });
    }
    let tensor_count = c.u64()?;
    let kv_count = c.u64()?;

    if kv_count
        .checked_mul(MIN_KV_BYTES)
        .is_none_or(|need| need > c.remaining())
    {
        return Err(c.corrupt(format!(
            "the header claims {kv_count} metadata entries, more than the {} bytes left in \
             the file can hold",
            c.remaining()
        )));
    }
    let mut metadata = Vec::with_capacity(kv_count as usize);
    let mut meta_index = HashMap::with_capacity(kv_count as usize);
    for i in 0..kv_count {
        c.ctx = format!("metadata entry #{i}");
        let key = c.utf8(|| format!("the name of metadata entry #{i}"))?;
        // Key names are short dotted identifiers: control characters mean the bytes
        // are not a key at all (a damaged length), so name the entry, not the bytes.
        if key.chars().any(char::is_control) {
            let head: String = key.chars().take(40).collect();
            return Err(c.corrupt(format!(
                "the name of metadata entry #{i} is not a key ({} bytes starting {head:?})",
                key.len()
            )));
        }
        c.ctx = format!("metadata key `{key}`");
        let ty = c.u32()?;
        let value = c.value(ty, 0, &key)?;
        if meta_index.insert(key.clone(), metadata.len()).is_some() {
            return Err(c.corrupt(format!("metadata key `{key}` appears more than once")));
        }
        metadata.push((key, value));
    }

    let alignment = match meta_index.get("general.alignment").map(|&i| &metadata[i].1) {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) if a.is_power_of_two() => u64::from(*a),
        Some(Value::U32(a)) => {
            return Err(c.corrupt(format!(
                "general.alignment is {a}; it must be a nonzero power of two"
            )));
        }
        Some(other) => {
            return Err(GgufError::WrongType {
                path: path.to_path_buf(),
                key: "general.alignment".into(),
                expected: "u32",
                found: other.type_name(),
            });
        }
    };

    c.ctx = "the tensor count".into();
    if tensor_count
        .checked_mul(MIN_TENSOR_INFO_BYTES)
        .is_none_or(|need| need > c.remaining())
    {
        return Err(c.corrupt(format!(
            "the header claims {tensor_count} tensors, more than the {} bytes left in the \
             file can hold",
            c.remaining()
        )));
    }
    // (name, dims, type, relative offset); sizes are checked once the data offset is known.
    let mut raw = Vec::with_capacity(tensor_count as usize);
    let mut tensor_index = HashMap::with_capacity(tensor_count as usize);
    for i in 0..tensor_count {
        c.ctx = format!("tensor info #{i}");
        let name = c.utf8(|| format!("the name of tensor #{i}"))?;
        c.ctx = format!("the info of tensor `{name}`");
        let n_dims = c.u32()?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(c.corrupt(format!(
                "tensor `{name}` has {n_dims} dimensions; ggml allows 1 to {MAX_DIMS}"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for j in 0..n_dims {
            let d = c.u64()?;
            if d == 0 || d > i64::MAX as u64 {
                return Err(c.corrupt(format!("tensor `{name}` has invalid dimension {j}: {d}")));
            }
            dims.push(d);
        }
        let ty = GgmlType::from_id(c.u32()?);
        let offset = c.u64()?;
        if tensor_index.insert(name.clone(), raw.len()).is_some() {
            return Err(c.corrupt(format!("tensor `{name}` appears more than once")));
        }
        raw.push((name, dims, ty, offset));
    }

    let header_end = c.pos as u64;
    let data_offset = header_end
        .checked_next_multiple_of(alignment)
        .ok_or_else(|| c.corrupt("the data section offset overflows"))?;
    let file_len = buf.len() as u64;
    if !raw.is_empty() && data_offset > file_len {
        return Err(c.corrupt(format!(
            "the tensor data section would start at byte {data_offset}, past the end of the \
             file (size {file_len}): the file is truncated; download it again"
        )));
    }

    let mut tensors = Vec::with_capacity(raw.len());
    for (name, dims, ty, rel) in raw {
        let size = tensor_size(&c, &name, &dims, ty)?;
        if rel % alignment != 0 {
            return Err(c.corrupt(format!(
                "tensor `{name}` offset {rel} is not a multiple of the alignment {alignment}"
            )));
        }
        let start = data_offset.checked_add(rel);
        let end = start.and_then(|s| s.checked_add(size));
        match (start, end) {
            (Some(start), Some(end)) if end <= file_len => {
                tensors.push(TensorInfo {
                    name,
                    dims,
                    ty,
                    offset: start,
                    size,
                });
            }
            _ => {
                return Err(c.corrupt(format!(
                    "tensor `{name}` data [{}..{}] extends past the end of the file \
                     (size {file_len}): the file is truncated; download it again",
                    data_offset as u128 + rel as u128,
                    data_offset as u128 + rel as u128 + size as u128,
                )));
            }
        }
    }

    Ok(Header {
        version,
        metadata,
        meta_index,
        tensors,
        tensor_index,
        data_offset,
        alignment,
    })
}

/// Byte size of a tensor, with every step checked. Unknown types have size 0.
fn tensor_size(c: &Cursor<'_>, name: &str, dims: &[u64], ty: GgmlType) -> Result<u64, GgufError> {
    let n = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(|| {
            c.corrupt(format!(
                "tensor `{name}` has too many elements (dims {dims:?} overflow)"
            ))
        })?;
    let Some((block, block_bytes)) = ty.block_layout() else {
        return Ok(0);
    };
    let (block, block_bytes) = (block as u64, block_bytes as u64);
    if !dims[0].is_multiple_of(block) {
        return Err(c.corrupt(format!(
            "tensor `{name}` of type {ty} has rows of {} elements, not a multiple of the \
             type's block size {block}",
            dims[0]
        )));
    }
    (n / block).checked_mul(block_bytes).ok_or_else(|| {
        c.corrupt(format!(
            "tensor `{name}` byte size overflows (dims {dims:?}, type {ty})"
        ))
    })
}
