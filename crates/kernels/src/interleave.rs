//! Q4_1 and Q8_0 matrices interleaved by 16 rows (GGUF types `Q4_1x16`, `Q8_0x16`,
//! thaw's own), the layout snapshots store and the GGUF path builds at load for the
//! AVX-512 kernels.
//!
//! A decode matvec on ggml's row-major blocks is bound by instruction issue, not
//! memory: each 512-bit op serves two rows, and gathering the rows' scales and quants
//! costs as much as the dot products. Interleaved, one 512-bit register holds the same
//! 4 quant bytes of 16 rows (one 32-bit lane per row), so scales load with one
//! instruction, quants 64 bytes at a time and the 16 rows' sums finish in vertical
//! adds.
//!
//! Layout: rows in groups of 16; each group is `nb` blocks of 16 plain blocks' bytes:
//! each f16 scale field of the 16 rows (32 bytes per field: Q4_1's `d` then `m`,
//! Q8_0's `d`), then for every 4 quant bytes g of a block the 16 rows' bytes 4g..4g + 4
//! (64 bytes, row r at 4r; Q8_0's quants offset by 128, so unsigned). A group occupies
//! exactly the bytes its 16 plain rows would. Rows past the last whole group stay
//! plain, so the matrix has the same size as the GGUF's and row `r`'s bytes start at
//! `r * row_bytes` whenever `r` is a multiple of 16 or in the plain tail.

use crate::GgmlType;

/// Rows per interleaved group.
pub const ROWS: usize = 16;

/// The token embeddings' GGUF name.
pub const EMBEDDINGS: &str = "token_embd.weight";

/// A plain block type's shape: bytes per block, leading f16 scale fields, and what
/// its quant bytes are XORed with when interleaved.
#[derive(Clone, Copy)]
struct Shape {
    block: usize,
    fields: usize,
    flip: u8,
}

fn shape(plain: GgmlType) -> Shape {
    match plain {
        GgmlType::Q4_1 => Shape {
            block: 20,
            fields: 2,
            flip: 0,
        },
        GgmlType::Q8_0 => Shape {
            block: 34,
            fields: 1,
            flip: 0x80,
        },
        other => panic!("{other} has no interleaved layout"),
    }
}

/// The interleaved type of a plain one, if it has one.
pub fn interleaved(plain: GgmlType) -> Option<GgmlType> {
    match plain {
        GgmlType::Q4_1 => Some(GgmlType::Q4_1x16),
        GgmlType::Q8_0 => Some(GgmlType::Q8_0x16),
        _ => None,
    }
}

/// The plain type of an interleaved one, if `ty` is interleaved.
pub fn plain(ty: GgmlType) -> Option<GgmlType> {
    match ty {
        GgmlType::Q4_1x16 => Some(GgmlType::Q4_1),
        GgmlType::Q8_0x16 => Some(GgmlType::Q8_0),
        _ => None,
    }
}

/// Whether a tensor (GGUF type and dims, columns first) is one that snapshots
/// store, and loaders for the AVX-512 kernels make, interleaved: a Q4_1 or Q8_0 matrix
/// of at least one group of rows. (Row lookups, e.g. of the token embeddings, read
/// interleaved rows with [`plain_row`].)
pub fn interleaves(ty: GgmlType, dims: &[u64]) -> bool {
    interleaved(ty).is_some()
        && matches!(dims, [cols, rows] if cols % 32 == 0 && *rows >= ROWS as u64)
}

/// Rows of a `rows`-row matrix stored interleaved (the rest are plain).
pub fn interleaved_rows(rows: usize) -> usize {
    rows / ROWS * ROWS
}

/// Interleaves (`pack`) or restores rows `rows` (of 16) of one group of `nb` blocks;
/// the plain side holds just those rows.
fn group(
    s: Shape,
    nb: usize,
    src: &[u8],
    dst: &mut [u8],
    pack: bool,
    rows: core::ops::Range<usize>,
) {
    match (s.block, s.fields) {
        (20, 2) => group_of::<20, 2, { 16 * 20 }>(s.flip, nb, src, dst, pack, rows),
        (34, 1) => group_of::<34, 1, { 16 * 34 }>(s.flip, nb, src, dst, pack, rows),
        _ => unreachable!("shape() knows only these"),
    }
}

/// [`group`] for one block shape (`B` bytes, `F` scale fields, `G` = 16 · `B`), a scale
/// field (2 bytes) or 4 quant bytes at a time: fixed sizes let the copies compile to
/// plain moves.
fn group_of<const B: usize, const F: usize, const G: usize>(
    flip: u8,
    nb: usize,
    src: &[u8],
    dst: &mut [u8],
    pack: bool,
    rows: core::ops::Range<usize>,
) {
    let rb = nb * B;
    // The plain side holds just `rows`, the interleaved side the whole group.
    let (plain_len, packed_len) = (rows.len() * rb, ROWS * rb);
    let (src_len, dst_len) = if pack {
        (plain_len, packed_len)
    } else {
        (packed_len, plain_len)
    };
    assert!(rows.end <= ROWS && src.len() >= src_len && dst.len() >= dst_len);
    let flip = u32::from_ne_bytes([flip; 4]);
    let word = |b: &[u8]| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) ^ flip;
    for b in 0..nb {
        for r in rows.clone() {
            let plain = (r - rows.start) * rb + b * B;
            if pack {
                let blk: &[u8; B] = src[plain..plain + B].try_into().expect("a block");
                let out: &mut [u8; G] = (&mut dst[b * G..b * G + G])
                    .try_into()
                    .expect("a group block");
                for f in 0..F {
                    out[32 * f + 2 * r..][..2].copy_from_slice(&blk[2 * f..2 * f + 2]);
                }
                for g in 0..(B - 2 * F) / 4 {
                    let w = word(&blk[2 * F + 4 * g..]);
                    out[32 * F + 64 * g + 4 * r..][..4].copy_from_slice(&w.to_ne_bytes());
                }
            } else {
                let packed: &[u8; G] = src[b * G..b * G + G].try_into().expect("a group block");
                let blk: &mut [u8; B] = (&mut dst[plain..plain + B]).try_into().expect("a block");
                for f in 0..F {
                    blk[2 * f..2 * f + 2].copy_from_slice(&packed[32 * f + 2 * r..][..2]);
                }
                for g in 0..(B - 2 * F) / 4 {
                    let w = word(&packed[32 * F + 64 * g + 4 * r..]);
                    blk[2 * F + 4 * g..][..4].copy_from_slice(&w.to_ne_bytes());
                }
            }
        }
    }
}

/// Interleaves a whole plain matrix of type `plain` (`rows` rows of `cols` values).
pub fn pack_matrix(plain: GgmlType, cols: usize, rows: usize, src: &[u8], dst: &mut [u8]) {
    by_group(plain, cols, rows, src, dst, true);
}

/// Undoes [`pack_matrix`].
pub fn unpack_matrix(plain: GgmlType, cols: usize, rows: usize, src: &[u8], dst: &mut [u8]) {
    by_group(plain, cols, rows, src, dst, false);
}

/// `group` over the whole groups; the plain tail is copied.
fn by_group(ty: GgmlType, cols: usize, rows: usize, src: &[u8], dst: &mut [u8], pack: bool) {
    let s = shape(ty);
    let nb = cols / 32;
    let gb = ROWS * nb * s.block;
    let full = interleaved_rows(rows) / ROWS * gb;
    assert!(src.len() == dst.len() && src.len() >= full);
    for (a, b) in src[..full]
        .chunks_exact(gb)
        .zip(dst[..full].chunks_exact_mut(gb))
    {
        group(s, nb, a, b, pack, 0..ROWS);
    }
    dst[full..].copy_from_slice(&src[full..]);
}

/// Row `r` of an interleaved matrix of plain type `plain`, in plain blocks (`dst`:
/// one row's bytes).
pub fn plain_row(plain: GgmlType, cols: usize, rows: usize, src: &[u8], r: usize, dst: &mut [u8]) {
    let s = shape(plain);
    let rb = cols / 32 * s.block;
    assert!(r < rows && dst.len() == rb);
    let full = interleaved_rows(rows);
    if r >= full {
        dst.copy_from_slice(&src[r * rb..][..rb]);
        return;
    }
    // Only row r of its group (one lookup per token).
    let g0 = r / ROWS * ROWS;
    let src = &src[g0 * rb..][..ROWS * rb];
    group(s, cols / 32, src, dst, false, r - g0..r - g0 + 1);
}
