//! A stand-alone `serve` for trying the server (and the Python tests) before the CLI
//! wires `thaw serve`: `cargo run --release -p thaw-server --example serve -- smollm2`.
//! The argument handling is what the CLI's `serve` subcommand does.

use std::path::Path;

use clap::Parser;

#[derive(Parser)]
struct ServeArgs {
    /// A known model name, a .gguf path, or hf:ORG/REPO/FILE.gguf.
    model: String,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Kernel threads (0 = all cores).
    #[arg(short, long, default_value_t = 0)]
    threads: usize,
    /// Context per sequence in tokens (0 = the model's, at most 4096).
    #[arg(short, long, default_value_t = 0)]
    ctx_size: usize,
    /// Sequences generated concurrently.
    #[arg(long, default_value_t = 4)]
    max_running: usize,
    /// Requests allowed to wait for a slot (more get 429).
    #[arg(long, default_value_t = 64)]
    max_queue: usize,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = ServeArgs::parse();
    let path = thaw_hub::resolve(&a.model)?;
    let model_id = Path::new(&a.model)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(&a.model)
        .to_string();
    let config = thaw_server::ServeConfig {
        model_path: path,
        model_id,
        host: a.host,
        port: a.port,
        threads: a.threads,
        ctx_size: a.ctx_size,
        max_running: a.max_running,
        max_queue: a.max_queue,
        ..thaw_server::ServeConfig::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(thaw_server::serve(config))?;
    Ok(())
}
