//! Snapshots the gateway makes of its deployments' GGUF models: frozen once, when
//! `thaw serve --config` starts, into `$THAW_HOME/snapshots/`, and thawed by every
//! worker after that, so a deployment scaled to zero restarts from a snapshot even
//! when its `source` names a GGUF.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use thaw_engine::{PrefixSpec, SnapshotOptions, build_snapshot};

/// Where the snapshot of `gguf` goes: keyed by its canonical path, size and mtime,
/// so a replaced file gets a new snapshot, and by the system prompt stored in it.
fn snapshot_path(gguf: &Path, system: Option<&str>) -> Result<PathBuf> {
    let meta =
        std::fs::metadata(gguf).with_context(|| format!("cannot read {}", gguf.display()))?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::fs::canonicalize(gguf)?.hash(&mut h);
    meta.len().hash(&mut h);
    meta.modified().ok().hash(&mut h);
    system.hash(&mut h);
    let stem = gguf.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    Ok(thaw_hub::thaw_home()
        .join("snapshots")
        .join(format!("{stem}-{:016x}.thaw", h.finish())))
}

fn is_snapshot(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "thaw")
}

/// The frozen snapshot of `model` (with `system` stored) if one was made, else the
/// model itself.
pub fn prefer_frozen(model: &Path, system: Option<&str>) -> PathBuf {
    if is_snapshot(model) {
        return model.to_path_buf();
    }
    match snapshot_path(model, system) {
        Ok(p) if p.is_file() => p,
        _ => model.to_path_buf(),
    }
}

/// Freeze `source` (a model name or .gguf path) unless it is a snapshot or already
/// frozen. `build_snapshot` writes a temporary file and renames it, so a worker never
/// sees half a file. Stored as prefixes: the deployment's system prompt (added to
/// chats that have none) and the chat preamble.
pub fn freeze(source: &str, system: Option<&str>) -> Result<PathBuf> {
    let model = thaw_hub::resolve(source)?;
    if is_snapshot(&model) {
        return Ok(model);
    }
    let out = snapshot_path(&model, system)?;
    if out.is_file() {
        return Ok(out);
    }
    let dir = out.parent().context("snapshot path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    eprintln!("freezing {} into {}", model.display(), out.display());
    let opts = SnapshotOptions {
        prefixes: system
            .map(|s| PrefixSpec::System(s.to_string()))
            .into_iter()
            .chain([PrefixSpec::ChatPreamble])
            .collect(),
        progress: true,
        ..Default::default()
    };
    build_snapshot(&model, &out, &opts)
        .with_context(|| format!("freezing {} into {}", model.display(), out.display()))?;
    Ok(out)
}
