//! `thaw serve`: one model behind the OpenAI-compatible HTTP API.

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct ServeArgs {
    /// A known model name, a .gguf path, or hf:ORG/REPO/FILE.gguf.
    #[arg(default_value = thaw_hub::DEFAULT_MODEL)]
    pub model: String,
    /// Address to listen on [default: 127.0.0.1, or the config's].
    #[arg(long)]
    pub host: Option<String>,
    /// Port to listen on [default: 8080, or the config's].
    #[arg(long)]
    pub port: Option<u16>,
    /// Kernel threads (0 = all cores).
    #[arg(short, long, default_value_t = 0)]
    pub threads: usize,
    /// Context per sequence in tokens (0 = the model's, at most 4096).
    #[arg(short, long, default_value_t = 0)]
    pub ctx_size: usize,
    /// Sequences generated concurrently (each holds a KV cache).
    #[arg(long, default_value_t = 4)]
    pub max_running: usize,
    /// KV-cache memory for all running sequences together, e.g. 512MiB or 2GiB (each
    /// sequence holds a cache of the full context; fewer run when it is reached and
    /// the rest queue).
    #[arg(long, value_parser = thaw_server::parse_bytes)]
    pub kv_memory: Option<u64>,
    /// Prompt tokens processed per batched step, next to the running decodes.
    #[arg(long, default_value_t = 256)]
    pub prefill_chunk: usize,
    /// Requests allowed to wait for a slot; more get 429.
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
    /// The model id clients send in `model` (default: the name or file stem given).
    #[arg(long)]
    pub model_id: Option<String>,
    /// Run the multi-model gateway described by this TOML file instead (MODEL is
    /// ignored; --host/--port override the file when given explicitly).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
}

pub fn serve(a: ServeArgs) -> Result<()> {
    if let Some(config) = &a.config {
        return crate::platform::gateway(config, a.port, a.host);
    }
    let path = thaw_hub::resolve(&a.model)?;
    let model_id = a.model_id.clone().unwrap_or_else(|| model_id_of(&a.model));
    let config = thaw_server::ServeConfig {
        model_path: path,
        model_id,
        host: a.host.unwrap_or_else(|| "127.0.0.1".into()),
        port: a.port.unwrap_or(8080),
        threads: crate::kernel_threads(a.threads),
        ctx_size: a.ctx_size,
        max_running: a.max_running,
        max_queue: a.max_queue,
        kv_memory: a.kv_memory,
        prefill_chunk: a.prefill_chunk,
        ..thaw_server::ServeConfig::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(thaw_server::serve(config))?;
    Ok(())
}

/// The id a served model answers to by default: the name given, or the file's stem
/// for a path (`models/smol.thaw` → `smol`).
fn model_id_of(spec: &str) -> String {
    let name = spec.rsplit('/').next().unwrap_or(spec);
    [".gguf", ".thaw"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))
        .unwrap_or(name)
        .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn model_id_is_the_name_or_the_file_stem() {
        use super::model_id_of;
        assert_eq!(model_id_of("smollm2"), "smollm2");
        assert_eq!(model_id_of("/tmp/x.thaw"), "x");
        assert_eq!(model_id_of("x.thaw"), "x");
        assert_eq!(model_id_of("dir/model.gguf"), "model");
        assert_eq!(model_id_of("hf:org/repo/file.gguf"), "file");
    }
}
