//! `.thaw` snapshot files: a model frozen once into one file that a process thaws to
//! its first token with no work proportional to the model's size. Restore is one
//! `mmap` plus validated views: [`Snapshot::open`] checks only the fixed header and the
//! section table (a checksum over ~150 bytes), and [`Snapshot::gguf`] parses the GGUF
//! header inside the mapping without copying the weights, so tensors are slices of the
//! snapshot's own mapping. [`Snapshot::verify`] checks every byte (sha256 per section).
//!
//! # Format, version 1 (all integers little-endian)
//!
//! Fixed header, 40 bytes:
//!
//! | bytes  | field          | meaning                                                    |
//! |--------|----------------|------------------------------------------------------------|
//! | 0..8   | magic          | `THAWSNAP`                                                 |
//! | 8..12  | format version | u32, [`FORMAT_VERSION`] (1); any other value is refused    |
//! | 12..16 | kernel layout  | u32, how weights are laid out for the kernels: [`LAYOUT_X16`] (written now: ggml blocks, Q4_1 and Q8_0 matrices interleaved by 16 rows, tensors 64-byte aligned) or [`LAYOUT_GGML_BLOCKS_V1`] (ggml blocks as the GGUF stores them; still read, the loader interleaves at start). Any other id is refused |
//! | 16..24 | flags          | u64, no flag is defined yet: must be 0                     |
//! | 24..28 | section count  | u32, 1..=64                                                |
//! | 28..32 | reserved       | 0                                                          |
//! | 32..40 | checksum       | u64 FNV-1a 64 over bytes 0..(40 + 56 × count) with these 8 bytes read as zero: the header and the whole table |
//!
//! Section table, right after the header, 56 bytes per section:
//!
//! | bytes  | field    | meaning                                               |
//! |--------|----------|-------------------------------------------------------|
//! | 0..4   | kind     | u32, see [`SectionKind`]                              |
//! | 4..8   | reserved | 0                                                     |
//! | 8..16  | offset   | u64, from the start of the file; a multiple of [`SECTION_ALIGN`] (2 MiB, huge-page friendly) |
//! | 16..24 | length   | u64 bytes                                             |
//! | 24..56 | sha256   | of the section's bytes (checked by `verify`, not `open`) |
//!
//! Sections lie after the table, inside the file, and do not overlap; the gaps between
//! them are zero (holes in a sparse file). Kinds: 1 `GGUF` (required) — the source
//! GGUF rewritten without its tokenizer arrays, its tensors in the kernel layout the
//! header names (layout 2: 64-byte aligned, Q4_1 and Q8_0 matrices interleaved by 16
//! rows), so the kernels read them in place; 2 `META` (required) — UTF-8 JSON
//! ([`Meta`]: model name, source path, source sha256 and size, build time, thaw
//! version); 3 `PREFIXES` — prompt-prefix K/V caches; 4 `TOKENIZER` — the frozen
//! tokenizer. Readers skip kinds they do not know. Sections start at 2 MiB
//! boundaries, GGUF first.
//!
//! Files are written to a temporary file in the destination directory and renamed into
//! place, so a reader never sees a half-written snapshot and a mapped snapshot is never
//! rewritten in place.

#![forbid(unsafe_code)]

use std::io::Read;
use std::path::{Path, PathBuf};

mod build;
mod format;
mod prefix;
mod snapshot;

pub use build::{BuildOptions, BuildReport, build};
pub use prefix::{PrefixInput, StoredPrefix, encode_prefixes};
pub use snapshot::{SectionInfo, Snapshot, SnapshotInfo, VerifyReport};

/// The format version this thaw writes and reads.
pub const FORMAT_VERSION: u32 = 2;
/// Kernel layout: weights in ggml block layout exactly as the GGUF stores them.
pub const LAYOUT_GGML_BLOCKS_V1: u32 = 1;
/// Kernel layout: ggml blocks, with every Q4_1 and Q8_0 matrix interleaved by 16 rows
/// (GGUF types `Q4_1x16`, `Q8_0x16`, see `thaw_kernels::interleave`) and the GGUF section's
/// tensors aligned to 64 bytes (one cache line).
pub const LAYOUT_X16: u32 = 2;
/// The kernel layout this thaw writes.
pub const KERNEL_LAYOUT: u32 = LAYOUT_X16;
/// The kernel layouts this thaw reads.
pub const READABLE_LAYOUTS: [u32; 2] = [LAYOUT_GGML_BLOCKS_V1, LAYOUT_X16];
/// Every section starts at a multiple of this (2 MiB: one x86-64 huge page).
pub const SECTION_ALIGN: u64 = 2 << 20;

const REBUILD: &str = "rebuild it with `thaw snapshot build MODEL -o FILE`";

/// What a section holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SectionKind {
    /// The source GGUF, rewritten (see the module docs).
    Gguf,
    /// JSON [`Meta`].
    Meta,
    /// Prompt prefixes with their K/V state ([`encode_prefixes`]).
    Prefixes,
    /// The tokenizer, frozen (`thaw_tokenizer::Tokenizer::to_frozen`).
    Tokenizer,
    /// A kind this thaw does not know (skipped).
    Other(u32),
}

impl SectionKind {
    pub fn from_id(id: u32) -> Self {
        match id {
            1 => Self::Gguf,
            2 => Self::Meta,
            3 => Self::Prefixes,
            4 => Self::Tokenizer,
            other => Self::Other(other),
        }
    }
    pub fn id(self) -> u32 {
        match self {
            Self::Gguf => 1,
            Self::Meta => 2,
            Self::Prefixes => 3,
            Self::Tokenizer => 4,
            Self::Other(id) => id,
        }
    }
}

impl std::fmt::Display for SectionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Gguf => f.write_str("GGUF"),
            Self::Meta => f.write_str("META"),
            Self::Prefixes => f.write_str("PREFIXES"),
            Self::Tokenizer => f.write_str("TOKENIZER"),
            Self::Other(id) => write!(f, "kind {id}"),
        }
    }
}

/// The META section: where the snapshot came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    pub name: String,
    pub source_path: String,
    /// Lower-case hex sha256 of the source GGUF file.
    pub source_sha256: String,
    pub source_size: u64,
    /// Seconds since the Unix epoch.
    pub built_unix: u64,
    pub thaw_version: String,
}

/// Errors from building, opening or verifying a snapshot. Each names the file and,
/// where the user can act, says how.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The OS error is part of the message, not a separate cause, so that chained
    /// printing (`{:#}`) does not repeat it.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The source model (build) or the embedded GGUF section (open) is not valid GGUF.
    #[error(transparent)]
    Gguf(#[from] thaw_gguf::GgufError),
    /// The GGUF section does not parse: the file was damaged after it was built.
    #[error(
        "{path}: the snapshot's GGUF section is damaged ({source}); check the file with \
         `thaw snapshot verify` and {REBUILD}"
    )]
    DamagedGguf {
        path: PathBuf,
        source: thaw_gguf::GgufError,
    },
    #[error(
        "{path}: not a thaw snapshot (bad magic); build one with `thaw snapshot build MODEL -o FILE`"
    )]
    NotSnapshot { path: PathBuf },
    #[error(
        "{path}: built by an incompatible thaw (format {found}, this thaw reads {supported}): {REBUILD}"
    )]
    IncompatibleFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "{path}: weights are in kernel layout {found}, this thaw's kernels read layout \
         {supported}: {REBUILD}"
    )]
    IncompatibleLayout {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{path}: built by an incompatible thaw (unknown flags {flags:#x}): {REBUILD}")]
    UnknownFlags { path: PathBuf, flags: u64 },
    #[error(
        "{path}: truncated snapshot: {what} needs at least {expected} bytes but the file has \
         {actual}; copy it again or {REBUILD}"
    )]
    Truncated {
        path: PathBuf,
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("{path}: corrupt snapshot header: {what}; {REBUILD}")]
    CorruptHeader { path: PathBuf, what: String },
    #[error("{path}: the snapshot has no {kind} section; {REBUILD}")]
    MissingSection { path: PathBuf, kind: SectionKind },
    #[error(
        "{path}: section {kind} (bytes {offset}..{end}) fails its sha256 check: the file is \
         corrupt; copy it again or {REBUILD}"
    )]
    ChecksumMismatch {
        path: PathBuf,
        kind: SectionKind,
        offset: u64,
        end: u64,
    },
    #[error("{path}: the META section is not valid: {what}; {REBUILD}")]
    BadMeta { path: PathBuf, what: String },
    #[error("{path}: the tokenizer cannot be frozen: {what}")]
    Tokenizer { path: PathBuf, what: String },
    #[error("{path}: the {kind} section is not valid: {what}; {REBUILD}")]
    BadSection {
        path: PathBuf,
        kind: SectionKind,
        what: String,
    },
    #[error("{path}: the output would overwrite the source model; choose another -o path")]
    OutputIsSource { path: PathBuf },
}

/// True when `path` is a readable file that starts with the snapshot magic. Lets a
/// caller route a resolved model path to [`Snapshot::open`] or to a GGUF reader.
pub fn is_snapshot(path: impl AsRef<Path>) -> bool {
    let mut magic = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == format::MAGIC
}

/// Lower-case hex of a digest.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
