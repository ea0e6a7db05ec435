//! Q4_1 matrices interleaved by 16 rows ("Q4_1x16"), the layout snapshots store and
//! the GGUF path builds at load for the AVX-512 kernels.
//!
//! A decode matvec on ggml's row-major Q4_1 blocks is bound by instruction issue, not
//! memory: each 512-bit op serves two rows, and gathering the rows' scales and nibbles
//! costs as much as the dot products. Interleaved, one 512-bit register holds the same
//! 4 quant bytes of 16 rows (one 32-bit lane per row), so scales load with one
//! instruction, nibbles unpack 64 bytes at a time and the 16 rows' sums finish in
//! vertical adds.
//!
//! Layout: rows in groups of 16; each group is `nb` blocks of [`GROUP_BLOCK`] bytes:
//! the 16 rows' f16 `d` (32 bytes), their f16 `m` (32 bytes), then for g in 0..4 the
//! rows' quant bytes 4g..4g + 4 (64 bytes each, row r at 4r). A group occupies exactly
//! the bytes its 16 plain rows would. Rows past the last whole group stay plain, so the
//! matrix has the same size as the GGUF's and row `r`'s bytes start at `r * row_bytes`
//! whenever `r` is a multiple of 16 or in the plain tail.

use crate::GgmlType;
use crate::reference::q4::Q4_1_BYTES;

/// Rows per interleaved group.
pub const ROWS: usize = 16;
/// Bytes of one block of a group (16 plain Q4_1 blocks).
pub const GROUP_BLOCK: usize = ROWS * Q4_1_BYTES;

/// The token embeddings' GGUF name: read a row at a time, never interleaved.
pub const EMBEDDINGS: &str = "token_embd.weight";

/// Whether a tensor (GGUF name, type and dims, columns first) is one that snapshots
/// store, and loaders for the AVX-512 kernels make, interleaved: a Q4_1 matrix of at
/// least one group of rows that is multiplied, not looked up.
pub fn interleaves(name: &str, ty: GgmlType, dims: &[u64]) -> bool {
    ty == GgmlType::Q4_1
        && matches!(dims, [cols, rows] if cols % 32 == 0 && *rows >= ROWS as u64)
        && name != EMBEDDINGS
}

/// Rows of a `rows`-row matrix stored interleaved (the rest are plain).
pub fn interleaved_rows(rows: usize) -> usize {
    rows / ROWS * ROWS
}

/// Interleaves one group: `src` holds 16 plain rows of `nb` blocks, `dst` as many bytes.
pub fn pack_group(nb: usize, src: &[u8], dst: &mut [u8]) {
    let rb = nb * Q4_1_BYTES;
    assert!(src.len() >= ROWS * rb && dst.len() >= ROWS * rb);
    for (b, out) in dst[..ROWS * rb].chunks_exact_mut(GROUP_BLOCK).enumerate() {
        let out: &mut [u8; GROUP_BLOCK] = out.try_into().expect("exact chunk");
        for r in 0..ROWS {
            let blk: &[u8; Q4_1_BYTES] = src[r * rb + b * Q4_1_BYTES..][..Q4_1_BYTES]
                .try_into()
                .expect("one block");
            out[2 * r..2 * r + 2].copy_from_slice(&blk[0..2]);
            out[32 + 2 * r..32 + 2 * r + 2].copy_from_slice(&blk[2..4]);
            for g in 0..4 {
                out[64 + 64 * g + 4 * r..][..4].copy_from_slice(&blk[4 + 4 * g..][..4]);
            }
        }
    }
}

/// Undoes [`pack_group`].
pub fn unpack_group(nb: usize, src: &[u8], dst: &mut [u8]) {
    let rb = nb * Q4_1_BYTES;
    assert!(src.len() >= ROWS * rb && dst.len() >= ROWS * rb);
    for (b, blocks) in src[..ROWS * rb].chunks_exact(GROUP_BLOCK).enumerate() {
        let blocks: &[u8; GROUP_BLOCK] = blocks.try_into().expect("exact chunk");
        for r in 0..ROWS {
            let blk: &mut [u8; Q4_1_BYTES] = (&mut dst[r * rb + b * Q4_1_BYTES..][..Q4_1_BYTES])
                .try_into()
                .expect("one block");
            blk[0..2].copy_from_slice(&blocks[2 * r..2 * r + 2]);
            blk[2..4].copy_from_slice(&blocks[32 + 2 * r..32 + 2 * r + 2]);
            for g in 0..4 {
                blk[4 + 4 * g..][..4].copy_from_slice(&blocks[64 + 64 * g + 4 * r..][..4]);
            }
        }
    }
}

/// Interleaves a whole plain Q4_1 matrix (`rows` rows of `cols` values) into `dst`.
pub fn pack_matrix(cols: usize, rows: usize, src: &[u8], dst: &mut [u8]) {
    by_group(cols, rows, src, dst, pack_group);
}

/// Undoes [`pack_matrix`].
pub fn unpack_matrix(cols: usize, rows: usize, src: &[u8], dst: &mut [u8]) {
    by_group(cols, rows, src, dst, unpack_group);
}

/// `f(nb, src group, dst group)` over the whole groups; the plain tail is copied.
fn by_group(cols: usize, rows: usize, src: &[u8], dst: &mut [u8], f: fn(usize, &[u8], &mut [u8])) {
    let nb = cols / 32;
    let gb = ROWS * nb * Q4_1_BYTES;
    let full = interleaved_rows(rows) / ROWS * gb;
    assert!(src.len() == dst.len() && src.len() >= full);
    for (s, d) in src[..full]
        .chunks_exact(gb)
        .zip(dst[..full].chunks_exact_mut(gb))
    {
        f(nb, s, d);
    }
    dst[full..].copy_from_slice(&src[full..]);
}

/// Row `r` of an interleaved matrix in plain Q4_1 blocks (`dst`: one row's bytes).
pub fn plain_row(cols: usize, rows: usize, src: &[u8], r: usize, dst: &mut [u8]) {
    let nb = cols / 32;
    let rb = nb * Q4_1_BYTES;
    assert!(r < rows && dst.len() == rb);
    if r >= interleaved_rows(rows) {
        dst.copy_from_slice(&src[r * rb..][..rb]);
        return;
    }
    let (group, i) = (r / ROWS * ROWS * rb, r % ROWS);
    for (b, blk) in dst.chunks_exact_mut(Q4_1_BYTES).enumerate() {
        let blocks = &src[group + b * GROUP_BLOCK..][..GROUP_BLOCK];
        blk[0..2].copy_from_slice(&blocks[2 * i..2 * i + 2]);
        blk[2..4].copy_from_slice(&blocks[32 + 2 * i..32 + 2 * i + 2]);
        for g in 0..4 {
            blk[4 + 4 * g..][..4].copy_from_slice(&blocks[64 + 64 * g + 4 * i..][..4]);
        }
    }
}
