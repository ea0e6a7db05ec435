//! `thaw pull` and `thaw list`.

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct PullArgs {
    /// A known model name (e.g. smollm2, gemma3-270m) or hf:ORG/REPO/FILE.gguf.
    pub model: String,
}

#[derive(Args)]
pub struct ListArgs {
    /// Also list the model names thaw knows how to fetch.
    #[arg(long)]
    pub known: bool,
}

pub fn pull(args: PullArgs) -> Result<()> {
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let path = thaw_hub::pull(&args.model, progress)?;
    println!("{}", path.display());
    Ok(())
}

pub fn list(args: ListArgs) -> Result<()> {
    let cached = thaw_hub::list()?;
    if cached.is_empty() {
        println!(
            "no models cached in {} (try `thaw pull {}`)",
            thaw_hub::thaw_home().display(),
            thaw_hub::DEFAULT_MODEL
        );
    } else {
        println!("{:<32} {:>10}  PATH", "NAME", "SIZE");
        for m in &cached {
            println!(
                "{:<32} {:>10}  {}",
                m.name,
                human_size(m.size),
                m.path.display()
            );
        }
    }
    if args.known {
        println!("\nknown models:");
        for k in thaw_hub::known_models() {
            println!("  {:<16} {}", k.name, k.description);
        }
    }
    Ok(())
}

pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
