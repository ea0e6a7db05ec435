//! The platform commands: the gateway (`thaw serve --config`), its workers
//! (`thaw worker`), and the clients of its management API and database (`deploy`,
//! `ps`, `scale`, `keys`, `usage`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use thaw_platform::store::{Store, UsageSummary, now_ms};

/// Where the gateway and the management commands find each other.
#[derive(Args, Clone)]
pub struct Endpoint {
    /// Gateway URL.
    #[arg(long, env = "THAW_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Admin API key (`thaw keys create --admin`); not needed for an open gateway.
    #[arg(long, env = "THAW_API_KEY")]
    pub api_key: Option<String>,
}

/// Where the database is: `--db`, or the `db` of `--config`, or $THAW_HOME/thaw.db.
#[derive(Args, Clone)]
pub struct DbArgs {
    /// The gateway's SQLite database.
    #[arg(long, env = "THAW_DB", global = true)]
    pub db: Option<PathBuf>,
    /// Take the database path from this gateway config.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
}

impl DbArgs {
    fn open(&self) -> Result<Store> {
        let path = match (&self.db, &self.config) {
            (Some(p), _) => p.clone(),
            (None, Some(c)) => thaw_platform::config::load(c)?.gateway.db,
            (None, None) => thaw_hub::thaw_home().join("thaw.db"),
        };
        Ok(Store::open(&path)?)
    }
}

/// Run the gateway described by `config`.
pub fn gateway(config: &Path, port: Option<u16>, host: Option<String>) -> Result<()> {
    let mut c = thaw_platform::config::load(config)?;
    if let Some(p) = port {
        c.gateway.port = p;
    }
    if let Some(h) = host {
        c.gateway.host = h;
    }
    // Freeze each deployment's GGUF once, now (with its system prompt stored): its
    // workers then thaw the snapshot (`thaw worker` finds it by the same key).
    for d in &c.deployments {
        if let Some(source) = &d.source
            && let Err(e) = crate::frozen::freeze(source, d.system_prompt.as_deref())
        {
            eprintln!(
                "warning: deployment {}: {e:#}; its workers load the model unfrozen",
                d.name
            );
        }
    }
    let launcher = thaw_platform::Launcher {
        exe: std::env::current_exe().context("cannot find the thaw binary to start workers")?,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(thaw_platform::run(
        c,
        launcher,
        thaw_server::shutdown_signal(),
    ))?;
    Ok(())
}

#[derive(Args)]
pub struct WorkerArgs {
    /// A known model name, a .gguf path or a .thaw snapshot.
    #[arg(required_unless_present = "exec")]
    pub model: Option<String>,
    #[arg(long, default_value = "model")]
    pub model_id: String,
    /// Instead of a model: run this shell command (an external server) and stop it
    /// when stdin closes, so it cannot outlive the gateway.
    #[arg(long, conflicts_with = "model")]
    pub exec: Option<String>,
    #[arg(short, long, default_value_t = 0)]
    pub threads: usize,
    #[arg(short, long, default_value_t = 0)]
    pub ctx_size: usize,
    #[arg(long, default_value_t = 4)]
    pub max_running: usize,
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
    /// The deployment's system prompt (the gateway adds it to chats): selects the
    /// frozen snapshot that stores it.
    #[arg(long)]
    pub system_prompt: Option<String>,
}

/// A replica: `thaw serve` on a free 127.0.0.1 port that prints
/// `THAW_WORKER_READY <addr>` once it serves, and exits when its stdin closes (the
/// gateway went away, however it died) or on SIGTERM.
pub fn worker(a: WorkerArgs) -> Result<()> {
    if let Some(cmd) = &a.exec {
        return supervise(cmd);
    }
    let model = thaw_hub::resolve(a.model.as_deref().unwrap_or_default())?;
    let path = crate::frozen::prefer_frozen(&model, a.system_prompt.as_deref());
    let config = thaw_server::ServeConfig {
        model_path: path.clone(),
        model_id: a.model_id,
        threads: a.threads,
        ctx_size: a.ctx_size,
        max_running: a.max_running,
        max_queue: a.max_queue,
        ..thaw_server::ServeConfig::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let load = thaw_engine::LoadOptions {
            threads: config.threads,
        };
        let engine = match thaw_engine::Engine::load(&path, &load) {
            Ok(e) => e,
            // A damaged frozen snapshot must not take the deployment down.
            Err(e) if path != model => {
                eprintln!(
                    "warning: {}: {e}; loading {} instead",
                    path.display(),
                    model.display()
                );
                thaw_engine::Engine::load(&model, &load)?
            }
            Err(e) => return Err(e.into()),
        };
        let state = thaw_server::AppState::new(Arc::new(engine), &config)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{} {addr}", thaw_platform::READY_LINE)?;
            out.flush()?;
        }
        // Not frozen yet (a deployment made through the management API): serve from
        // the GGUF now, freeze for the next cold start.
        if path == model {
            crate::frozen::freeze_in_background(model.clone(), a.system_prompt.clone());
        }
        let stdin_closed = async {
            let _ = tokio::task::spawn_blocking(|| {
                let mut sink = Vec::new();
                let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            })
            .await;
        };
        let shutdown = async move {
            tokio::select! {
                _ = thaw_server::shutdown_signal() => {}
                _ = stdin_closed => {}
            }
        };
        thaw_server::serve_with(listener, state, shutdown, Duration::from_secs(5)).await?;
        anyhow::Ok(())
    })?;
    // The stdin reader thread may still block; leave without waiting for it.
    std::process::exit(0)
}

/// Run `cmd` (same process group: the gateway's signals reach both) and stop it
/// when stdin closes; exit with its status.
fn supervise(cmd: &str) -> Result<()> {
    let mut child = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("exec {cmd}"))
        .stdin(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run `{cmd}`"))?;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        std::thread::sleep(Duration::from_secs(5));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    });
    let status = child.wait()?;
    std::process::exit(status.code().unwrap_or(1))
}

fn client(e: &Endpoint) -> Result<(reqwest::blocking::Client, String)> {
    let c = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    Ok((c, e.url.trim_end_matches('/').to_string()))
}

fn send(e: &Endpoint, req: reqwest::blocking::RequestBuilder) -> Result<serde_json::Value> {
    let req = match &e.api_key {
        Some(k) => req.bearer_auth(k),
        None => req,
    };
    let r = req.send().with_context(|| {
        format!(
            "cannot reach the gateway at {} (is `thaw serve --config` running? set --url)",
            e.url
        )
    })?;
    let status = r.status();
    let v: serde_json::Value = r.json().unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        let msg = v
            .pointer("/error/message")
            .and_then(|m| m.as_str())
            .unwrap_or("no error message");
        bail!("gateway answered {status}: {msg}");
    }
    Ok(v)
}

#[derive(Args)]
pub struct DeployArgs {
    /// A TOML file with one or more [[deployment]] tables.
    pub file: PathBuf,
    #[command(flatten)]
    pub endpoint: Endpoint,
}

/// Validate locally (line and field on error), then create or update on the gateway.
pub fn deploy(a: DeployArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("cannot read {}", a.file.display()))?;
    let parsed = thaw_platform::config::parse(&text, &a.file.display().to_string())?;
    if parsed.deployments.is_empty() {
        bail!("{}: no [[deployment]] table", a.file.display());
    }
    let (c, url) = client(&a.endpoint)?;
    let v = send(
        &a.endpoint,
        c.post(format!("{url}/admin/deployments"))
            .header("content-type", "application/toml")
            .body(text),
    )?;
    for d in v.as_array().into_iter().flatten() {
        println!(
            "deployed {} ({} replica(s) running)",
            d["name"].as_str().unwrap_or("?"),
            d["replicas"].as_array().map_or(0, Vec::len)
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct PsArgs {
    #[command(flatten)]
    pub endpoint: Endpoint,
    /// Print the gateway's JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn ps(a: PsArgs) -> Result<()> {
    let (c, url) = client(&a.endpoint)?;
    let v = send(&a.endpoint, c.get(format!("{url}/admin/deployments")))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<20} {:<9} {:>8} {:>8} {:>7} {:>11}  REPLICAS (id:state:pid:inflight)",
        "DEPLOYMENT", "MIN/MAX", "READY", "WAITING", "COLD", "IDLE"
    );
    for d in v.as_array().into_iter().flatten() {
        let reps = d["replicas"].as_array().cloned().unwrap_or_default();
        let ready = reps.iter().filter(|r| r["state"] == "ready").count();
        let list: Vec<String> = reps
            .iter()
            .map(|r| {
                format!(
                    "{}:{}:{}:{}",
                    r["id"],
                    r["state"].as_str().unwrap_or("?"),
                    r["pid"],
                    r["inflight"]
                )
            })
            .collect();
        println!(
            "{:<20} {:<9} {:>8} {:>8} {:>7} {:>11}  {}",
            d["name"].as_str().unwrap_or("?"),
            format!(
                "{}/{}",
                d["spec"]["min_replicas"], d["spec"]["max_replicas"]
            ),
            ready,
            d["waiting"].to_string(),
            d["cold_starts"].to_string(),
            format!("{}s", d["spec"]["idle_timeout"]),
            list.join(" ")
        );
        if let Some(e) = d["last_error"].as_str() {
            println!("  last start failure: {e}");
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct ScaleArgs {
    pub deployment: String,
    /// Replicas to keep running (0 = back to scale-to-zero).
    pub replicas: usize,
    #[command(flatten)]
    pub endpoint: Endpoint,
}

pub fn scale(a: ScaleArgs) -> Result<()> {
    let (c, url) = client(&a.endpoint)?;
    send(
        &a.endpoint,
        c.post(format!("{url}/admin/deployments/{}/scale", a.deployment))
            .json(&serde_json::json!({"replicas": a.replicas})),
    )?;
    println!("{}: min_replicas = {}", a.deployment, a.replicas);
    Ok(())
}

#[derive(Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
    #[command(flatten)]
    pub db: DbArgs,
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it (once: only its hash is stored).
    Create {
        #[arg(long)]
        name: String,
        /// May use the management API and read everyone's usage.
        #[arg(long)]
        admin: bool,
        /// Requests per minute.
        #[arg(long)]
        rpm: Option<u64>,
        /// Prompt + completion tokens per UTC day.
        #[arg(long)]
        tokens_per_day: Option<u64>,
    },
    /// List keys (names and limits, never the keys).
    List,
    /// Revoke a key: it stops working at once.
    Revoke { name: String },
}

pub fn keys(a: KeysArgs) -> Result<()> {
    let store = a.db.open()?;
    match a.command {
        KeysCommand::Create {
            name,
            admin,
            rpm,
            tokens_per_day,
        } => {
            let key = store.create_key(&name, admin, rpm, tokens_per_day)?;
            println!("{key}");
            eprintln!("Key `{name}` created. It is shown only this once: store it now.");
        }
        KeysCommand::List => {
            println!(
                "{:<20} {:<6} {:>8} {:>14}  STATUS",
                "NAME", "ADMIN", "RPM", "TOKENS/DAY"
            );
            let opt = |v: Option<u64>| v.map_or("-".to_string(), |n| n.to_string());
            for k in store.list_keys()? {
                println!(
                    "{:<20} {:<6} {:>8} {:>14}  {}",
                    k.name,
                    k.admin,
                    opt(k.rpm),
                    opt(k.tokens_per_day),
                    if k.revoked { "revoked" } else { "active" }
                );
            }
        }
        KeysCommand::Revoke { name } => {
            store.revoke_key(&name)?;
            println!("revoked {name}");
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct UsageArgs {
    /// How far back: 30m, 1h, 1d, 7d…
    #[arg(long, default_value = "1d")]
    pub since: String,
    /// Only this key.
    #[arg(long)]
    pub key: Option<String>,
    /// One JSON object per row instead of totals.
    #[arg(long)]
    pub rows: bool,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub db: DbArgs,
}

pub fn usage(a: UsageArgs) -> Result<()> {
    let d = thaw_platform::config::dur::parse(&a.since)
        .with_context(|| format!("`{}` is not a duration like 30m, 1h or 7d", a.since))?;
    let since = now_ms() - d.as_millis() as i64;
    let store = a.db.open()?;
    if a.rows {
        for r in store.rows(since, a.key.as_deref(), usize::MAX >> 1)? {
            println!("{}", serde_json::to_string(&r)?);
        }
        return Ok(());
    }
    let s: Vec<UsageSummary> = store.summary(since, a.key.as_deref())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!(
        "{:<16} {:<20} {:>8} {:>10} {:>10} {:>10} {:>10} {:>6} {:>6} {:>12}",
        "KEY",
        "DEPLOYMENT",
        "REQUESTS",
        "PROMPT",
        "CACHED",
        "COMPLETION",
        "REASONING",
        "COLD",
        "ERRORS",
        "COST"
    );
    for r in s {
        println!(
            "{:<16} {:<20} {:>8} {:>10} {:>10} {:>10} {:>10} {:>6} {:>6} {:>12.6}",
            r.key,
            r.deployment,
            r.requests,
            r.prompt_tokens,
            r.cached_tokens,
            r.completion_tokens,
            r.reasoning_tokens,
            r.cold_starts,
            r.errors,
            r.cost
        );
    }
    Ok(())
}
