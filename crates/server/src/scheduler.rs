//! The scheduler: one dedicated thread owns every session and runs all model work (one
//! forward pass at a time on the kernel thread pool). Async handlers send jobs over a
//! channel; text flows back over each job's own channel.
//!
//! Continuous batching: each loop iteration (1) drops sequences whose client went away,
//! (2) admits queued jobs up to `max_running` (and the KV-memory limit), giving each
//! the free session whose cached tokens share the longest prefix with its prompt, and
//! (3) runs ONE batched forward pass ([`Worker::step`]) holding a decode token of every
//! running sequence plus at most `prefill_chunk` prompt tokens of new ones, so each
//! weight matrix is read once per step for all of them and a long prompt does not
//! stall running decodes.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use thaw_constrain::{Constraint, ReasoningTokens};
use thaw_engine::{Engine, EngineError, Session, SessionBatch, StopMatcher};
use thaw_sampling::{Sampler, SamplerConfig, logprob_of, top_logprobs};
use thaw_tokenizer::StreamDecoder;
use tokio::sync::mpsc::UnboundedSender;

use crate::ServerError;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// One generated token's log-probabilities.
#[derive(Debug, Clone)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// What a job's channel carries back to its handler.
#[derive(Debug)]
pub enum Event {
    Text {
        text: String,
        logprobs: Vec<TokenLogprob>,
    },
    Done {
        finish: Finish,
        counts: TokenCounts,
    },
    Error(ApiError),
}

/// Token counts of one finished job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCounts {
    pub prompt: usize,
    /// Prompt tokens whose K/V came from a cache.
    pub cached: usize,
    pub completion: usize,
    /// Of the completion, a thinking model's reasoning (`None` for other models).
    pub reasoning: Option<usize>,
}

/// A generation request as the scheduler sees it.
pub struct Job {
    pub prompt: Vec<u32>,
    pub sampler: SamplerConfig,
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
    /// `Some(k)`: report each token's log-probability and the `k` most likely tokens.
    pub logprobs: Option<usize>,
    pub events: UnboundedSender<Event>,
    pub arrived: Instant,
    /// Keep generating past end-of-generation tokens (only `max_tokens`, a stop
    /// string or the context end it).
    pub ignore_eos: bool,
    /// Grammar the output must follow (`response_format`, tool calls).
    pub constraint: Option<Box<Constraint>>,
    /// A thinking model's output: `Some(open)`, where `open` says the prompt opened
    /// its `<think>` block; its reasoning tokens are counted.
    pub reasoning: Option<bool>,
    slot: Option<QueueSlot>,
}

impl Job {
    pub fn new(
        prompt: Vec<u32>,
        sampler: SamplerConfig,
        max_tokens: Option<usize>,
        stop: Vec<String>,
        logprobs: Option<usize>,
        events: UnboundedSender<Event>,
    ) -> Self {
        Job {
            prompt,
            sampler,
            max_tokens,
            stop,
            logprobs,
            events,
            arrived: Instant::now(),
            ignore_eos: false,
            constraint: None,
            reasoning: None,
            slot: None,
        }
    }

    fn reject(self, e: ApiError) {
        let _ = self.events.send(Event::Error(e));
    }
}

/// Counts a job in the queue-depth gauge for as long as it lives unscheduled, however it
/// leaves the queue (admitted, cancelled, lost in a panic).
struct QueueSlot(Arc<Metrics>);
impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.0.queue_depth.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Same for the running-sequences gauge.
struct RunSlot(Arc<Metrics>);
impl Drop for RunSlot {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Msg {
    Job(Job),
    Shutdown(Duration),
}

#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    pub n_ctx: usize,
    pub max_running: usize,
    /// Bytes of KV cache all sessions together may hold (`None`: no limit beyond
    /// `max_running` sessions).
    pub kv_memory: Option<u64>,
    pub max_queue: usize,
    pub prefill_chunk: usize,
}

/// The async side's handle on the scheduler thread.
pub struct Scheduler {
    tx: std::sync::Mutex<Sender<Msg>>,
    metrics: Arc<Metrics>,
    max_queue: usize,
    n_ctx: usize,
    max_running: usize,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Scheduler {
    /// Start the thread; fails if a session of `opts.n_ctx` tokens cannot be made.
    pub fn start(
        engine: Arc<Engine>,
        opts: SchedulerOptions,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ServerError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let m = metrics.clone();
        let o = opts.clone();
        let thread = std::thread::Builder::new()
            .name("thaw-scheduler".into())
            .spawn(move || {
                // The first session is made here (sessions stay on this thread) and tells
                // the caller the real context size.
                let first = match engine.session(o.n_ctx) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(ServerError::Engine(e)));
                        return;
                    }
                };
                // Every session holds a full-context cache: the KV limit is a number
                // of sessions, and so of concurrently running sequences.
                let per_session = engine.model().cache_bytes(first.n_ctx()) as u64;
                let mut o = o;
                if let Some(limit) = o.kv_memory {
                    let fit = (limit / per_session.max(1)) as usize;
                    if fit == 0 {
                        let _ = ready_tx.send(Err(ServerError::Scheduler(format!(
                            "--kv-memory {} holds no sequence: one sequence of {} tokens needs {} of KV cache; raise --kv-memory or lower --ctx-size",
                            format_bytes(limit),
                            first.n_ctx(),
                            format_bytes(per_session)
                        ))));
                        return;
                    }
                    o.max_running = o.max_running.min(fit);
                    m.kv_limit_bytes.store(limit, Ordering::Relaxed);
                }
                let _ = ready_tx.send(Ok((first.n_ctx(), o.max_running)));
                let mut pool = vec![first];
                loop {
                    let run = catch_unwind(AssertUnwindSafe(|| {
                        let free = std::mem::take(&mut pool);
                        Worker::new(&engine, &rx, &o, &m, free, per_session).run()
                    }));
                    match run {
                        Ok(()) => break,
                        Err(_) => {
                            // Jobs in flight were dropped with the worker: their handlers
                            // see a closed channel and answer 500. Start over clean.
                            m.scheduler_restarts.fetch_add(1, Ordering::Relaxed);
                            tracing::error!("scheduler panicked; restarting it");
                        }
                    }
                }
            })
            .map_err(ServerError::Io)?;
        let (n_ctx, max_running) = match ready_rx.recv() {
            Ok(r) => r?,
            Err(_) => return Err(ServerError::Scheduler("the scheduler thread died".into())),
        };
        Ok(Scheduler {
            tx: std::sync::Mutex::new(tx),
            metrics,
            max_queue: opts.max_queue,
            n_ctx,
            max_running,
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Sequences that run at once: `--max-running`, lowered to what `--kv-memory`
    /// holds.
    pub fn max_running(&self) -> usize {
        self.max_running
    }

    /// Queue a job, or 429 when `max_queue` jobs are already waiting.
    pub fn submit(&self, job: Job) -> Result<(), ApiError> {
        self.submit_many(vec![job])
    }

    /// Queue the jobs of one request (its `n` choices) together: all their queue
    /// slots are taken at once or none (429), and a request asking for more jobs than
    /// the queue can ever hold is a 400 rather than a 429 a client would retry.
    pub fn submit_many(&self, jobs: Vec<Job>) -> Result<(), ApiError> {
        let k = jobs.len();
        if k > self.max_queue {
            return Err(ApiError::invalid(
                "n",
                format!(
                    "This request asks for {k} completions; this server queues at most {} at once (--max-queue).",
                    self.max_queue
                ),
            ));
        }
        let q = &self.metrics.queue_depth;
        let mut cur = q.load(Ordering::Relaxed);
        loop {
            if cur + k > self.max_queue {
                return Err(ApiError::queue_full());
            }
            match q.compare_exchange_weak(cur, cur + k, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        let mut jobs = jobs;
        for job in &mut jobs {
            job.slot = Some(QueueSlot(self.metrics.clone()));
        }
        let tx = self
            .tx
            .lock()
            .map_err(|_| ApiError::internal("scheduler lock poisoned"))?;
        for job in jobs {
            tx.send(Msg::Job(job))
                .map_err(|_| ApiError::unavailable("The server is shutting down."))?;
        }
        Ok(())
    }

    /// Stop admitting work; running sequences get `grace` to finish, then are cancelled.
    pub fn shutdown(&self, grace: Duration) {
        if let Ok(tx) = self.tx.lock() {
            let _ = tx.send(Msg::Shutdown(grace));
        }
    }

    /// Wait for the thread to end (after [`shutdown`](Self::shutdown)).
    pub fn join(&self) {
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// `n` bytes in binary units ("512 MiB").
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// Parse a size such as `512MiB`, `2G`, `1.5 GiB` or `1048576` (bytes). `K/M/G/T`
/// and `KiB/MiB/GiB/TiB` are binary (1024), `KB/MB/GB/TB` decimal (1000).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (examples: 512MiB, 2GiB, 1000000)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tib" => 1024f64.powi(4),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        other => {
            return Err(format!(
                "`{s}`: unknown unit `{other}` (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"
            ));
        }
    };
    Ok((v * mult) as u64)
}

/// Length of the common prefix of two token sequences.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Shorter shared prefixes are computed again rather than waited for and copied.
const SHARE_MIN: usize = 16;

/// One admitted request with its session.
struct Seq {
    job: Job,
    session: Session,
    sampler: Sampler,
    decoder: StreamDecoder,
    stop: StopMatcher,
    /// Prompt tokens already in the KV cache; `None` until prefill starts.
    prefilled: Option<usize>,
    cached: usize,
    generated: usize,
    reasoning: Option<ReasoningTokens>,
    /// The last sampled token, to be fed by the next decode step.
    next: Option<u32>,
    pending_lp: Vec<TokenLogprob>,
    last_token_at: Option<Instant>,
    /// Set once the sequence has sent its last event (or its client is gone).
    done: bool,
    _run: RunSlot,
}

struct Worker<'a> {
    engine: &'a Engine,
    rx: &'a Receiver<Msg>,
    opts: &'a SchedulerOptions,
    metrics: &'a Arc<Metrics>,
    /// Idle sessions, least recently used first.
    free: Vec<Session>,
    waiting: VecDeque<Job>,
    running: Vec<Seq>,
    shutdown_at: Option<Instant>,
    /// KV-cache bytes of one session.
    per_session: u64,
}

impl<'a> Worker<'a> {
    fn new(
        engine: &'a Engine,
        rx: &'a Receiver<Msg>,
        opts: &'a SchedulerOptions,
        metrics: &'a Arc<Metrics>,
        free: Vec<Session>,
        per_session: u64,
    ) -> Self {
        Worker {
            per_session,
            engine,
            rx,
            opts,
            metrics,
            free,
            waiting: VecDeque::new(),
            running: Vec::new(),
            shutdown_at: None,
        }
    }

    fn on_msg(&mut self, m: Msg) {
        match m {
            Msg::Job(job) if self.shutdown_at.is_some() => {
                job.reject(ApiError::unavailable("The server is shutting down."))
            }
            Msg::Job(job) => self.waiting.push_back(job),
            Msg::Shutdown(grace) => {
                let at = Instant::now() + grace;
                self.shutdown_at = Some(self.shutdown_at.map_or(at, |t| t.min(at)));
            }
        }
    }

    fn run(mut self) {
        loop {
            if self.running.is_empty() && self.waiting.is_empty() {
                if self.shutdown_at.is_some() {
                    return;
                }
                match self.rx.recv() {
                    Ok(m) => self.on_msg(m),
                    Err(_) => return,
                }
            }
            loop {
                match self.rx.try_recv() {
                    Ok(m) => self.on_msg(m),
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    // Every handle is gone: finish what runs, take nothing new.
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        self.shutdown_at.get_or_insert_with(Instant::now);
                        break;
                    }
                }
            }
            if let Some(at) = self.shutdown_at {
                for job in self.waiting.drain(..) {
                    job.reject(ApiError::unavailable("The server is shutting down."));
                }
                if Instant::now() >= at {
                    for seq in &mut self.running {
                        let _ = seq.job.events.send(Event::Error(ApiError::unavailable(
                            "The server shut down before the answer was complete.",
                        )));
                        seq.done = true;
                    }
                }
            }
            // Clients that went away free their slot before any more work is done.
            self.waiting.retain(|j| !j.events.is_closed());
            for seq in &mut self.running {
                if seq.job.events.is_closed() {
                    seq.done = true;
                }
            }
            self.reap();
            self.admit();
            let sessions = (self.free.len() + self.running.len()) as u64;
            self.metrics
                .kv_bytes
                .store(sessions * self.per_session, Ordering::Relaxed);
            self.step();
            self.reap();
            if self.running.is_empty() && self.waiting.is_empty() && self.shutdown_at.is_some() {
                return;
            }
            // Nothing runnable (shouldn't happen), avoid a hot spin.
            if self.running.is_empty() && !self.waiting.is_empty() {
                match self.rx.recv_timeout(Duration::from_millis(5)) {
                    Ok(m) => self.on_msg(m),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {
                        self.shutdown_at.get_or_insert_with(Instant::now);
                    }
                }
            }
        }
    }

    /// Finished sequences give their sessions back (most recently used last).
    fn reap(&mut self) {
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].done {
                let seq = self.running.remove(i);
                self.free.push(seq.session);
            } else {
                i += 1;
            }
        }
    }

    fn admit(&mut self) {
        let mut i = 0;
        // Jobs waiting for a prefix keep their place: later jobs do not take the
        // slots they will need once it is computed.
        let mut deferred = 0;
        while self.running.len() + deferred < self.opts.max_running.max(1) && i < self.waiting.len()
        {
            // A prompt that shares a long prefix with one still being computed (the
            // other choices of an `n` > 1 request, requests with one system prompt)
            // waits for it and copies it rather than computing it again alongside.
            if self.shared_prefix_pending(&self.waiting[i].prompt) {
                deferred += 1;
                i += 1;
                continue;
            }
            let Some(mut job) = self.waiting.remove(i) else {
                return;
            };
            let mut session = match self.take_session(&job.prompt) {
                Ok(s) => s,
                Err(e) => {
                    job.reject(ApiError::internal(format!(
                        "could not create a session: {e}"
                    )));
                    continue;
                }
            };
            self.copy_running_prefix(&mut session, &job.prompt);
            let sampler = match Sampler::new(job.sampler.clone()) {
                Ok(s) => s,
                Err(e) => {
                    self.free.push(session);
                    job.reject(ApiError::invalid("", e.to_string()));
                    continue;
                }
            };
            job.slot = None;
            self.metrics.running.fetch_add(1, Ordering::Relaxed);
            let stop = StopMatcher::new(job.stop.clone());
            let reasoning = job.reasoning.map(ReasoningTokens::new);
            self.running.push(Seq {
                job,
                session,
                sampler,
                decoder: StreamDecoder::continuation(true),
                stop,
                prefilled: None,
                cached: 0,
                generated: 0,
                reasoning,
                next: None,
                pending_lp: Vec::new(),
                last_token_at: None,
                done: false,
                _run: RunSlot(self.metrics.clone()),
            });
        }
    }

    /// Whether a running sequence is computing a prefix of `prompt` that is at least
    /// half the prompt and [`SHARE_MIN`] tokens longer than any cache holds now:
    /// worth waiting for (the wait ends as soon as that sequence has computed the
    /// shared part, not its whole prompt).
    fn shared_prefix_pending(&self, prompt: &[u32]) -> bool {
        // The longest shared prefix still being computed; caches are scanned only
        // when there is one (this runs for every waiting job at every step).
        let shared = self
            .running
            .iter()
            .filter(|r| !r.done && r.prefilled.is_none_or(|p| p < r.job.prompt.len()))
            .map(|r| common_prefix(&r.job.prompt, prompt))
            .max()
            .unwrap_or(0);
        2 * shared >= prompt.len()
            && shared >= SHARE_MIN
            && shared.saturating_sub(self.cached_prefix(prompt)) >= SHARE_MIN
    }

    /// The longest prefix of `prompt` whose K/V a session (idle or running) holds.
    fn cached_prefix(&self, prompt: &[u32]) -> usize {
        let free = self.free.iter().map(|s| s.tokens());
        let running = self.running.iter().map(|r| r.session.tokens());
        free.chain(running)
            .map(|t| common_prefix(t, prompt))
            .max()
            .unwrap_or(0)
    }

    /// Copy into `session` the longest prefix of `prompt` a running sequence has
    /// computed, when it beats what `session` holds by [`SHARE_MIN`] tokens.
    fn copy_running_prefix(&self, session: &mut Session, prompt: &[u32]) {
        let own = common_prefix(session.tokens(), prompt);
        let best = self
            .running
            .iter()
            .map(|r| (common_prefix(r.session.tokens(), prompt), &r.session))
            .max_by_key(|(n, _)| *n);
        if let Some((n, src)) = best
            && n >= own + SHARE_MIN
            && session.copy_prefix_from(src, n).is_err()
        {
            // Same model, same context: cannot fail; compute from scratch if it does.
            session.reset();
        }
    }

    /// The idle session sharing the longest prefix with `prompt`; with no shared prefix,
    /// a new session while the pool is below `max_running` (keeping other caches warm),
    /// else the least recently used one.
    fn take_session(&mut self, prompt: &[u32]) -> Result<Session, EngineError> {
        let best = self
            .free
            .iter()
            .enumerate()
            .map(|(i, s)| (i, common_prefix(s.tokens(), prompt)))
            .max_by_key(|&(i, n)| (n, i));
        match best {
            Some((i, n)) if n > 0 => Ok(self.free.remove(i)),
            _ if self.free.len() + self.running.len() < self.opts.max_running.max(1) => {
                self.engine.session(self.opts.n_ctx)
            }
            Some(_) => Ok(self.free.remove(0)),
            None => self.engine.session(self.opts.n_ctx),
        }
    }

    /// One forward pass for everything runnable: a decode step for every sequence
    /// with a pending token, plus up to `prefill_chunk` prompt tokens of sequences
    /// still prefilling (oldest first), so new requests join between steps and long
    /// prompts advance in chunks without stalling running decodes. Every weight
    /// matrix is read once for the whole batch.
    fn step(&mut self) {
        let tok = self.engine.tokenizer().clone();
        let mut work: Vec<Work> = Vec::new();
        for (i, seq) in self.running.iter().enumerate() {
            if let (false, Some(t)) = (seq.done, seq.next) {
                work.push(Work {
                    seq: i,
                    tokens: vec![t],
                    prefill_to: None,
                });
            }
        }
        // Prompt tokens ride along up to the chunk budget (and one pass's capacity).
        let mut budget = self
            .opts
            .prefill_chunk
            .max(1)
            .min(thaw_engine::MAX_BATCH.saturating_sub(work.len()).max(1));
        for (i, seq) in self.running.iter_mut().enumerate() {
            if budget == 0 {
                break;
            }
            if seq.done || seq.next.is_some() {
                continue;
            }
            let prompt = &seq.job.prompt;
            let start = match seq.prefilled {
                Some(p) => p,
                None => match seq.session.begin_prompt(prompt) {
                    // The session keeps the prefix it shares with this prompt.
                    Ok(start) => {
                        seq.cached = start;
                        seq.prefilled = Some(start);
                        self.metrics
                            .prompt_tokens
                            .fetch_add(prompt.len() as u64, Ordering::Relaxed);
                        self.metrics
                            .cached_tokens
                            .fetch_add(start as u64, Ordering::Relaxed);
                        start
                    }
                    Err(e) => {
                        seq.fail(e);
                        continue;
                    }
                },
            };
            let end = (start + budget).min(prompt.len());
            budget -= end - start;
            work.push(Work {
                seq: i,
                tokens: prompt[start..end].to_vec(),
                prefill_to: Some(end),
            });
        }
        if work.is_empty() {
            return;
        }
        work.sort_by_key(|w| w.seq);
        let mut seqs: Vec<&mut Seq> = Vec::with_capacity(work.len());
        let mut wi = work.iter().peekable();
        for (i, seq) in self.running.iter_mut().enumerate() {
            if wi.next_if(|w| w.seq == i).is_some() {
                seqs.push(seq);
            }
        }
        let mut batch: Vec<SessionBatch<'_>> = seqs
            .iter_mut()
            .zip(&work)
            .map(|(seq, w)| SessionBatch {
                session: &mut seq.session,
                tokens: &w.tokens,
                // A prompt's logits are needed only after its last chunk.
                logits: w.prefill_to.is_none_or(|end| end == seq.job.prompt.len()),
            })
            .collect();
        let results = Session::forward_batch(&mut batch);
        drop(batch);
        self.metrics.batch_passes.fetch_add(1, Ordering::Relaxed);
        self.metrics.batch_tokens.fetch_add(
            work.iter().map(|w| w.tokens.len() as u64).sum(),
            Ordering::Relaxed,
        );
        for ((seq, w), r) in seqs.into_iter().zip(&work).zip(results) {
            match r {
                Ok(logits) => {
                    if let Some(end) = w.prefill_to {
                        seq.prefilled = Some(end);
                    }
                    if let Some(logits) = logits {
                        seq.accept(logits, &tok, self.metrics);
                    }
                }
                Err(e) => seq.fail(e),
            }
        }
    }
}

/// One sequence's share of a scheduler step.
struct Work {
    /// Index in `running`.
    seq: usize,
    tokens: Vec<u32>,
    /// For a prompt chunk: the prompt position reached after it.
    prefill_to: Option<usize>,
}

impl Seq {
    fn send(&mut self, e: Event) {
        if self.job.events.send(e).is_err() {
            self.done = true;
        }
    }

    fn fail(&mut self, e: EngineError) {
        // The cache may be half-written: forget it.
        self.session.reset();
        self.send(Event::Error(ApiError::internal(format!(
            "generation failed: {e}"
        ))));
        self.done = true;
    }

    /// Sample from `logits` and route the token: text out, stop checks, next step.
    fn accept(&mut self, mut logits: Vec<f32>, tok: &thaw_tokenizer::Tokenizer, m: &Metrics) {
        self.next = None;
        // Log-probabilities come from the model's distribution, before bias/penalties.
        let raw = self.job.logprobs.map(|_| logits.clone());
        // Tokens this sequence may still write, this one included: the grammar closes
        // the output before either limit cuts it off.
        let budget = (self
            .session
            .n_ctx()
            .saturating_sub(self.session.tokens().len()))
        .min(
            self.job
                .max_tokens
                .map_or(usize::MAX, |m| m - self.generated),
        );
        if let Some(c) = &mut self.job.constraint
            && let Err(e) = c.mask_within(&mut logits, Some(budget))
        {
            return self.fail(e.into());
        }
        let token = match self.sampler.sample(&mut logits, self.session.tokens()) {
            Ok(t) => t,
            Err(e) => return self.fail(e.into()),
        };
        if let Some(c) = &mut self.job.constraint
            && !tok.is_eog(token)
            && let Err(e) = c.commit(token)
        {
            return self.fail(e.into());
        }
        let now = Instant::now();
        match self.last_token_at {
            None => m.ttft.observe(now - self.job.arrived),
            Some(t) => m.itl.observe(now - t),
        }
        self.last_token_at = Some(now);
        if !self.job.ignore_eos && tok.is_eog(token) {
            return self.finish(Finish::Stop, tok);
        }
        self.generated += 1;
        m.generated_tokens.fetch_add(1, Ordering::Relaxed);
        if let Some(r) = self.reasoning.as_mut().filter(|r| r.counting()) {
            r.push(&tok.token_bytes(token));
        }
        if let (Some(k), Some(raw)) = (self.job.logprobs, raw) {
            let logprob = logprob_of(&raw, token).unwrap_or(f32::NEG_INFINITY);
            let top = top_logprobs(&raw, k).unwrap_or_default();
            self.pending_lp.push(TokenLogprob {
                token,
                logprob,
                top,
            });
        }
        let piece = self.decoder.push(tok, token);
        let (emit, hit) = self.stop.push(&piece);
        if !emit.is_empty() {
            let logprobs = std::mem::take(&mut self.pending_lp);
            self.send(Event::Text {
                text: emit,
                logprobs,
            });
        }
        if hit {
            // The stop string and anything after it are not part of the answer.
            self.pending_lp.clear();
            return self.done_event(Finish::Stop);
        }
        if self.job.max_tokens.is_some_and(|mx| self.generated >= mx)
            || self.session.tokens().len() >= self.session.n_ctx()
        {
            return self.finish(Finish::Length, tok);
        }
        self.next = Some(token);
    }

    /// End without a stop-string hit: text held back for a possible stop string, or
    /// an unfinished UTF-8 character, goes out first.
    fn finish(&mut self, reason: Finish, _tok: &thaw_tokenizer::Tokenizer) {
        let tail = self.decoder.finish();
        let rest = self.stop.finish(&tail);
        let logprobs = std::mem::take(&mut self.pending_lp);
        if !rest.is_empty() || !logprobs.is_empty() {
            self.send(Event::Text {
                text: rest,
                logprobs,
            });
        }
        self.done_event(reason);
    }

    fn done_event(&mut self, finish: Finish) {
        if let Some(c) = &self.job.constraint {
            let st = c.stats();
            tracing::debug!(
                masks = st.masks,
                mean_us = st.time.as_micros() as u64 / st.masks.max(1),
                "constrained decoding"
            );
        }
        let e = Event::Done {
            finish,
            counts: TokenCounts {
                prompt: self.job.prompt.len(),
                cached: self.cached,
                completion: self.generated,
                reasoning: self.reasoning.as_ref().map(ReasoningTokens::count),
            },
        };
        self.send(e);
        self.done = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("2G"), Ok(2 << 30));
        assert_eq!(parse_bytes("1.5 GiB"), Ok(3 << 29));
        assert_eq!(parse_bytes("1000000"), Ok(1_000_000));
        assert_eq!(parse_bytes("3MB"), Ok(3_000_000));
        assert!(parse_bytes("lots").is_err());
        assert!(
            parse_bytes("5 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert_eq!(format_bytes(512 << 20), "512.0 MiB");
        assert_eq!(format_bytes(100), "100 B");
    }
}
