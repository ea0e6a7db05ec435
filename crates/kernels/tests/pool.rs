//! ThreadPool: coverage of every index, reuse, nesting, panics, degenerate sizes.

use std::sync::atomic::{AtomicUsize, Ordering};
use thaw_kernels::ThreadPool;

fn counts(pool: &ThreadPool, n: usize) -> Vec<usize> {
    let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
    pool.run(n, |i| {
        hits[i].fetch_add(1, Ordering::Relaxed);
    });
    hits.into_iter().map(|a| a.into_inner()).collect()
}

#[test]
fn every_index_exactly_once() {
    for threads in [1, 2, 4] {
        let pool = ThreadPool::new(threads);
        assert_eq!(pool.n_threads(), threads);
        for n in [0, 1, 2, 3, 7, 64, 1000] {
            assert_eq!(counts(&pool, n), vec![1; n], "threads={threads} n={n}");
        }
    }
}

#[test]
fn many_consecutive_runs_borrowing_locals() {
    let pool = ThreadPool::new(3);
    for round in 0..2000 {
        let data: Vec<usize> = (0..17).map(|i| i * round).collect();
        let sum = AtomicUsize::new(0);
        pool.run(data.len(), |i| {
            sum.fetch_add(data[i], Ordering::Relaxed);
        });
        assert_eq!(sum.into_inner(), data.iter().sum::<usize>());
    }
}

#[test]
fn nested_run_runs_inline() {
    let pool = ThreadPool::new(2);
    let total = AtomicUsize::new(0);
    pool.run(4, |_| {
        pool.run(5, |_| {
            total.fetch_add(1, Ordering::Relaxed);
        });
    });
    assert_eq!(total.into_inner(), 20);
}

#[test]
fn panic_propagates_and_pool_survives() {
    let pool = ThreadPool::new(2);
    let done = AtomicUsize::new(0);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.run(50, |i| {
            if i == 13 {
                panic!("task 13");
            }
            done.fetch_add(1, Ordering::Relaxed);
        });
    }));
    assert!(r.is_err());
    assert_eq!(done.into_inner(), 49, "the other tasks still ran");
    assert_eq!(counts(&pool, 100), vec![1; 100]);
}

#[test]
fn zero_means_all_cores() {
    let pool = ThreadPool::new(0);
    assert_eq!(
        pool.n_threads(),
        std::thread::available_parallelism().unwrap().get()
    );
    assert_eq!(counts(&pool, 33), vec![1; 33]);
}

#[test]
fn concurrent_callers_are_serialized() {
    let pool = ThreadPool::new(2);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                for _ in 0..200 {
                    assert_eq!(counts(&pool, 9), vec![1; 9]);
                }
            });
        }
    });
}
