//! ggml tensor types: ids as stored in GGUF, block sizes and bytes per block.

/// A ggml tensor element type. Only types thaw can read are listed; others are
/// reported by id in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
    BF16,
    /// thaw's own: Q4_1 blocks with each group of 16 rows interleaved for the AVX-512
    /// kernels (see `thaw_kernels::interleave`). Only snapshots store it.
    Q4_1x16,
    /// thaw's own: Q8_0 blocks interleaved by 16 rows, the same way (quants stored
    /// offset by 128).
    Q8_0x16,
    /// Known to ggml but not to thaw; holds the raw id.
    Other(u32),
}

impl GgmlType {
    /// Id of [`GgmlType::Q4_1x16`], far above ggml's own ids.
    const Q4_1X16_ID: u32 = 1 << 16 | 3;
    /// Id of [`GgmlType::Q8_0x16`].
    const Q8_0X16_ID: u32 = 1 << 16 | 8;

    pub fn from_id(id: u32) -> Self {
        match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            9 => Self::Q8_1,
            10 => Self::Q2K,
            11 => Self::Q3K,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            15 => Self::Q8K,
            30 => Self::BF16,
            Self::Q4_1X16_ID => Self::Q4_1x16,
            Self::Q8_0X16_ID => Self::Q8_0x16,
            other => Self::Other(other),
        }
    }

    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q5_1 => 7,
            Self::Q8_0 => 8,
            Self::Q8_1 => 9,
            Self::Q2K => 10,
            Self::Q3K => 11,
            Self::Q4K => 12,
            Self::Q5K => 13,
            Self::Q6K => 14,
            Self::Q8K => 15,
            Self::BF16 => 30,
            Self::Q4_1x16 => Self::Q4_1X16_ID,
            Self::Q8_0x16 => Self::Q8_0X16_ID,
            Self::Other(id) => id,
        }
    }

    /// Elements per block and bytes per block, or `None` for unknown types.
    pub fn block_layout(self) -> Option<(usize, usize)> {
        Some(match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::BF16 => (1, 2),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 | Self::Q4_1x16 => (32, 20),
            Self::Q5_0 => (32, 22),
            Self::Q5_1 => (32, 24),
            Self::Q8_0 | Self::Q8_0x16 => (32, 34),
            Self::Q8_1 => (32, 36),
            Self::Q2K => (256, 84),
            Self::Q3K => (256, 110),
            Self::Q4K => (256, 144),
            Self::Q5K => (256, 176),
            Self::Q6K => (256, 210),
            Self::Q8K => (256, 292),
            Self::Other(_) => return None,
        })
    }

    /// Bytes needed for `n` elements (which must be a multiple of the block size).
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        let (bs, bytes) = self.block_layout()?;
        if !n.is_multiple_of(bs) {
            return None;
        }
        (n / bs).checked_mul(bytes)
    }

    pub fn name(self) -> String {
        match self {
            Self::Other(id) => format!("ggml type {id}"),
            t => format!("{t:?}"),
        }
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}
