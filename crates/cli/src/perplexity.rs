//! `thaw perplexity`: the same measure as llama.cpp's perplexity tool, so the two can
//! be compared on the same GGUF.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use thaw_engine::{Engine, LoadOptions};

#[derive(Args)]
pub struct PerplexityArgs {
    /// Model name, .gguf path or hf:ORG/REPO/FILE.gguf.
    pub model: String,
    /// The text file to score.
    pub file: PathBuf,
    /// Tokens per chunk; the second half of each chunk is scored.
    #[arg(long = "ctx", short = 'c', default_value_t = 512)]
    pub ctx: usize,
    /// Kernel threads (default: all cores).
    #[arg(short, long, default_value_t = 0)]
    pub threads: usize,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn perplexity(args: PerplexityArgs) -> Result<()> {
    let path = thaw_hub::resolve(&args.model)?;
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let engine = Engine::load(
        &path,
        &LoadOptions {
            threads: crate::kernel_threads(args.threads),
        },
    )?;
    // llama.cpp tokenizes the whole file with BOS per the model and no special parsing.
    let tokens = engine.tokenizer().encode(&text, true, false)?;
    let add_bos = if engine.tokenizer().add_bos() {
        engine.tokenizer().bos_id()
    } else {
        None
    };
    let report = thaw_models::perplexity(
        engine.model(),
        engine.pool(),
        &tokens,
        args.ctx,
        add_bos,
        |chunk, n_chunks, ppl| {
            if !args.json {
                eprint!("\r[{}/{}] {:.4}", chunk + 1, n_chunks, ppl);
            }
        },
    )?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "model": path.display().to_string(),
                "file": args.file.display().to_string(),
                "ctx": args.ctx,
                "tokens": tokens.len(),
                "chunks": report.n_chunks,
                "perplexity": report.perplexity,
            })
        );
    } else {
        eprintln!();
        println!(
            "perplexity: {:.4} ({} chunks of {} tokens, {} tokens in the file)",
            report.perplexity,
            report.n_chunks,
            args.ctx,
            tokens.len()
        );
    }
    Ok(())
}
