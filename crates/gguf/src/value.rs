//! Metadata values: typed accessors and a short display form for listings.

use std::fmt;

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

/// Strings longer than this many characters are cut in [`Value`]'s `Display`.
const DISPLAY_STR_CHARS: usize = 60;
/// Arrays longer than this are summarized as `[type × len]` in `Display`.
const DISPLAY_ARRAY_ITEMS: usize = 8;

impl Value {
    /// The GGUF type name: `u8`, `i8`, `u16`, `i16`, `u32`, `i32`, `u64`, `i64`,
    /// `f32`, `f64`, `bool`, `string` or `array`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::U8(_) => "u8",
            Self::I8(_) => "i8",
            Self::U16(_) => "u16",
            Self::I16(_) => "i16",
            Self::U32(_) => "u32",
            Self::I32(_) => "i32",
            Self::U64(_) => "u64",
            Self::I64(_) => "i64",
            Self::F32(_) => "f32",
            Self::F64(_) => "f64",
            Self::Bool(_) => "bool",
            Self::String(_) => "string",
            Self::Array(_) => "array",
        }
    }

    /// The type id stored in GGUF files (0..=12).
    pub fn gguf_type_id(&self) -> u32 {
        match self {
            Self::U8(_) => 0,
            Self::I8(_) => 1,
            Self::U16(_) => 2,
            Self::I16(_) => 3,
            Self::U32(_) => 4,
            Self::I32(_) => 5,
            Self::F32(_) => 6,
            Self::Bool(_) => 7,
            Self::String(_) => 8,
            Self::Array(_) => 9,
            Self::U64(_) => 10,
            Self::I64(_) => 11,
            Self::F64(_) => 12,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// Any integer that fits in u64 (negative signed values do not).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer that fits in i64.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => i64::try_from(v).ok(),
            Self::I8(v) => Some(v.into()),
            Self::I16(v) => Some(v.into()),
            Self::I32(v) => Some(v.into()),
            Self::I64(v) => Some(v),
            _ => None,
        }
    }

    /// f32, f64 (narrowed) or any integer (converted, rounding if large).
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            Self::F32(v) => Some(v),
            Self::F64(v) => Some(v as f32),
            Self::U64(v) => Some(v as f32),
            Self::I64(v) => Some(v as f32),
            _ => self.as_i64().map(|v| v as f32),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// A short form for listings such as `thaw inspect`: numbers as written, strings
/// quoted and escaped (cut after 60 characters, with the byte length), short arrays
/// of scalars in full (`[1, 2, 3]`), other arrays as `[string × 49152]`.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::U8(v) => write!(f, "{v}"),
            Self::I8(v) => write!(f, "{v}"),
            Self::U16(v) => write!(f, "{v}"),
            Self::I16(v) => write!(f, "{v}"),
            Self::U32(v) => write!(f, "{v}"),
            Self::I32(v) => write!(f, "{v}"),
            Self::U64(v) => write!(f, "{v}"),
            Self::I64(v) => write!(f, "{v}"),
            Self::F32(v) => write!(f, "{v}"),
            Self::F64(v) => write!(f, "{v}"),
            Self::Bool(v) => write!(f, "{v}"),
            Self::String(s) => {
                let cut: String = s.chars().take(DISPLAY_STR_CHARS).collect();
                write!(f, "\"{}", cut.escape_debug())?;
                if cut.len() < s.len() {
                    write!(f, "…\" ({} bytes)", s.len())
                } else {
                    f.write_str("\"")
                }
            }
            Self::Array(items) => {
                let nested = items.iter().any(|v| matches!(v, Self::Array(_)));
                if items.len() <= DISPLAY_ARRAY_ITEMS && !nested {
                    f.write_str("[")?;
                    for (i, v) in items.iter().enumerate() {
                        if i > 0 {
                            f.write_str(", ")?;
                        }
                        write!(f, "{v}")?;
                    }
                    f.write_str("]")
                } else {
                    let ty = items.first().map_or("?", Value::type_name);
                    write!(f, "[{ty} × {}]", items.len())
                }
            }
        }
    }
}

macro_rules! from_scalar {
    ($($t:ty => $v:ident),* $(,)?) => {
        $(impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Self::$v(v)
            }
        })*
    };
}
from_scalar!(u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32,
    u64 => U64, i64 => I64, f32 => F32, f64 => F64, bool => Bool, String => String);

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Self::String(v.to_owned())
    }
}

impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(v: Vec<T>) -> Self {
        Self::Array(v.into_iter().map(Into::into).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_short_forms() {
        assert_eq!(Value::U32(7).to_string(), "7");
        assert_eq!(Value::Bool(false).to_string(), "false");
        assert_eq!(Value::from("a\"b\n").to_string(), r#""a\"b\n""#);
        let long = "x".repeat(100);
        assert_eq!(
            Value::from(long).to_string(),
            format!("\"{}…\" (100 bytes)", "x".repeat(60))
        );
        assert_eq!(Value::from(vec![1u32, 2, 3]).to_string(), "[1, 2, 3]");
        let tokens: Vec<&str> = vec!["a"; 49152];
        assert_eq!(Value::from(tokens).to_string(), "[string × 49152]");
        let nested = Value::from(vec![vec![1u8], vec![2u8]]);
        assert_eq!(nested.to_string(), "[array × 2]");
        assert_eq!(Value::Array(vec![]).to_string(), "[]");
    }

    #[test]
    fn numeric_accessors() {
        assert_eq!(Value::I32(-1).as_u64(), None);
        assert_eq!(Value::I64(5).as_u64(), Some(5));
        assert_eq!(Value::U64(u64::MAX).as_i64(), None);
        assert_eq!(Value::U16(3).as_f32(), Some(3.0));
        assert_eq!(Value::F64(0.5).as_f32(), Some(0.5));
        assert_eq!(Value::from("1").as_u64(), None);
        assert_eq!(Value::F32(1.0).as_u64(), None);
        assert_eq!(Value::Bool(true).as_f32(), None);
    }
}
