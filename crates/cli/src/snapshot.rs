//! `thaw snapshot`: freeze a model into one .thaw file, inspect it, verify it.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use thaw_engine::{PrefixSpec, SnapshotOptions};
use thaw_snapshot::Snapshot;

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
        /// Store the K/V state of a chat system prompt: chats whose system message is
        /// exactly TEXT skip computing it (repeatable).
        #[arg(long = "prefix", value_name = "TEXT")]
        prefix: Vec<String>,
        /// Like --prefix, the system prompt read from a file (UTF-8, used verbatim).
        #[arg(long = "prefix-file", value_name = "FILE")]
        prefix_file: Vec<PathBuf>,
        /// Store the K/V state of raw text (completion prompts that start with it; BOS
        /// added per the model, special-token text parsed) (repeatable).
        #[arg(long = "raw-prefix", value_name = "TEXT")]
        raw_prefix: Vec<String>,
        /// Like --raw-prefix, the text read from a file.
        #[arg(long = "raw-prefix-file", value_name = "FILE")]
        raw_prefix_file: Vec<PathBuf>,
        /// Do not store the chat template's preamble (what it writes before the first
        /// user message when there is no system message; stored by default, so a cold
        /// replica starts a chat without computing it).
        #[arg(long)]
        no_chat_preamble: bool,
        /// Kernel threads for computing prefixes (default: all cores).
        #[arg(short, long, default_value_t = 0)]
        threads: usize,
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
            prefix,
            prefix_file,
            raw_prefix,
            raw_prefix_file,
            no_chat_preamble,
            threads,
        } => {
            check_output(&output)?;
            let read = |f: &PathBuf| {
                std::fs::read_to_string(f).map_err(|e| {
                    anyhow::anyhow!("{}: {e} (a prefix file must be UTF-8 text)", f.display())
                })
            };
            let mut prefixes: Vec<PrefixSpec> =
                prefix.into_iter().map(PrefixSpec::System).collect();
            for f in &prefix_file {
                prefixes.push(PrefixSpec::System(read(f)?));
            }
            prefixes.extend(raw_prefix.into_iter().map(PrefixSpec::Raw));
            for f in &raw_prefix_file {
                prefixes.push(PrefixSpec::Raw(read(f)?));
            }
            if !no_chat_preamble {
                prefixes.push(PrefixSpec::ChatPreamble);
            }
            let src = thaw_hub::resolve(&model)?;
            if thaw_snapshot::is_snapshot(&src) {
                anyhow::bail!(
                    "{}: is already a snapshot; build from the GGUF model it came from",
                    src.display()
                );
            }
            let r = thaw_engine::build_snapshot(
                &src,
                &output,
                &SnapshotOptions {
                    name,
                    progress,
                    prefixes,
                    threads: crate::kernel_threads(threads),
                },
            )?;
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

/// Refuse an `-o` the build could only fail on, before any work, in words that say
/// what to do (the build's own error would name its temporary file).
fn check_output(output: &std::path::Path) -> Result<()> {
    if output.is_dir() {
        anyhow::bail!(
            "{} is a directory; give -o the snapshot file to write, e.g. {}",
            output.display(),
            output.join("model.thaw").display()
        );
    }
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    if !dir.is_dir() {
        anyhow::bail!(
            "directory {} does not exist; create it or choose another -o",
            dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn output_must_be_a_file_in_an_existing_directory() {
        use super::check_output;
        use std::path::Path;
        let tmp = std::env::temp_dir();
        let e = check_output(&tmp).unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
        let e = check_output(Path::new("missing-thaw-dir/sub/x.thaw"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "directory missing-thaw-dir/sub does not exist; create it or choose another -o"
        );
        check_output(&tmp.join("x.thaw")).unwrap();
        check_output(Path::new("x.thaw")).unwrap();
    }
}
