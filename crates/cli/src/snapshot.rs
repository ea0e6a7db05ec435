//! `thaw snapshot`: freeze a model into one .thaw file, inspect it, verify it.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use thaw_snapshot::{BuildOptions, Snapshot};

#[derive(Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Freeze MODEL (name, .gguf path or hf:…) into FILE.
    Build {
        model: String,
        /// The snapshot file to write (e.g. smollm2.thaw).
        #[arg(short, long)]
        output: PathBuf,
        /// A name recorded in the snapshot (default: the source file name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Show a snapshot's header, sections and source.
    Inspect { file: PathBuf },
    /// Check every byte of a snapshot against its checksums.
    Verify { file: PathBuf },
}

pub fn snapshot(args: SnapshotArgs) -> Result<()> {
    let progress = std::io::stderr().is_terminal();
    match args.command {
        Cmd::Build {
            model,
            output,
            name,
        } => {
            let src = thaw_hub::resolve(&model)?;
            let r = thaw_snapshot::build(&src, &output, &BuildOptions { name, progress })?;
            println!(
                "wrote {} ({}, {:.1} s)",
                r.path.display(),
                crate::models::human_size(r.size),
                r.elapsed.as_secs_f64()
            );
        }
        Cmd::Inspect { file } => print!("{}", Snapshot::open(&file)?.info()?),
        Cmd::Verify { file } => {
            let r = Snapshot::open(&file)?.verify(progress)?;
            println!(
                "{}: OK ({} sections, {}, {:.2} s)",
                file.display(),
                r.sections.len(),
                crate::models::human_size(r.bytes),
                r.elapsed.as_secs_f64()
            );
        }
    }
    Ok(())
}
