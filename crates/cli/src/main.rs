//! `thaw`: run open-weight language models on this machine.

// `unsafe` only in `restore_sigpipe`.
#![deny(unsafe_code)]

mod bench;
mod cold;
mod frozen;
mod inspect;
mod models;
mod perplexity;
mod platform;
mod run;
mod serve;
mod snapshot;
mod structured;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "thaw",
    version,
    about = "Run and serve open-weight language models from GGUF files",
    long_about = "Run and serve open-weight language models from GGUF files.\n\n\
        MODEL is a known name (`thaw list --known`), a path to a .gguf file, or \
        hf:ORG/REPO/FILE.gguf for a file on the Hugging Face hub. Models are cached \
        under $THAW_HOME (default: ~/.cache/thaw)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Answer a prompt, or chat interactively when no prompt is given.
    Run(run::RunArgs),
    /// Download a model into the cache.
    Pull(models::PullArgs),
    /// List cached models (and, with --known, the names thaw can fetch).
    List(models::ListArgs),
    /// Perplexity of a text file, computed like llama.cpp's perplexity tool.
    Perplexity(perplexity::PerplexityArgs),
    /// Show a model file's metadata and tensors.
    Inspect(inspect::InspectArgs),
    /// Prompt-processing and generation speed, read bandwidth and the decode ceiling.
    Bench(bench::BenchArgs),
    /// Serve a model over an OpenAI-compatible HTTP API.
    Serve(serve::ServeArgs),
    /// Freeze a model into a .thaw snapshot; inspect or verify one.
    Snapshot(snapshot::SnapshotArgs),
    /// A gateway replica (started by `thaw serve --config`, not by hand).
    #[command(hide = true)]
    Worker(platform::WorkerArgs),
    /// Create or update deployments on a running gateway from a TOML file.
    Deploy(platform::DeployArgs),
    /// Deployments and replicas of a running gateway.
    Ps(platform::PsArgs),
    /// Set how many replicas of a deployment stay running.
    Scale(platform::ScaleArgs),
    /// Create, list and revoke the gateway's API keys.
    Keys(platform::KeysArgs),
    /// Tokens and cost per key and deployment, from the gateway's ledger.
    Usage(platform::UsageArgs),
    /// One timed cold start (started by `thaw bench --cold`).
    #[command(hide = true)]
    ColdChild(cold::ColdChildArgs),
    /// Build the snapshot `thaw run` thaws next time (started by `thaw run`).
    #[command(hide = true)]
    Freeze { model: std::path::PathBuf },
}

fn main() -> std::process::ExitCode {
    let (filter, warning) = log_filter(std::env::var("THAW_LOG"));
    if let Some(w) = warning {
        eprintln!("warning: {w}");
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // Commands that print results end quietly when their stdout is a pipe that
    // closes (`thaw inspect smollm2 | head -3`), as other command-line tools do;
    // the servers keep ignoring SIGPIPE (a client going away must not kill them).
    if !matches!(
        cli.command,
        Command::Serve(_) | Command::Worker(_) | Command::ColdChild(_) | Command::Freeze { .. }
    ) {
        restore_sigpipe();
    }
    let result = match cli.command {
        Command::Run(a) => run::run(a),
        Command::Pull(a) => models::pull(a),
        Command::List(a) => models::list(a),
        Command::Perplexity(a) => perplexity::perplexity(a),
        Command::Inspect(a) => inspect::inspect(a),
        Command::Bench(a) => bench::bench(a),
        Command::Serve(a) => serve::serve(a),
        Command::Snapshot(a) => snapshot::snapshot(a),
        Command::Worker(a) => platform::worker(a),
        Command::Deploy(a) => platform::deploy(a),
        Command::Ps(a) => platform::ps(a),
        Command::Scale(a) => platform::scale(a),
        Command::Keys(a) => platform::keys(a),
        Command::Usage(a) => platform::usage(a),
        Command::ColdChild(a) => cold::child(a),
        Command::Freeze { model } => frozen::freeze_for_run(&model),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The log filter `THAW_LOG` asks for, `warn` when it is unset. A value that is not a
/// filter also gives `warn`, with a warning naming the value and the directive at fault
/// (a typo must not change the logging without a word).
fn log_filter(
    var: Result<String, std::env::VarError>,
) -> (tracing_subscriber::EnvFilter, Option<String>) {
    use tracing_subscriber::EnvFilter;
    const DEFAULT: &str = "warn";
    let fallback = |v: &dyn std::fmt::Debug, why: String| {
        (
            EnvFilter::new(DEFAULT),
            Some(format!(
                "THAW_LOG={v:?} is not a valid log filter ({why}); logging at `{DEFAULT}` instead"
            )),
        )
    };
    let v = match var {
        Err(std::env::VarError::NotPresent) => return (EnvFilter::new(DEFAULT), None),
        Err(std::env::VarError::NotUnicode(v)) => {
            return fallback(&v, "not UTF-8".to_string());
        }
        // Set but empty (`THAW_LOG= thaw …`): the default, not an empty filter.
        Ok(v) if v.trim().is_empty() => return (EnvFilter::new(DEFAULT), None),
        Ok(v) => v,
    };
    // Directive by directive, to name the bad one. `target=` parses (as `target=trace`,
    // every other target off) but is an unfinished filter, not a request for that.
    for d in v.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if d.ends_with('=') {
            return fallback(&v, format!("`{d}` has no level after `=`"));
        }
        // A bare word that is not a level is a target: `warning` would switch every
        // log off but that target's. thaw's own targets start with `thaw`.
        const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
        let bare = !d.contains(['=', '[', ':']);
        if bare && !LEVELS.contains(&d.to_ascii_lowercase().as_str()) && !d.starts_with("thaw") {
            return fallback(
                &v,
                format!("`{d}` is not a level (off, error, warn, info, debug, trace)"),
            );
        }
        if let Err(e) = EnvFilter::try_new(d) {
            return fallback(&v, format!("`{d}`: {e}"));
        }
    }
    match EnvFilter::try_new(&v) {
        Ok(f) => (f, None),
        Err(e) => fallback(&v, e.to_string()),
    }
}

/// Put SIGPIPE back to its default action (end the process), which Rust's runtime
/// sets to "ignore" before `main`: a write to a closed pipe then ends the process
/// instead of returning an error that `println!` turns into a panic.
#[allow(unsafe_code)]
fn restore_sigpipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: called once at start-up on the main thread before any other thread is
    // started, and SIG_DFL installs no handler code, so no async-signal-safety rule
    // can be broken.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

/// `{e:#}` without repeating a cause that the message before it already ends with
/// (error types that write their source into their own message and also return it
/// from `source()`: "x: No such file or directory (os error 2): No such file …").
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Kernel threads for `-t N`: more threads than cores only slow the kernels down
/// (they wait on each other at every barrier), so N is capped at the cores
/// available, with a warning. 0 (all cores) is passed on as it is.
pub(crate) fn kernel_threads(requested: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if requested > cores {
        eprintln!(
            "warning: -t {requested} is more than the {cores} cores available; using {cores} threads"
        );
        return cores;
    }
    requested
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_drops_a_cause_already_in_the_message() {
        let io = || std::io::Error::from(std::io::ErrorKind::NotFound);
        #[derive(Debug)]
        struct Doubled(std::io::Error);
        impl std::fmt::Display for Doubled {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "/x.thaw: {}", self.0)
            }
        }
        impl std::error::Error for Doubled {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = anyhow::Error::new(Doubled(io()));
        assert_eq!(error_chain(&e), format!("/x.thaw: {}", io()));
        // A context whose text does not contain the cause keeps it.
        let e = anyhow::Error::new(io()).context("loading m.gguf");
        assert_eq!(error_chain(&e), format!("loading m.gguf: {}", io()));
    }

    #[test]
    fn kernel_threads_are_capped_at_the_cores() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(kernel_threads(0), 0);
        assert_eq!(kernel_threads(1), 1);
        assert_eq!(kernel_threads(cores), cores);
        assert_eq!(kernel_threads(cores + 997), cores);
    }
}
