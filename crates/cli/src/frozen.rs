//! Snapshots the gateway makes of its deployments' GGUF models: frozen once, when
//! `thaw serve --config` starts, into `$THAW_HOME/snapshots/`, and thawed by every
//! worker after that, so a deployment scaled to zero restarts from a snapshot even
//! when its `source` names a GGUF.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use thaw_engine::{PrefixSpec, SnapshotOptions, build_snapshot};

/// FNV-1a 64 of `bytes`: stable across builds and toolchains, so a compiler upgrade
/// does not orphan every frozen snapshot (std's `DefaultHasher` promises no such thing).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The snapshot name of `gguf` with `system` stored,
/// `{stem}-{source}-{file}-{system}.thaw`: `source` hashes the canonical path, `file`
/// the file's size and mtime (a replaced file gets a new snapshot) and the kernel
/// layout snapshots are written in (a thaw that writes another one freezes again and
/// removes the old snapshot, which would thaw slower), `system` the
/// stored system prompt. Returns the name and its `{stem}-{source}-{file}-` start.
fn snapshot_name(gguf: &Path, system: Option<&str>) -> Result<(String, String)> {
    let meta =
        std::fs::metadata(gguf).with_context(|| format!("cannot read {}", gguf.display()))?;
    let canonical = std::fs::canonicalize(gguf)?;
    let source = fnv1a(canonical.as_os_str().as_encoded_bytes());
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let layout = thaw_snapshot::KERNEL_LAYOUT;
    let file = fnv1a(format!("{}:{mtime}:{layout}", meta.len()).as_bytes());
    // No system prompt and an empty one are different snapshots.
    let system = system.map_or(0, |s| fnv1a(s.as_bytes()) | 1);
    let stem = gguf.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    let start = format!("{stem}-{source:016x}-{file:016x}-");
    Ok((format!("{start}{system:016x}.thaw"), start))
}

fn snapshot_path(gguf: &Path, system: Option<&str>) -> Result<PathBuf> {
    let name = snapshot_name(gguf, system)?.0;
    Ok(thaw_hub::thaw_home().join("snapshots").join(name))
}

/// Removes the snapshots in `dir` of `gguf` made from another version of the file
/// (other size or mtime) or in an older kernel layout: nothing would thaw them again. Snapshots of the current
/// file with other system prompts (other deployments) stay. Returns how many went.
fn remove_stale(dir: &Path, gguf: &Path) -> Result<usize> {
    let (_, current) = snapshot_name(gguf, None)?;
    // `{stem}-{source}-`: the same source path.
    let same_source = &current[..current.len() - 17];
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let stale =
            name.starts_with(same_source) && !name.starts_with(&current) && name.ends_with(".thaw");
        if stale && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes the temporary files (`.NAME.tmp-PID`) of builds whose process is gone (a
/// worker killed while freezing): nothing would finish or clean them up otherwise.
fn remove_orphans(dir: &Path) {
    // Liveness comes from /proc; without it, leave every file alone.
    let Ok(entries) = std::fs::read_dir(dir).and_then(|e| {
        Path::new("/proc/self")
            .exists()
            .then_some(e)
            .ok_or(std::io::ErrorKind::Unsupported.into())
    }) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.starts_with('.'))
            .and_then(|n| n.rsplit_once(".tmp-"))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = Path::new("/proc").join(pid.to_string()).exists();
        if !alive && pid != std::process::id() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
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

/// Whether `THAW_FREEZE=0` turns `thaw run`'s snapshots off.
fn run_freezes() -> bool {
    std::env::var_os("THAW_FREEZE").is_none_or(|v| v != "0")
}

/// The frozen snapshot `thaw run` thaws for the GGUF `model`, if one was made (none
/// for a snapshot given as such, or with `THAW_FREEZE=0`).
pub fn for_run(model: &Path) -> Option<PathBuf> {
    if is_snapshot(model) || !run_freezes() {
        return None;
    }
    let frozen = prefer_frozen(model, None);
    (frozen != model).then_some(frozen)
}

/// Starts `thaw freeze MODEL` as a process of its own (its own process group, no
/// terminal, one thread), unless freezing is off or a live build of that snapshot is
/// already under way. The build writes a temporary file and renames it, so a run
/// never thaws half a snapshot.
pub fn freeze_detached(model: &Path) {
    if is_snapshot(model) || !run_freezes() {
        return;
    }
    let Ok(out) = snapshot_path(model, None) else {
        return;
    };
    let Some(dir) = out.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() || building(dir, &out) {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("freeze")
        .arg(model)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // Not in the terminal's process group: Ctrl-C in the shell does not stop it.
        cmd.process_group(0);
    }
    let _ = cmd.spawn();
}

/// Whether a live process is building `out` in `dir` (its `.NAME.tmp-PID` exists and
/// PID runs). Without /proc, any temporary file counts as live.
fn building(dir: &Path, out: &Path) -> bool {
    let Some(name) = out.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let proc = Path::new("/proc/self").exists();
    entries.flatten().any(|e| {
        let file = e.file_name();
        let pid = file.to_str().and_then(|f| f.strip_prefix(&prefix));
        pid.is_some_and(|p| !proc || Path::new("/proc").join(p).exists())
    })
}

/// `thaw freeze MODEL` (hidden; started by [`freeze_detached`]): build the snapshot
/// `thaw run` thaws, on one thread.
pub fn freeze_for_run(model: &Path) -> Result<()> {
    freeze_model(model, None, false, 1).map(|_| ())
}

/// Freeze `source` (a model name or .gguf path) unless it is a snapshot or already
/// frozen. `build_snapshot` writes a temporary file and renames it, so a worker never
/// sees half a file. Stored as prefixes: the deployment's system prompt (added to
/// chats that have none) and the chat preamble.
pub fn freeze(source: &str, system: Option<&str>) -> Result<PathBuf> {
    let model = thaw_hub::resolve(source)?;
    freeze_model(&model, system, true, 0)
}

/// What a worker that had to load a GGUF does once it serves (a deployment made
/// through the management API, which the gateway did not freeze at start): freeze it
/// on one thread in the background, so that the deployment's next cold start thaws a
/// snapshot. Two workers doing it at once each write their own temporary file; the
/// last rename wins with the same bytes.
pub fn freeze_in_background(model: PathBuf, system: Option<String>) {
    std::thread::spawn(move || {
        if let Err(e) = freeze_model(&model, system.as_deref(), false, 1) {
            eprintln!("warning: freezing {}: {e:#}", model.display());
        }
    });
}

fn freeze_model(
    model: &Path,
    system: Option<&str>,
    progress: bool,
    threads: usize,
) -> Result<PathBuf> {
    if is_snapshot(model) {
        return Ok(model.to_path_buf());
    }
    let out = snapshot_path(model, system)?;
    if out.is_file() {
        return Ok(out);
    }
    let dir = out.parent().context("snapshot path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    remove_orphans(dir);
    eprintln!("freezing {} into {}", model.display(), out.display());
    let opts = SnapshotOptions {
        prefixes: system
            .map(|s| PrefixSpec::System(s.to_string()))
            .into_iter()
            .chain([PrefixSpec::ChatPreamble])
            .collect(),
        progress,
        threads,
        ..Default::default()
    };
    build_snapshot(model, &out, &opts)
        .with_context(|| format!("freezing {} into {}", model.display(), out.display()))?;
    match remove_stale(dir, model) {
        Ok(0) => {}
        Ok(n) => eprintln!(
            "removed {n} snapshot(s) of an earlier version of {}",
            model.display()
        ),
        Err(e) => eprintln!(
            "warning: cleaning up old snapshots in {}: {e:#}",
            dir.display()
        ),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orphaned_temporary_files_are_removed_live_ones_kept() {
        let dir = std::env::temp_dir().join(format!("thaw-orphans-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // No process has pid 4294967294 (above Linux's pid_max).
        let dead = dir.join(".m-1-2-3.thaw.tmp-4294967294");
        let mine = dir.join(format!(".m-1-2-4.thaw.tmp-{}", std::process::id()));
        let snapshot = dir.join("m-1-2-3.thaw");
        for f in [&dead, &mine, &snapshot] {
            std::fs::write(f, b"x").unwrap();
        }
        remove_orphans(&dir);
        if Path::new("/proc/self").exists() {
            assert!(!dead.exists(), "a dead build's temporary file stays");
        }
        assert!(mine.exists() && snapshot.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fnv1a_is_the_published_function() {
        // Test vectors of FNV-1a 64 (Fowler, Noll, Vo): names must not change between
        // builds, or every frozen snapshot would be made again.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn stale_snapshots_of_a_replaced_file_are_removed_and_others_kept() {
        let dir = std::env::temp_dir().join(format!("thaw-frozen-{}", std::process::id()));
        let snaps = dir.join("snapshots");
        std::fs::create_dir_all(&snaps).unwrap();
        let gguf = dir.join("model.gguf");
        let other = dir.join("other.gguf");
        std::fs::write(&gguf, b"version 1").unwrap();
        std::fs::write(&other, b"another model").unwrap();
        let touch = |name: &str| {
            std::fs::write(snaps.join(name), b"x").unwrap();
            snaps.join(name)
        };
        let name = |g: &Path, s: Option<&str>| snapshot_name(g, s).unwrap().0;
        let old_plain = touch(&name(&gguf, None));
        let old_sys = touch(&name(&gguf, Some("Be brief.")));
        let other_snap = touch(&name(&other, None));
        // Names differ by system prompt, including none against empty.
        assert_ne!(name(&gguf, None), name(&gguf, Some("")));
        assert_ne!(name(&gguf, Some("a")), name(&gguf, Some("b")));
        // Nothing is stale while the file is unchanged.
        assert_eq!(remove_stale(&snaps, &gguf).unwrap(), 0);
        // Replace the file (another size): its new snapshots get new names...
        std::fs::write(&gguf, b"version 2, longer").unwrap();
        assert_ne!(
            name(&gguf, None),
            old_plain.file_name().unwrap().to_str().unwrap()
        );
        let new_plain = touch(&name(&gguf, None));
        let new_sys = touch(&name(&gguf, Some("Other prompt")));
        // ... and both old ones go, while the new ones and another model's stay.
        assert_eq!(remove_stale(&snaps, &gguf).unwrap(), 2);
        assert!(!old_plain.exists() && !old_sys.exists());
        assert!(new_plain.exists() && new_sys.exists() && other_snap.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
