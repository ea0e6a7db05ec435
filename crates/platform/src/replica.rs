//! Replica processes: `thaw worker` for native deployments, a shell command for
//! external OpenAI-compatible servers.
//!
//! No orphans: every child gets its own process group and `kill_on_drop`; a native
//! worker also exits when its stdin closes, which happens even when the gateway is
//! SIGKILLed. Stopping sends SIGTERM to the group (graceful: the worker drains), then
//! SIGKILL after the grace period.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use crate::config::DeploymentSpec;

/// What a `thaw worker` prints on stdout once it listens.
pub const READY_LINE: &str = "THAW_WORKER_READY";

/// Time spent in each step of a start, for the cold-start histogram.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartSteps {
    /// `spawn()` returning.
    pub spawn: Duration,
    /// From spawn to the replica answering (model mapped, socket bound).
    pub ready: Duration,
}

/// A running replica process.
pub struct Process {
    pub pid: u32,
    pub addr: SocketAddr,
    child: tokio::sync::Mutex<Child>,
    /// Held open: a native worker exits when it closes.
    stdin: Mutex<Option<ChildStdin>>,
    /// Last lines of stderr, to explain a crash.
    tail: Arc<Mutex<VecDeque<String>>>,
}

/// Where the `thaw` binary is (workers are `thaw worker …`).
#[derive(Debug, Clone)]
pub struct Launcher {
    pub exe: PathBuf,
}

fn keep_tail(r: impl AsyncRead + Unpin + Send + 'static, tail: Arc<Mutex<VecDeque<String>>>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(r).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            tracing::debug!(target: "thaw_platform::worker", "{l}");
            let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
            if t.len() == 8 {
                t.pop_front();
            }
            t.push_back(l);
        }
    });
}

fn tail_text(tail: &Mutex<VecDeque<String>>) -> String {
    let t = tail.lock().unwrap_or_else(|p| p.into_inner());
    t.iter().cloned().collect::<Vec<_>>().join(" | ")
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Launcher {
    /// Start one replica of `spec` and wait until it serves (or fails, or times out).
    pub async fn start(&self, spec: &DeploymentSpec) -> Result<(Process, StartSteps), String> {
        let t0 = Instant::now();
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (mut cmd, port) = match (&spec.source, &spec.command) {
            (Some(source), _) => {
                let mut c = Command::new(&self.exe);
                c.arg("worker")
                    .arg(source)
                    .args(["--model-id", &spec.name])
                    .args(["--max-running", &spec.max_concurrency.to_string()])
                    .args(["--threads", &spec.threads.to_string()])
                    .args(["--ctx-size", &spec.ctx_size.to_string()]);
                // Picks the snapshot frozen with this system prompt stored.
                if let Some(system) = &spec.system_prompt {
                    c.args(["--system-prompt", system]);
                }
                (c, None)
            }
            (None, Some(command)) => {
                let port = free_port().map_err(|e| format!("no free port: {e}"))?;
                let line = command.replace("{port}", &port.to_string());
                // `thaw worker --exec` runs it and stops it when our pipe closes.
                let mut c = Command::new(&self.exe);
                c.args(["worker", "--exec", &line]);
                (c, Some(port))
            }
            (None, None) => return Err("deployment has neither source nor command".into()),
        };
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            format!(
                "cannot start `{}`: {e}",
                cmd.as_std().get_program().to_string_lossy()
            )
        })?;
        let spawn = t0.elapsed();
        let pid = child.id().unwrap_or(0);
        let stdin = child.stdin.take();
        if let Some(e) = child.stderr.take() {
            keep_tail(e, tail.clone());
        }
        let stdout = child.stdout.take();
        let deadline = t0 + spec.start_timeout;
        let addr = match port {
            None => {
                let Some(out) = stdout else {
                    return Err("worker has no stdout".into());
                };
                wait_ready_line(out, &mut child, deadline, &tail).await?
            }
            Some(port) => {
                if let Some(out) = stdout {
                    keep_tail(out, tail.clone());
                }
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                wait_health(addr, &spec.health, &mut child, deadline, &tail).await?;
                addr
            }
        };
        let steps = StartSteps {
            spawn,
            ready: t0.elapsed() - spawn,
        };
        Ok((
            Process {
                pid,
                addr,
                child: tokio::sync::Mutex::new(child),
                stdin: Mutex::new(stdin),
                tail,
            },
            steps,
        ))
    }
}

async fn fail(child: &mut Child, what: String, tail: &Mutex<VecDeque<String>>) -> String {
    let _ = child.start_kill();
    let status = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
    // Let the stderr reader catch the last lines.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let t = tail_text(tail);
    let mut msg = what;
    if let Ok(Ok(s)) = status
        && msg.contains("exited")
    {
        msg = format!("{msg} ({s})");
    }
    if !t.is_empty() {
        msg = format!("{msg}: {t}");
    }
    msg
}

async fn wait_ready_line(
    out: impl AsyncRead + Unpin + Send + 'static,
    child: &mut Child,
    deadline: Instant,
    tail: &Arc<Mutex<VecDeque<String>>>,
) -> Result<SocketAddr, String> {
    let mut lines = BufReader::new(out).lines();
    let read = async {
        while let Ok(Some(l)) = lines.next_line().await {
            if let Some(rest) = l.strip_prefix(READY_LINE) {
                return rest.trim().parse::<SocketAddr>().ok();
            }
        }
        None
    };
    match tokio::time::timeout_at(deadline.into(), read).await {
        Ok(Some(addr)) => {
            keep_tail(lines.into_inner(), tail.clone());
            Ok(addr)
        }
        Ok(None) => Err(fail(child, "worker exited before it was ready".into(), tail).await),
        Err(_) => Err(fail(
            child,
            "worker did not become ready within start_timeout".into(),
            tail,
        )
        .await),
    }
}

async fn wait_health(
    addr: SocketAddr,
    path: &str,
    child: &mut Child,
    deadline: Instant,
    tail: &Mutex<VecDeque<String>>,
) -> Result<(), String> {
    let client = reqwest::Client::new();
    let url = format!("http://{addr}{path}");
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return Err(fail(child, "server exited before it was healthy".into(), tail).await);
        }
        if Instant::now() > deadline {
            return Err(fail(
                child,
                format!("server not healthy at {url} within start_timeout"),
                tail,
            )
            .await);
        }
        if let Ok(r) = client
            .get(&url)
            .timeout(Duration::from_secs(1))
            .send()
            .await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Process {
    /// `Some(description)` once the process has exited.
    pub async fn exited(&self) -> Option<String> {
        let mut c = self.child.lock().await;
        match c.try_wait() {
            Ok(Some(s)) => {
                let t = tail_text(&self.tail);
                Some(if t.is_empty() {
                    s.to_string()
                } else {
                    format!("{s}: {t}")
                })
            }
            _ => None,
        }
    }

    /// SIGTERM the process group and close stdin; SIGKILL after `grace`.
    pub async fn stop(&self, grace: Duration) {
        self.stdin.lock().unwrap_or_else(|p| p.into_inner()).take();
        let pg = Pid::from_raw(self.pid as i32);
        let _ = killpg(pg, Signal::SIGTERM);
        let mut c = self.child.lock().await;
        if tokio::time::timeout(grace, c.wait()).await.is_err() {
            let _ = killpg(pg, Signal::SIGKILL);
            let _ = c.wait().await;
        }
        // Anything the server itself forked.
        let _ = killpg(pg, Signal::SIGKILL);
    }
}
