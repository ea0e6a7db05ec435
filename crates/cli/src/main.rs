//! `thaw`: run open-weight language models on this machine.

#![forbid(unsafe_code)]

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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("THAW_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
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
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
