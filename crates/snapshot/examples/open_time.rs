//! Time `Snapshot::open` + `gguf()` against `GgufFile::open` on real models (page cache
//! warm; median of 20). Usage: `cargo run --release -p thaw-snapshot --example open_time
//! [MODEL...]` (default: smollm2 gemma3-270m). Snapshots are built in a temp dir.

use std::time::{Duration, Instant};

use thaw_gguf::GgufFile;
use thaw_snapshot::{BuildOptions, Snapshot, build};

fn median(mut f: impl FnMut()) -> Duration {
    let mut t: Vec<Duration> = (0..20)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed()
        })
        .collect();
    t.sort();
    t[t.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let names = if args.is_empty() {
        vec!["smollm2".to_string(), "gemma3-270m".to_string()]
    } else {
        args
    };
    let dir = std::env::temp_dir().join(format!("thaw-open-time-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for name in names {
        let src = thaw_hub::ensure_model(&name)?;
        let out = dir.join(format!("{name}.thaw"));
        let r = build(&src, &out, &BuildOptions::default())?;
        let gguf = median(|| {
            GgufFile::open(&src).unwrap();
        });
        let open = median(|| {
            Snapshot::open(&out).unwrap();
        });
        let thaw = median(|| {
            Snapshot::open(&out).unwrap().gguf().unwrap();
        });
        println!(
            "{name}: {} MB, build {:.0} ms | GgufFile::open {:.3} ms | Snapshot::open {:.3} ms | open + gguf() {:.3} ms",
            r.size / 1_000_000,
            r.elapsed.as_secs_f64() * 1e3,
            gguf.as_secs_f64() * 1e3,
            open.as_secs_f64() * 1e3,
            thaw.as_secs_f64() * 1e3,
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
