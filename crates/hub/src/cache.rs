//! The on-disk cache: temp files renamed into place, sha256 sidecars, listing.
//!
//! Invariant: a file at its final cache path is always complete. Downloads go to a temp file
//! in the same directory and are renamed into place only after their checksum passed, so a
//! crash, a failed check or a concurrent reader never sees half a model. Two processes that
//! fetch the same model at once both finish; the second rename replaces identical bytes.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use crate::error::{HubError, io_err};

/// A model file in the cache, as `thaw list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedModel {
    /// What to pass as MODEL to use it: `smollm2`, or `hf:ORG/REPO/FILE.gguf`.
    pub name: String,
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
}

/// A temp file next to its final path; removed on drop unless [`TempFile::persist`] ran.
pub(crate) struct TempFile {
    path: PathBuf,
    file: Option<File>,
}

impl TempFile {
    /// Create `.<final name>.<pid>.<n>.tmp` in the final file's directory (same
    /// filesystem, so the rename is atomic).
    pub(crate) fn next_to(final_path: &Path) -> Result<TempFile, HubError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = final_path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(io_err("create the directory", dir))?;
        let base = final_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".{base}.{}.{n}.tmp", std::process::id()));
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("create the temporary file", &path))?;
        Ok(TempFile {
            path,
            file: Some(file),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn file(&mut self) -> &mut File {
        self.file
            .as_mut()
            .expect("temp file is open until persisted")
    }

    /// Flush to disk and rename over `final_path`.
    pub(crate) fn persist(mut self, final_path: &Path) -> Result<(), HubError> {
        if let Some(f) = self.file.take() {
            f.sync_all().map_err(io_err("write", &self.path))?;
        }
        fs::rename(&self.path, final_path).map_err(io_err("move into place", final_path))?;
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            drop(self.file.take());
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Remove temp files in `dir` left by processes that no longer run (a download killed by
/// Ctrl-C cannot clean up after itself). Only where `/proc` tells which processes live.
pub(crate) fn sweep_stale_temps(dir: &Path) {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".tmp").filter(|_| name.starts_with('.')) else {
            continue;
        };
        // `.<final name>.<pid>.<n>.tmp`
        let mut fields = stem.rsplit('.');
        let (_n, pid) = (fields.next(), fields.next());
        let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !proc.join(pid.to_string()).exists() {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Serialises fetches of one destination within this process, so threads (tests) that ask
/// for the same model at once download it once. Across processes the temp+rename scheme
/// keeps things correct.
pub(crate) fn lock_destination(path: &Path) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> = OnceLock::new();
    let mut map = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    map.entry(path.to_path_buf()).or_default().clone()
}

/// Lock a destination mutex, ignoring poisoning (a panicked fetch left no partial file).
pub(crate) fn hold(m: &Mutex<()>) -> MutexGuard<'_, ()> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A writer that hashes what passes through it.
pub(crate) struct HashingWriter<W> {
    pub(crate) inner: W,
    pub(crate) hasher: Sha256,
    pub(crate) written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// Flush everything through and return the hex sha256 of what was written.
    pub(crate) fn finish(mut self) -> io::Result<String> {
        self.inner.flush()?;
        Ok(hex(&self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of a whole file.
pub(crate) fn sha256_file(path: &Path) -> Result<String, HubError> {
    let mut f = File::open(path).map_err(io_err("open", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err("read", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn sidecar_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

/// Size and modification time identify "the same file as when we hashed it".
fn stamp(path: &Path) -> Option<(u64, u128)> {
    let md = fs::metadata(path).ok()?;
    let mtime = md
        .modified()
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some((md.len(), mtime))
}

/// The sha256 recorded in `<path>.sha256`, if the sidecar still describes this file.
pub(crate) fn recorded_sha256(path: &Path) -> Option<String> {
    let text = fs::read_to_string(sidecar_path(path)).ok()?;
    let mut it = text.split_whitespace();
    let (sha, size, mtime) = (it.next()?, it.next()?, it.next()?);
    let (size, mtime): (u64, u128) = (size.parse().ok()?, mtime.parse().ok()?);
    (stamp(path)? == (size, mtime) && sha.len() == 64).then(|| sha.to_string())
}

/// Record the file's sha256 (with its size and mtime) so later calls need not rehash it.
/// Best effort: a read-only cache still works, it just rehashes.
pub(crate) fn record_sha256(path: &Path, sha: &str) {
    let Some((size, mtime)) = stamp(path) else {
        return;
    };
    let side = sidecar_path(path);
    let Ok(mut tmp) = TempFile::next_to(&side) else {
        return;
    };
    let ok = writeln!(tmp.file(), "{sha}  {size}  {mtime}").is_ok();
    if ok {
        let _ = tmp.persist(&side);
    }
}

/// sha256 of a cached file: from its sidecar when valid, else hashed (and recorded).
pub(crate) fn cached_sha256(path: &Path) -> Result<String, HubError> {
    if let Some(sha) = recorded_sha256(path) {
        return Ok(sha);
    }
    let sha = sha256_file(path)?;
    record_sha256(path, &sha);
    Ok(sha)
}

/// Every `.gguf`/`.thaw` under `models_dir`: top-level files by name, `hf/` files as
/// `hf:ORG/REPO/FILE`. Temp files and sidecars are skipped.
pub(crate) fn list(models_dir: &Path) -> Result<Vec<CachedModel>, HubError> {
    let mut out = Vec::new();
    walk(models_dir, models_dir, &mut out)?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<CachedModel>) -> Result<(), HubError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err("list", dir))?;
        let path = entry.path();
        let fname = entry.file_name().to_string_lossy().into_owned();
        if fname.starts_with('.') {
            continue;
        }
        let md = entry.metadata().map_err(io_err("stat", &path))?;
        if md.is_dir() {
            walk(root, &path, out)?;
            continue;
        }
        let model_ext = [".gguf", ".thaw"].iter().find(|e| fname.ends_with(*e));
        let Some(ext) = model_ext else { continue };
        let rel = path.strip_prefix(root).unwrap_or(&path);
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let name = match parts.as_slice() {
            [single] if *ext == ".gguf" => single.trim_end_matches(".gguf").to_string(),
            [single] => single.clone(),
            [first, rest @ ..] if first == "hf" => format!("hf:{}", rest.join("/")),
            _ => rel.to_string_lossy().into_owned(),
        };
        out.push(CachedModel {
            name,
            path,
            size: md.len(),
        });
    }
    Ok(())
}
