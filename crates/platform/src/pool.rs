//! One deployment at run time: its replicas, the requests waiting for one, and the
//! scaling rules (cold start on demand, scale up on queue depth, scale to zero when
//! idle, replace crashed replicas, back off after failed starts).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Notify;

use crate::config::DeploymentSpec;
use crate::metrics::Metrics;
use crate::replica::{Launcher, Process};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaState {
    Starting,
    Ready,
    /// From an older spec, above the scale target or failed under a request: takes
    /// no new work, stops when idle (or, if still starting, once started).
    Draining,
}

struct Replica {
    id: u64,
    state: ReplicaState,
    proc: Option<Arc<Process>>,
    inflight: usize,
    last_used: Instant,
    started: Instant,
    generation: u64,
}

/// A replica as `thaw ps` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaView {
    pub id: u64,
    pub deployment: String,
    pub state: ReplicaState,
    pub pid: Option<u32>,
    pub addr: Option<String>,
    pub inflight: usize,
    pub idle_ms: u64,
    pub uptime_ms: u64,
}

/// A deployment as `thaw ps` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentView {
    pub name: String,
    pub spec: DeploymentSpec,
    pub replicas: Vec<ReplicaView>,
    pub waiting: usize,
    pub cold_starts: u64,
    /// The last failed start, while the deployment is backing off.
    pub last_error: Option<String>,
}

struct State {
    spec: Arc<DeploymentSpec>,
    generation: u64,
    replicas: Vec<Replica>,
    waiting: usize,
    failures: u32,
    backoff_until: Option<Instant>,
    last_error: Option<String>,
    /// Bumped on every failed start, so waiters learn about it.
    fail_epoch: u64,
    deleted: bool,
}

pub struct Pool {
    name: String,
    state: Mutex<State>,
    changed: Notify,
    next_id: AtomicU64,
    cold_starts: AtomicU64,
    launcher: Launcher,
    metrics: Arc<Metrics>,
    grace: Duration,
}

/// Why no replica could be had.
#[derive(Debug, Clone)]
pub enum AcquireError {
    /// Past `max_queue`.
    QueueFull,
    /// Starts fail; the message says why.
    StartFailed(String),
    /// The deployment was deleted while the request waited.
    Gone,
}

/// A scale request the deployment's spec does not allow.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ScaleError {
    #[error(
        "Deployment `{deployment}` allows at most {max} replica(s) (max_replicas = {max}); cannot scale to {asked}. To allow more, redeploy it with a higher max_replicas (`thaw deploy` a [[deployment]] with max_replicas = {asked})."
    )]
    AboveMax {
        deployment: String,
        max: usize,
        asked: usize,
    },
}

/// A slot on one replica, released on drop.
pub struct Lease {
    pool: Arc<Pool>,
    replica: u64,
    pub addr: std::net::SocketAddr,
    /// The request waited for a replica to start.
    pub cold: bool,
    pub spec: Arc<DeploymentSpec>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut st = self.pool.lock();
        if let Some(r) = st.replicas.iter_mut().find(|r| r.id == self.replica) {
            r.inflight = r.inflight.saturating_sub(1);
            r.last_used = Instant::now();
        }
        drop(st);
        self.pool.changed.notify_waiters();
    }
}

impl Lease {
    /// The replica failed under this request (connection refused or reset): stop
    /// sending it work; the reaper confirms and replaces it.
    pub fn replica_failed(&self) {
        let mut st = self.pool.lock();
        if let Some(r) = st.replicas.iter_mut().find(|r| r.id == self.replica)
            && r.state == ReplicaState::Ready
        {
            r.state = ReplicaState::Draining;
        }
    }
}

impl Pool {
    pub fn new(
        spec: DeploymentSpec,
        launcher: Launcher,
        metrics: Arc<Metrics>,
        grace: Duration,
    ) -> Arc<Pool> {
        Arc::new(Pool {
            name: spec.name.clone(),
            state: Mutex::new(State {
                spec: Arc::new(spec),
                generation: 0,
                replicas: Vec::new(),
                waiting: 0,
                failures: 0,
                backoff_until: None,
                last_error: None,
                fail_epoch: 0,
                deleted: false,
            }),
            changed: Notify::new(),
            next_id: AtomicU64::new(1),
            cold_starts: AtomicU64::new(0),
            launcher,
            metrics,
            grace,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn spec(&self) -> Arc<DeploymentSpec> {
        self.lock().spec.clone()
    }

    /// Replace the spec. Replicas of the old spec drain (finish their requests, then
    /// stop) when how they run changed; limits and prices apply at once.
    pub fn update(self: &Arc<Self>, spec: DeploymentSpec) {
        let mut st = self.lock();
        let old = st.spec.clone();
        let restart = old.source != spec.source
            || old.command != spec.command
            || old.threads != spec.threads
            || old.ctx_size != spec.ctx_size
            || old.max_concurrency != spec.max_concurrency
            || old.health != spec.health;
        if restart {
            st.generation += 1;
            for r in &mut st.replicas {
                if r.state == ReplicaState::Ready {
                    r.state = ReplicaState::Draining;
                }
            }
        }
        st.spec = Arc::new(spec);
        st.failures = 0;
        st.backoff_until = None;
        st.last_error = None;
        drop(st);
        self.changed.notify_waiters();
    }

    /// Keep `n` replicas running (`min_replicas = n`; 0 = back to scale-to-zero).
    /// Refused above `max_replicas`: raising the ceiling is a change of the deployment
    /// (`thaw deploy`), not a side effect of scaling. Replicas above `n` drain, those
    /// still starting first (they serve nothing yet; each stops once its start ends).
    pub fn scale(self: &Arc<Self>, n: usize) -> Result<(), ScaleError> {
        let mut st = self.lock();
        if n > st.spec.max_replicas {
            return Err(ScaleError::AboveMax {
                deployment: self.name.clone(),
                max: st.spec.max_replicas,
                asked: n,
            });
        }
        let mut spec = (*st.spec).clone();
        spec.min_replicas = n;
        st.spec = Arc::new(spec);
        let mut victims: Vec<usize> = (0..st.replicas.len())
            .filter(|&i| st.replicas[i].state != ReplicaState::Draining)
            .collect();
        let live = victims.len();
        victims.sort_by_key(|&i| {
            let r = &st.replicas[i];
            (r.state != ReplicaState::Starting, r.inflight)
        });
        for &i in victims.iter().take(live.saturating_sub(n)) {
            st.replicas[i].state = ReplicaState::Draining;
        }
        self.metrics.set_replicas(&self.name, &Self::counts(&st));
        drop(st);
        self.changed.notify_waiters();
        Ok(())
    }

    /// Mark deleted: waiters get an error, every replica drains.
    pub fn delete(&self) {
        let mut st = self.lock();
        st.deleted = true;
        for r in &mut st.replicas {
            r.state = ReplicaState::Draining;
        }
        drop(st);
        self.changed.notify_waiters();
    }

    /// Get a slot on a ready replica, starting one if needed and allowed.
    pub async fn acquire(self: &Arc<Self>) -> Result<Lease, AcquireError> {
        let mut cold = false;
        let mut w = Waiting {
            pool: self,
            queued: false,
        };
        let mut epoch = None;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.lock();
                if st.deleted {
                    return Err(AcquireError::Gone);
                }
                let max_c = st.spec.max_concurrency;
                let pick = st
                    .replicas
                    .iter_mut()
                    .filter(|r| r.state == ReplicaState::Ready && r.inflight < max_c)
                    .min_by_key(|r| r.inflight);
                if let Some(r) = pick {
                    r.inflight += 1;
                    r.last_used = Instant::now();
                    let lease = Lease {
                        pool: self.clone(),
                        replica: r.id,
                        addr: r
                            .proc
                            .as_ref()
                            .map(|p| p.addr)
                            .expect("ready has a process"),
                        cold,
                        spec: st.spec.clone(),
                    };
                    if w.queued {
                        st.waiting -= 1;
                        w.queued = false;
                        self.metrics.set_waiting(&self.name, st.waiting);
                    }
                    return Ok(lease);
                }
                if !w.queued {
                    if st.waiting >= st.spec.max_queue {
                        return Err(AcquireError::QueueFull);
                    }
                    st.waiting += 1;
                    w.queued = true;
                    self.metrics.set_waiting(&self.name, st.waiting);
                }
                match epoch {
                    None => epoch = Some(st.fail_epoch),
                    Some(e) if e != st.fail_epoch && !self.has_live(&st) => {
                        return Err(AcquireError::StartFailed(
                            st.last_error.clone().unwrap_or_default(),
                        ));
                    }
                    _ => {}
                }
                if self.want_more(&st) {
                    if let Some(until) = st.backoff_until
                        && Instant::now() < until
                    {
                        if !self.has_live(&st) {
                            return Err(AcquireError::StartFailed(
                                st.last_error.clone().unwrap_or_default(),
                            ));
                        }
                    } else {
                        self.start_replica(&mut st);
                    }
                }
                if !st.replicas.iter().any(|r| r.state == ReplicaState::Ready) {
                    cold = true;
                }
            }
            // Wake at least every second to re-check backoff and timeouts.
            let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
        }
    }

    fn has_live(&self, st: &State) -> bool {
        st.replicas
            .iter()
            .any(|r| r.state != ReplicaState::Draining)
    }

    /// More replicas wanted: none live, or too many waiting per live replica.
    fn want_more(&self, st: &State) -> bool {
        let live = st
            .replicas
            .iter()
            .filter(|r| r.state != ReplicaState::Draining)
            .count();
        if live >= st.spec.max_replicas {
            return false;
        }
        live == 0 || st.waiting > live * st.spec.scale_up_queue
    }

    fn start_replica(self: &Arc<Self>, st: &mut State) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        st.replicas.push(Replica {
            id,
            state: ReplicaState::Starting,
            proc: None,
            inflight: 0,
            last_used: now,
            started: now,
            generation: st.generation,
        });
        self.metrics.scale_event(&self.name, "up");
        let spec = st.spec.clone();
        let pool = self.clone();
        tokio::spawn(async move {
            let res = pool.launcher.start(&spec).await;
            let mut st = pool.lock();
            let idx = st.replicas.iter().position(|r| r.id == id);
            match (res, idx) {
                (Ok((proc, steps)), Some(i)) => {
                    let stale = st.replicas[i].generation != st.generation
                        || st.deleted
                        || st.replicas[i].state == ReplicaState::Draining;
                    let r = &mut st.replicas[i];
                    r.proc = Some(Arc::new(proc));
                    r.state = if stale {
                        ReplicaState::Draining
                    } else {
                        ReplicaState::Ready
                    };
                    r.last_used = Instant::now();
                    st.failures = 0;
                    st.backoff_until = None;
                    st.last_error = None;
                    pool.cold_starts.fetch_add(1, Ordering::Relaxed);
                    pool.metrics.cold_start(&pool.name, steps);
                    tracing::info!(deployment = %pool.name, ms = (steps.spawn + steps.ready).as_millis() as u64, "replica started");
                }
                (Ok((proc, _)), None) => {
                    // Removed while starting (deployment deleted): stop it.
                    let grace = pool.grace;
                    tokio::spawn(async move { proc.stop(grace).await });
                }
                (Err(e), _) => {
                    if let Some(i) = idx {
                        st.replicas.remove(i);
                    }
                    st.failures += 1;
                    let backoff = Duration::from_millis(500)
                        .saturating_mul(1 << st.failures.min(6))
                        .min(Duration::from_secs(30));
                    st.backoff_until = Some(Instant::now() + backoff);
                    let msg = format!("replica of `{}` failed to start: {e}", pool.name);
                    tracing::warn!("{msg}; retrying in {backoff:?}");
                    st.last_error = Some(msg);
                    st.fail_epoch += 1;
                    pool.metrics.start_failure(&pool.name);
                }
            }
            drop(st);
            pool.changed.notify_waiters();
        });
    }

    /// Housekeeping, called periodically: reap exited replicas, stop idle and
    /// draining ones, keep `min_replicas` running. Returns false once the deployment
    /// is deleted and has no replica left.
    pub async fn tick(self: &Arc<Self>) -> bool {
        let procs: Vec<(u64, Arc<Process>)> = {
            let st = self.lock();
            st.replicas
                .iter()
                .filter_map(|r| r.proc.clone().map(|p| (r.id, p)))
                .collect()
        };
        let mut dead = Vec::new();
        for (id, p) in &procs {
            if let Some(why) = p.exited().await {
                dead.push((*id, why));
            }
        }
        let mut stop = Vec::new();
        let alive = {
            let mut st = self.lock();
            for (id, why) in &dead {
                if let Some(i) = st.replicas.iter().position(|r| r.id == *id) {
                    // Replicas the pool stops leave this list before they are told to
                    // stop, so any exit seen here was unasked: a crash, even of a
                    // replica already draining (e.g. after `Lease::replica_failed`).
                    st.replicas.remove(i);
                    tracing::warn!(deployment = %self.name, replica = id, "replica exited: {why}");
                    self.metrics.crash(&self.name);
                }
            }
            let spec = st.spec.clone();
            let mut live = st
                .replicas
                .iter()
                .filter(|r| r.state != ReplicaState::Draining)
                .count();
            let waiting = st.waiting;
            let mut keep = Vec::new();
            for r in std::mem::take(&mut st.replicas) {
                let idle = r.inflight == 0 && waiting == 0;
                let idle_long = idle && r.last_used.elapsed() >= spec.idle_timeout;
                // A draining replica still starting stays listed (and counted) until
                // its start ends; the start task then leaves it draining to be stopped.
                let drained =
                    r.state == ReplicaState::Draining && r.inflight == 0 && r.proc.is_some();
                let scale_down =
                    r.state == ReplicaState::Ready && idle_long && live > spec.min_replicas;
                if drained || scale_down {
                    if scale_down {
                        live -= 1;
                    }
                    self.metrics.scale_event(&self.name, "down");
                    if let Some(p) = r.proc {
                        stop.push(p);
                    }
                } else {
                    keep.push(r);
                }
            }
            st.replicas = keep;
            let backing_off = st.backoff_until.is_some_and(|u| Instant::now() < u);
            if !st.deleted && !backing_off {
                while live < spec.min_replicas {
                    self.start_replica(&mut st);
                    live += 1;
                }
            }
            self.metrics.set_replicas(&self.name, &Self::counts(&st));
            !(st.deleted && st.replicas.is_empty())
        };
        for p in stop {
            let grace = self.grace;
            tokio::spawn(async move { p.stop(grace).await });
        }
        if !dead.is_empty() {
            self.changed.notify_waiters();
        }
        alive
    }

    fn counts(st: &State) -> [(ReplicaState, usize); 3] {
        let n = |s| st.replicas.iter().filter(|r| r.state == s).count();
        [
            (ReplicaState::Starting, n(ReplicaState::Starting)),
            (ReplicaState::Ready, n(ReplicaState::Ready)),
            (ReplicaState::Draining, n(ReplicaState::Draining)),
        ]
    }

    pub fn view(&self) -> DeploymentView {
        let st = self.lock();
        DeploymentView {
            name: self.name.clone(),
            spec: (*st.spec).clone(),
            replicas: st
                .replicas
                .iter()
                .map(|r| ReplicaView {
                    id: r.id,
                    deployment: self.name.clone(),
                    state: r.state,
                    pid: r.proc.as_ref().map(|p| p.pid),
                    addr: r.proc.as_ref().map(|p| p.addr.to_string()),
                    inflight: r.inflight,
                    idle_ms: r.last_used.elapsed().as_millis() as u64,
                    uptime_ms: r.started.elapsed().as_millis() as u64,
                })
                .collect(),
            waiting: st.waiting,
            cold_starts: self.cold_starts.load(Ordering::Relaxed),
            last_error: st.last_error.clone(),
        }
    }

    /// Stop every replica (shutdown): wait for in-flight requests up to `grace`.
    pub async fn stop_all(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        loop {
            let busy = self.lock().replicas.iter().any(|r| r.inflight > 0);
            if !busy || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let procs: Vec<Arc<Process>> = {
            let mut st = self.lock();
            st.deleted = true;
            st.replicas.drain(..).filter_map(|r| r.proc).collect()
        };
        self.changed.notify_waiters();
        let stops = procs.iter().map(|p| p.stop(Duration::from_secs(2)));
        futures_util::future::join_all(stops).await;
    }
}

/// Takes a request out of the waiting count if it leaves (error or cancelled) while
/// queued.
struct Waiting<'a> {
    pool: &'a Pool,
    queued: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.queued {
            let mut st = self.pool.lock();
            st.waiting = st.waiting.saturating_sub(1);
            self.pool.metrics.set_waiting(&self.pool.name, st.waiting);
        }
    }
}
