//! A fixed pool of worker threads for parallel-for over kernel work items.
//!
//! Protocol: `run` publishes a job (a type-erased `&dyn Fn(usize)`, the task count and a
//! new generation) under a mutex, wakes sleeping workers, and then works on the job
//! itself. Tasks are claimed from one atomic "ticket" holding (generation, next index),
//! so a worker that wakes late can never claim a task of a newer job with the old job's
//! function. `run` returns only once all `n_tasks` claimed tasks have *completed*; after
//! that no thread dereferences the job again, which is what makes lending `f` (a
//! borrowed closure) to the workers sound.
//!
//! Idle workers spin for a bounded time (default 100 µs, `THAW_POOL_SPIN_US` overrides,
//! read once per pool) and then block on a condvar. A decode step issues hundreds of
//! short jobs a few microseconds apart, so within a step workers never sleep and a
//! hand-off costs well under a microsecond instead of a futex wake-up (tens of µs);
//! between steps/requests each worker burns at most one spin bound before sleeping, so
//! an idle process does not starve another process of the second core.

use std::any::Any;
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker (or a caller waiting for stragglers) spins before blocking,
/// unless `THAW_POOL_SPIN_US` says otherwise. Measured on a 2-core VM: at 5 µs most
/// matmuls of a decode step paid a futex wake-up; 100 µs covers the gaps between the
/// matmuls of a step (norms, attention, activation quantization).
const DEFAULT_SPIN_US: u64 = 100;
/// Upper bound accepted from the environment (keeps "no long busy-spin" true).
const MAX_SPIN_US: u64 = 10_000;

fn spin_bound() -> Duration {
    let us = std::env::var("THAW_POOL_SPIN_US")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(DEFAULT_SPIN_US, |v| v.min(MAX_SPIN_US));
    Duration::from_micros(us)
}

/// A job borrowed from `run`'s caller, with its lifetime erased.
#[derive(Clone, Copy)]
struct JobRef(*const (dyn Fn(usize) + Sync + 'static));
// SAFETY: the pointee is `Sync`, and the pool protocol (see module docs) guarantees it
// outlives every dereference.
unsafe impl Send for JobRef {}

struct State {
    generation: u32,
    job: Option<JobRef>,
    n_tasks: usize,
    sleepers: usize,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// Mirror of `state.generation` so spinning workers need not take the lock.
    generation: AtomicU64,
    /// (generation << 32) | next task index.
    ticket: AtomicU64,
    completed: AtomicUsize,
    done_lock: Mutex<()>,
    done: Condvar,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// Bounded spin before blocking (see module docs).
    spin: Duration,
}

thread_local! {
    /// Set while this thread runs pool tasks: a nested `run` then executes inline.
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
}

impl Shared {
    /// Claims and runs tasks of generation `job_gen` until none are left.
    fn work(&self, job_gen: u32, job: JobRef, n_tasks: usize) {
        let was = IN_TASK.with(|c| c.replace(true));
        let mut t = self.ticket.load(Ordering::Acquire);
        loop {
            let idx = (t & 0xffff_ffff) as usize;
            if (t >> 32) as u32 != job_gen || idx >= n_tasks {
                break;
            }
            match self
                .ticket
                .compare_exchange_weak(t, t + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    // SAFETY: we claimed task `idx` of generation `job_gen`, whose `run` call
                    // cannot return before this task is counted as completed below, so
                    // the borrowed closure is alive.
                    let f = unsafe { &*job.0 };
                    if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(idx))) {
                        let mut slot = self.panic.lock().unwrap_or_else(|e| e.into_inner());
                        slot.get_or_insert(p);
                    }
                    if self.completed.fetch_add(1, Ordering::AcqRel) + 1 == n_tasks {
                        // Take the lock so the notification cannot slip in between the
                        // waiter's check and its wait.
                        drop(self.done_lock.lock().unwrap_or_else(|e| e.into_inner()));
                        self.done.notify_all();
                    }
                    t = self.ticket.load(Ordering::Acquire);
                }
                Err(cur) => t = cur,
            }
        }
        IN_TASK.with(|c| c.set(was));
    }
}

fn worker(shared: Arc<Shared>) {
    let mut seen = 0u32;
    loop {
        let start = Instant::now();
        let mut spins = 0u32;
        while shared.generation.load(Ordering::Acquire) as u32 == seen {
            std::hint::spin_loop();
            spins += 1;
            if spins.is_multiple_of(64) && start.elapsed() > shared.spin {
                break;
            }
            // Now and then let another runnable thread of this core go first (e.g. the
            // caller, when the scheduler put both on one core of a loaded machine).
            if spins.is_multiple_of(2048) {
                std::thread::yield_now();
            }
        }
        let (job_gen, job, n) = {
            let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            while st.generation == seen && !st.shutdown {
                st.sleepers += 1;
                st = shared.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                st.sleepers -= 1;
            }
            if st.shutdown {
                return;
            }
            (st.generation, st.job, st.n_tasks)
        };
        seen = job_gen;
        if let Some(job) = job {
            shared.work(job_gen, job, n);
        }
    }
}

/// A fixed set of threads, created once; `run` splits work across them and the
/// calling thread. Idle workers block (no spinning that would starve a 2-core box).
pub struct ThreadPool {
    n_threads: usize,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serializes `run` calls from different threads.
    run_lock: Mutex<()>,
}

impl ThreadPool {
    /// `n_threads` includes the calling thread; 0 means "all cores".
    pub fn new(n_threads: usize) -> Self {
        let n_threads = if n_threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            n_threads
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                generation: 0,
                job: None,
                n_tasks: 0,
                sleepers: 0,
                shutdown: false,
            }),
            wake: Condvar::new(),
            generation: AtomicU64::new(0),
            ticket: AtomicU64::new(0),
            completed: AtomicUsize::new(0),
            done_lock: Mutex::new(()),
            done: Condvar::new(),
            panic: Mutex::new(None),
            spin: spin_bound(),
        });
        let workers = (1..n_threads)
            .map(|i| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("thaw-kernels-{i}"))
                    .spawn(move || worker(s))
                    .expect("failed to spawn a kernel worker thread")
            })
            .collect();
        Self {
            n_threads,
            shared,
            workers,
            run_lock: Mutex::new(()),
        }
    }

    pub fn n_threads(&self) -> usize {
        self.n_threads
    }

    /// Call `f(i)` for every `i in 0..n_tasks`, spread over the pool; returns when all are done.
    ///
    /// If `f` panics, the remaining tasks still run and the first panic is re-raised
    /// here once all are done (the pool stays usable). Calling `run` from inside `f`
    /// runs the inner job serially on the calling thread.
    pub fn run<F: Fn(usize) + Sync>(&self, n_tasks: usize, f: F) {
        if n_tasks == 0 {
            return;
        }
        if self.workers.is_empty() || n_tasks == 1 || IN_TASK.with(|c| c.get()) {
            (0..n_tasks).for_each(f);
            return;
        }
        assert!(
            n_tasks < u32::MAX as usize,
            "too many tasks for one ThreadPool::run"
        );
        let _serial = self.run_lock.lock().unwrap_or_else(|e| e.into_inner());
        let sh = &*self.shared;
        let dyn_f: &(dyn Fn(usize) + Sync) = &f;
        // SAFETY: only the lifetime is erased; `run` does not return (or unwind) before
        // every claimed task completed, and no thread dereferences the job afterwards.
        let job = JobRef(unsafe {
            std::mem::transmute::<
                *const (dyn Fn(usize) + Sync + '_),
                *const (dyn Fn(usize) + Sync + 'static),
            >(dyn_f)
        });
        sh.completed.store(0, Ordering::Relaxed);
        let job_gen = {
            let mut st = sh.state.lock().unwrap_or_else(|e| e.into_inner());
            st.generation = st.generation.wrapping_add(1);
            st.job = Some(job);
            st.n_tasks = n_tasks;
            sh.ticket
                .store((st.generation as u64) << 32, Ordering::Release);
            sh.generation.store(st.generation as u64, Ordering::Release);
            let job_gen = st.generation;
            if st.sleepers > 0 {
                sh.wake.notify_all();
            }
            job_gen
        };
        sh.work(job_gen, job, n_tasks);
        // Wait for tasks other threads are still running.
        let start = Instant::now();
        let mut spins = 0u32;
        while sh.completed.load(Ordering::Acquire) < n_tasks {
            std::hint::spin_loop();
            spins += 1;
            if spins.is_multiple_of(64) && start.elapsed() > sh.spin {
                break;
            }
        }
        if sh.completed.load(Ordering::Acquire) < n_tasks {
            let mut g = sh.done_lock.lock().unwrap_or_else(|e| e.into_inner());
            while sh.completed.load(Ordering::Acquire) < n_tasks {
                g = sh.done.wait(g).unwrap_or_else(|e| e.into_inner());
            }
        }
        {
            // Drop the dangling-to-be pointer; workers only use their own copy, and only
            // through a successful claim, which is no longer possible.
            sh.state.lock().unwrap_or_else(|e| e.into_inner()).job = None;
        }
        let panic = sh.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(p) = panic {
            resume_unwind(p);
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .shutdown = true;
        self.shared.wake.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
