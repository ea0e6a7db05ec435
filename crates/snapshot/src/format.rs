//! The fixed header and the section table: encoding, decoding and the header checksum.
//! Pure functions over byte slices, so every check can be tested on crafted bytes.

use crate::SectionKind;

pub const MAGIC: &[u8; 8] = b"THAWSNAP";
/// Bytes of the fixed header; the section table follows immediately.
pub const HEADER_LEN: usize = 40;
/// Bytes of one section-table entry.
pub const ENTRY_LEN: usize = 56;
/// More sections than this is a corrupt count (v1 writes two).
pub const MAX_SECTIONS: u32 = 64;
/// Where the header checksum sits in the header (excluded from its own hash).
const CHECKSUM_AT: usize = 32;

/// The decoded fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub layout: u32,
    pub flags: u64,
    pub n_sections: u32,
    pub checksum: u64,
}

/// One section-table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub kind: SectionKind,
    pub offset: u64,
    pub length: u64,
    pub sha256: [u8; 32],
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Decode the fixed header from `b`, which must hold at least [`HEADER_LEN`] bytes and
/// start with the magic (both checked by the caller, which knows the file name).
pub fn decode_header(b: &[u8]) -> Header {
    Header {
        version: u32_at(b, 8),
        layout: u32_at(b, 12),
        flags: u64_at(b, 16),
        n_sections: u32_at(b, 24),
        checksum: u64_at(b, CHECKSUM_AT),
    }
}

/// Decode entry `i` of the table that starts at [`HEADER_LEN`]; `b` must hold it.
pub fn decode_entry(b: &[u8], i: usize) -> Entry {
    let at = HEADER_LEN + i * ENTRY_LEN;
    let e = &b[at..at + ENTRY_LEN];
    Entry {
        kind: SectionKind::from_id(u32_at(e, 0)),
        offset: u64_at(e, 8),
        length: u64_at(e, 16),
        sha256: e[24..56].try_into().expect("32 bytes"),
    }
}

/// The header and table bytes for `entries`, with the checksum filled in.
pub fn encode(version: u32, layout: u32, flags: u64, entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + entries.len() * ENTRY_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&layout.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // reserved
    out.extend_from_slice(&0u64.to_le_bytes()); // checksum, filled below
    for e in entries {
        out.extend_from_slice(&e.kind.id().to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // reserved
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.length.to_le_bytes());
        out.extend_from_slice(&e.sha256);
    }
    let sum = checksum(&out);
    out[CHECKSUM_AT..CHECKSUM_AT + 8].copy_from_slice(&sum.to_le_bytes());
    out
}

/// FNV-1a (64-bit) over the header and table with the checksum field read as zero.
/// Cheap enough for every open; it catches damage, not tampering (`verify` has sha256).
pub fn checksum(header_and_table: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, &byte) in header_and_table.iter().enumerate() {
        let byte = if (CHECKSUM_AT..CHECKSUM_AT + 8).contains(&i) {
            0
        } else {
            byte
        };
        h ^= byte as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip_and_checksum_covers_every_byte() {
        let entries = [
            Entry {
                kind: SectionKind::Gguf,
                offset: 2 << 20,
                length: 12345,
                sha256: [7; 32],
            },
            Entry {
                kind: SectionKind::Other(99),
                offset: 4 << 20,
                length: 1,
                sha256: [9; 32],
            },
        ];
        let b = encode(1, 1, 0, &entries);
        assert_eq!(b.len(), HEADER_LEN + 2 * ENTRY_LEN);
        let h = decode_header(&b);
        assert_eq!((h.version, h.layout, h.flags, h.n_sections), (1, 1, 0, 2));
        assert_eq!(h.checksum, checksum(&b));
        assert_eq!(decode_entry(&b, 0), entries[0]);
        assert_eq!(decode_entry(&b, 1), entries[1]);
        for i in (0..b.len()).filter(|i| !(CHECKSUM_AT..CHECKSUM_AT + 8).contains(i)) {
            let mut c = b.clone();
            c[i] ^= 0x01;
            assert_ne!(checksum(&c), h.checksum, "flip at byte {i} undetected");
        }
    }
}
