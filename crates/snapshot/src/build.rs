//! Writing a snapshot: validate the source, stream it into a temporary file beside the
//! output while hashing, write the header last, then rename into place.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use thaw_gguf::GgufFile;

use crate::format::{self, Entry};
use crate::snapshot::SectionInfo;
use crate::{FORMAT_VERSION, KERNEL_LAYOUT, Meta, SECTION_ALIGN, SectionKind, SnapshotError, hex};

/// Copy granularity: large enough to stream at disk speed, small enough for a smooth bar.
const CHUNK: usize = 8 << 20;

/// How to build a snapshot.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Model name recorded in META; `None` = the source file's stem.
    pub name: Option<String>,
    /// Show a progress bar on stderr while copying.
    pub progress: bool,
}

/// What [`build`] wrote.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub path: PathBuf,
    /// Size of the snapshot file in bytes.
    pub size: u64,
    pub sections: Vec<SectionInfo>,
    pub meta: Meta,
    pub elapsed: Duration,
}

/// Build a snapshot of the GGUF model at `gguf_path` into `out_path`. The source is
/// validated as GGUF before anything is written; the output appears atomically (a
/// temporary file in the same directory, renamed), so a failed build leaves no file.
pub fn build(
    gguf_path: impl AsRef<Path>,
    out_path: impl AsRef<Path>,
    opts: &BuildOptions,
) -> Result<BuildReport, SnapshotError> {
    let start = Instant::now();
    let src_path = gguf_path.as_ref();
    let out_path = out_path.as_ref().to_path_buf();
    let source = GgufFile::open(src_path)?;
    if same_file(src_path, &out_path) {
        return Err(SnapshotError::OutputIsSource { path: out_path });
    }
    let tmp = temp_path(&out_path);
    let result = write(&source, src_path, &tmp, opts);
    let (sections, meta) = match result {
        Ok(ok) => ok,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if let Err(source) = std::fs::rename(&tmp, &out_path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(SnapshotError::Io {
            path: out_path,
            source,
        });
    }
    let size = sections
        .iter()
        .map(|s| s.offset + s.length)
        .max()
        .unwrap_or(0);
    Ok(BuildReport {
        path: out_path,
        size,
        sections,
        meta,
        elapsed: start.elapsed(),
    })
}

fn write(
    source: &GgufFile,
    src_path: &Path,
    tmp: &Path,
    opts: &BuildOptions,
) -> Result<(Vec<SectionInfo>, Meta), SnapshotError> {
    let io = |source| SnapshotError::Io {
        path: tmp.to_path_buf(),
        source,
    };
    let mut file = File::create(tmp).map_err(io)?;
    let gguf = source.bytes();

    // GGUF section at the first 2 MiB boundary; the header is written last, once the
    // hashes are known, into the hole left before it.
    let gguf_off = SECTION_ALIGN;
    file.seek(SeekFrom::Start(gguf_off)).map_err(io)?;
    let bar = if opts.progress {
        let bar = indicatif::ProgressBar::new(gguf.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "freezing {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template"),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut hasher = Sha256::new();
    for chunk in gguf.chunks(CHUNK) {
        hasher.update(chunk);
        file.write_all(chunk).map_err(io)?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let gguf_sha: [u8; 32] = hasher.finalize().into();

    let meta = Meta {
        name: opts.name.clone().unwrap_or_else(|| {
            src_path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        }),
        source_path: std::path::absolute(src_path)
            .unwrap_or_else(|_| src_path.to_path_buf())
            .display()
            .to_string(),
        source_sha256: hex(&gguf_sha),
        source_size: gguf.len() as u64,
        built_unix: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        thaw_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let meta_json = serde_json::to_vec_pretty(&meta).expect("Meta serializes");
    let meta_off = (gguf_off + gguf.len() as u64).next_multiple_of(SECTION_ALIGN);
    file.seek(SeekFrom::Start(meta_off)).map_err(io)?;
    file.write_all(&meta_json).map_err(io)?;

    let entries = [
        Entry {
            kind: SectionKind::Gguf,
            offset: gguf_off,
            length: gguf.len() as u64,
            sha256: gguf_sha,
        },
        Entry {
            kind: SectionKind::Meta,
            offset: meta_off,
            length: meta_json.len() as u64,
            sha256: Sha256::digest(&meta_json).into(),
        },
    ];
    let header = format::encode(FORMAT_VERSION, KERNEL_LAYOUT, 0, &entries);
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.write_all(&header).map_err(io)?;
    // Durable before the rename makes it visible.
    file.sync_all().map_err(io)?;
    let sections = entries.iter().map(SectionInfo::from_entry).collect();
    Ok((sections, meta))
}

/// `.NAME.tmp-PID` beside the output, so the final rename stays on one filesystem.
fn temp_path(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "snapshot.thaw".into());
    out.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
