//! Restoring a snapshot: map once, validate the header and the section table, hand out
//! views. Nothing here reads a section's bytes except `verify` and `meta`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use thaw_gguf::GgufFile;

use crate::format::{self, ENTRY_LEN, Entry, HEADER_LEN, MAX_SECTIONS};
use crate::{
    FORMAT_VERSION, KERNEL_LAYOUT, Meta, SECTION_ALIGN, SectionKind, SnapshotError, StoredPrefix,
    hex,
};

/// One section as recorded in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionInfo {
    pub kind: SectionKind,
    pub offset: u64,
    pub length: u64,
    /// Lower-case hex sha256 recorded at build time.
    pub sha256: String,
}

impl SectionInfo {
    pub(crate) fn from_entry(e: &Entry) -> Self {
        Self {
            kind: e.kind,
            offset: e.offset,
            length: e.length,
            sha256: hex(&e.sha256),
        }
    }
}

/// What [`Snapshot::verify`] checked.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub sections: Vec<SectionInfo>,
    /// Bytes hashed.
    pub bytes: u64,
    pub elapsed: Duration,
}

/// Everything `thaw snapshot inspect` shows.
#[derive(Debug, Clone)]
pub struct SnapshotInfo {
    pub path: PathBuf,
    pub file_size: u64,
    pub format_version: u32,
    pub kernel_layout: u32,
    pub flags: u64,
    pub sections: Vec<SectionInfo>,
    pub meta: Meta,
    /// `general.architecture` of the embedded GGUF.
    pub architecture: Option<String>,
    /// `general.name` of the embedded GGUF.
    pub model_name: Option<String>,
    pub n_tensors: usize,
    /// Vocabulary size of the frozen tokenizer.
    pub vocab_size: usize,
    /// Stored prompt prefixes: (label, tokens).
    pub prefixes: Vec<(String, usize)>,
}

impl std::fmt::Display for SnapshotInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "snapshot      {}", self.path.display())?;
        writeln!(f, "size          {} bytes", self.file_size)?;
        writeln!(
            f,
            "format        {} (kernel layout {}, flags {:#x})",
            self.format_version, self.kernel_layout, self.flags
        )?;
        writeln!(f, "name          {}", self.meta.name)?;
        let arch = self.architecture.as_deref().unwrap_or("?");
        let gname = self.model_name.as_deref().unwrap_or("?");
        writeln!(
            f,
            "model         {gname} ({arch}, {} tensors)",
            self.n_tensors
        )?;
        writeln!(f, "tokenizer     {} tokens (frozen)", self.vocab_size)?;
        for (label, n) in &self.prefixes {
            let short: String = label.chars().take(60).collect();
            let more = if short.len() < label.len() { "…" } else { "" };
            writeln!(f, "prefix        {n} tokens: {short:?}{more}")?;
        }
        writeln!(f, "source        {}", self.meta.source_path)?;
        writeln!(f, "source sha256 {}", self.meta.source_sha256)?;
        let built = i64::try_from(self.meta.built_unix).map_or_else(
            |_| format!("unix {}", self.meta.built_unix),
            thaw_tokenizer::rfc3339_utc,
        );
        writeln!(
            f,
            "built         {built} by thaw {}",
            self.meta.thaw_version
        )?;
        writeln!(f, "sections:")?;
        for s in &self.sections {
            writeln!(
                f,
                "  {:<10} offset {:>12}  size {:>12}  sha256 {}",
                s.kind.to_string(),
                s.offset,
                s.length,
                s.sha256
            )?;
        }
        Ok(())
    }
}

/// An opened snapshot: the file mapped once, header and table validated.
pub struct Snapshot {
    path: PathBuf,
    map: Arc<memmap2::Mmap>,
    header: format::Header,
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("path", &self.path)
            .field("len", &self.map.len())
            .field("header", &self.header)
            .field("entries", &self.entries)
            .finish()
    }
}

impl Snapshot {
    /// Map `path` and validate the header and section table. Costs a few hundred bytes
    /// of reading whatever the model's size; section contents are checked by
    /// [`Self::verify`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SnapshotError> {
        let path = path.as_ref().to_path_buf();
        let map = thaw_gguf::map_file(&path).map_err(|e| match e {
            thaw_gguf::GgufError::Io { path, error } => SnapshotError::Io { path, error },
            other => SnapshotError::Gguf(other),
        })?;
        let (header, entries) = validate(&path, &map)?;
        Ok(Self {
            path,
            map,
            header,
            entries,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn format_version(&self) -> u32 {
        self.header.version
    }
    pub fn kernel_layout(&self) -> u32 {
        self.header.layout
    }
    /// The section table in file order.
    pub fn sections(&self) -> Vec<SectionInfo> {
        self.entries.iter().map(SectionInfo::from_entry).collect()
    }
    /// The whole mapping (sections are slices of it).
    pub fn mapping(&self) -> &Arc<memmap2::Mmap> {
        &self.map
    }

    fn entry(&self, kind: SectionKind) -> Result<&Entry, SnapshotError> {
        self.entries
            .iter()
            .find(|e| e.kind == kind)
            .ok_or_else(|| SnapshotError::MissingSection {
                path: self.path.clone(),
                kind,
            })
    }

    /// Bytes of the first section of `kind`, if present (bounds checked at open).
    pub fn section(&self, kind: SectionKind) -> Option<&[u8]> {
        let e = self.entries.iter().find(|e| e.kind == kind)?;
        Some(&self.map[e.offset as usize..(e.offset + e.length) as usize])
    }

    /// The embedded GGUF, parsed in place: tensor offsets are absolute in
    /// [`Self::mapping`], which the returned file shares (no tensor bytes copied).
    pub fn gguf(&self) -> Result<GgufFile, SnapshotError> {
        let e = self.entry(SectionKind::Gguf)?;
        GgufFile::from_mapping(&self.path, self.map.clone(), e.offset, e.length).map_err(|source| {
            SnapshotError::DamagedGguf {
                path: self.path.clone(),
                source,
            }
        })
    }

    /// The tokenizer from the TOKENIZER section (no rebuilding: copies of flat tables).
    pub fn tokenizer(&self) -> Result<thaw_tokenizer::Tokenizer, SnapshotError> {
        let e = self.entry(SectionKind::Tokenizer)?;
        let range = e.offset as usize..(e.offset + e.length) as usize;
        // The vocabulary's arrays are read in place from the mapping (kept alive by
        // the tokenizer), not copied.
        let keep: thaw_tokenizer::Backing = self.map.clone();
        thaw_tokenizer::Tokenizer::from_frozen_in(&keep, range).map_err(|err| {
            SnapshotError::BadSection {
                path: self.path.clone(),
                kind: SectionKind::Tokenizer,
                what: err.to_string(),
            }
        })
    }

    /// The stored prompt prefixes (none when the snapshot has no PREFIXES section);
    /// their K/V bytes are ranges of [`Self::mapping`].
    pub fn prefixes(&self) -> Result<Vec<StoredPrefix>, SnapshotError> {
        let Some(e) = self
            .entries
            .iter()
            .find(|e| e.kind == SectionKind::Prefixes)
        else {
            return Ok(Vec::new());
        };
        let bytes = &self.map[e.offset as usize..(e.offset + e.length) as usize];
        crate::prefix::decode_prefixes(bytes, e.offset as usize).map_err(|what| {
            SnapshotError::BadSection {
                path: self.path.clone(),
                kind: SectionKind::Prefixes,
                what,
            }
        })
    }

    /// The META section.
    pub fn meta(&self) -> Result<Meta, SnapshotError> {
        let e = self.entry(SectionKind::Meta)?;
        let bytes = &self.map[e.offset as usize..(e.offset + e.length) as usize];
        serde_json::from_slice(bytes).map_err(|err| SnapshotError::BadMeta {
            path: self.path.clone(),
            what: err.to_string(),
        })
    }

    /// Hash every section and compare with the table; the first mismatch is an error
    /// naming the section. `progress` shows a bar on stderr.
    pub fn verify(&self, progress: bool) -> Result<VerifyReport, SnapshotError> {
        let start = Instant::now();
        let total: u64 = self.entries.iter().map(|e| e.length).sum();
        let bar = if progress {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "verifying {bar:40} {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .expect("valid template"),
            );
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        for e in &self.entries {
            let bytes = &self.map[e.offset as usize..(e.offset + e.length) as usize];
            let mut h = Sha256::new();
            for chunk in bytes.chunks(8 << 20) {
                h.update(chunk);
                bar.inc(chunk.len() as u64);
            }
            if <[u8; 32]>::from(h.finalize()) != e.sha256 {
                bar.finish_and_clear();
                return Err(SnapshotError::ChecksumMismatch {
                    path: self.path.clone(),
                    kind: e.kind,
                    offset: e.offset,
                    end: e.offset + e.length,
                });
            }
        }
        bar.finish_and_clear();
        Ok(VerifyReport {
            sections: self.sections(),
            bytes: total,
            elapsed: start.elapsed(),
        })
    }

    /// Header, sections, META and the model's identity, for `thaw snapshot inspect`.
    pub fn info(&self) -> Result<SnapshotInfo, SnapshotError> {
        let gguf = self.gguf()?;
        Ok(SnapshotInfo {
            path: self.path.clone(),
            file_size: self.map.len() as u64,
            format_version: self.header.version,
            kernel_layout: self.header.layout,
            flags: self.header.flags,
            sections: self.sections(),
            meta: self.meta()?,
            architecture: gguf.architecture().ok().map(str::to_owned),
            model_name: gguf.get_str("general.name").ok().map(str::to_owned),
            n_tensors: gguf.tensors().len(),
            vocab_size: self.tokenizer()?.vocab_size(),
            prefixes: self
                .prefixes()?
                .into_iter()
                .map(|p| (p.label, p.tokens.len()))
                .collect(),
        })
    }
}

/// Every check `open` makes, in an order that gives the most useful message: a file
/// from another format version is reported as such even though its header may not
/// parse as ours.
fn validate(path: &Path, b: &[u8]) -> Result<(format::Header, Vec<Entry>), SnapshotError> {
    let actual = b.len() as u64;
    let truncated = |what: &str, expected: u64| SnapshotError::Truncated {
        path: path.to_path_buf(),
        what: what.to_string(),
        expected,
        actual,
    };
    let corrupt = |what: String| SnapshotError::CorruptHeader {
        path: path.to_path_buf(),
        what,
    };
    if b.len() < format::MAGIC.len() || &b[..8] != format::MAGIC {
        if b.len() < 8 && format::MAGIC.starts_with(b) && !b.is_empty() {
            return Err(truncated("the header", HEADER_LEN as u64));
        }
        return Err(SnapshotError::NotSnapshot {
            path: path.to_path_buf(),
        });
    }
    if b.len() < 12 {
        return Err(truncated("the header", HEADER_LEN as u64));
    }
    let version = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(SnapshotError::IncompatibleFormat {
            path: path.to_path_buf(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if b.len() < HEADER_LEN {
        return Err(truncated("the header", HEADER_LEN as u64));
    }
    let h = format::decode_header(b);
    if !crate::READABLE_LAYOUTS.contains(&h.layout) {
        return Err(SnapshotError::IncompatibleLayout {
            path: path.to_path_buf(),
            found: h.layout,
            supported: KERNEL_LAYOUT,
        });
    }
    if h.n_sections == 0 || h.n_sections > MAX_SECTIONS {
        return Err(corrupt(format!(
            "section count {} (expected 1..={MAX_SECTIONS})",
            h.n_sections
        )));
    }
    let table_end = (HEADER_LEN + h.n_sections as usize * ENTRY_LEN) as u64;
    if actual < table_end {
        return Err(truncated("the section table", table_end));
    }
    let computed = format::checksum(&b[..table_end as usize]);
    if computed != h.checksum {
        return Err(corrupt(format!(
            "header checksum {:#018x} does not match the stored {:#018x}",
            computed, h.checksum
        )));
    }
    if h.flags != 0 {
        return Err(SnapshotError::UnknownFlags {
            path: path.to_path_buf(),
            flags: h.flags,
        });
    }

    let entries: Vec<Entry> = (0..h.n_sections as usize)
        .map(|i| format::decode_entry(b, i))
        .collect();
    for e in &entries {
        if e.offset % SECTION_ALIGN != 0 {
            return Err(corrupt(format!(
                "section {} offset {} is not a multiple of {SECTION_ALIGN}",
                e.kind, e.offset
            )));
        }
        if e.offset < table_end {
            return Err(corrupt(format!(
                "section {} at offset {} overlaps the header",
                e.kind, e.offset
            )));
        }
        let Some(end) = e.offset.checked_add(e.length) else {
            return Err(corrupt(format!(
                "section {} offset {} + length {} overflows",
                e.kind, e.offset, e.length
            )));
        };
        if end > actual {
            return Err(truncated(&format!("section {}", e.kind), end));
        }
        // Known kinds appear once: a duplicate would make lookups ambiguous.
        if !matches!(e.kind, SectionKind::Other(_))
            && entries.iter().filter(|o| o.kind == e.kind).count() > 1
        {
            return Err(corrupt(format!(
                "section {} appears more than once",
                e.kind
            )));
        }
    }
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by_key(|e| e.offset);
    for pair in sorted.windows(2) {
        if pair[0].offset + pair[0].length > pair[1].offset {
            return Err(corrupt(format!(
                "sections {} and {} overlap",
                pair[0].kind, pair[1].kind
            )));
        }
    }
    for kind in [SectionKind::Gguf, SectionKind::Meta, SectionKind::Tokenizer] {
        if !entries.iter().any(|e| e.kind == kind) {
            return Err(SnapshotError::MissingSection {
                path: path.to_path_buf(),
                kind,
            });
        }
    }
    Ok((h, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_shows_the_build_time_as_rfc3339_utc() {
        let info = SnapshotInfo {
            path: PathBuf::from("m.thaw"),
            file_size: 1,
            format_version: 1,
            kernel_layout: 1,
            flags: 0,
            sections: Vec::new(),
            meta: Meta {
                name: "m".into(),
                source_path: "m.gguf".into(),
                source_sha256: "00".into(),
                source_size: 1,
                built_unix: 1_796_181_850,
                thaw_version: "0.1.0".into(),
            },
            architecture: None,
            model_name: None,
            n_tensors: 0,
            vocab_size: 0,
            prefixes: Vec::new(),
        };
        let text = info.to_string();
        assert!(
            text.contains("\nbuilt         2026-12-02T03:24:10Z by thaw 0.1.0\n"),
            "{text}"
        );
        assert!(!text.contains("1796181850"), "{text}");
    }
}
