//! Model-checks the gang protocol (`src/gang.rs`) with loom: every interleaving (and every
//! weak-memory outcome loom models) of a driver and its workers over the scenarios below.
//! Run with
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" cargo test --release -p quadra-cpu --test loom_gang
//! ```
//!
//! Without `--cfg loom` this file is empty. Under loom nothing spins: every wait takes the
//! parking path, whose lost-wake-up freedom is what the model checks.
#![cfg(loom)]

#[allow(dead_code)]
#[path = "../src/cores.rs"]
mod cores;
#[allow(dead_code)]
#[path = "../src/gang.rs"]
mod gang;
/// What `cores.rs` reads from the crate root.
const MAX_THREADS: usize = quadra_core::exec::MAX_BANDS;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use gang::{Crew, Gang, GangExec};
use loom::sync::atomic::{AtomicUsize, Ordering};
use quadra_core::Executor;

/// Model-checks `f` over every interleaving with at most `bound` preemptions (`None`:
/// all of them), and prints how many executions loom explored.
fn check(name: &str, bound: Option<usize>, f: impl Fn() + Sync + Send + 'static) {
    use std::sync::atomic::{AtomicUsize as StdCount, Ordering::SeqCst};
    // This model's own counter (tests run in parallel).
    let runs = Arc::new(StdCount::new(0));
    quiet_expected_panics();
    let mut b = loom::model::Builder::new();
    b.preemption_bound = bound;
    let counted = Arc::clone(&runs);
    b.check(move || {
        counted.fetch_add(1, SeqCst);
        f()
    });
    let n = runs.load(SeqCst);
    let bound = bound.map_or("none".to_string(), |b| b.to_string());
    println!("loom: {name}: {n} executions explored (preemption bound {bound})");
}

/// Keeps the panics the tests make on purpose ("task N fails", once per explored
/// execution) out of the output; any other panic still reaches the default hook.
fn quiet_expected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info.payload().downcast_ref::<&str>().copied().unwrap_or("");
            if !(msg.starts_with("task ") && msg.ends_with(" fails")) {
                default(info);
            }
        }));
    });
}

/// A gang of `width` with its workers started as loom threads; `f` drives it, then the
/// gang is stopped and the workers joined.
fn with_gang(width: usize, f: impl FnOnce(&GangExec<'_>)) {
    let gang = Arc::new(Gang::new(width));
    let workers: Vec<_> = (1..width)
        .map(|idx| {
            let g = Arc::clone(&gang);
            loom::thread::spawn(move || g.work(idx))
        })
        .collect();
    f(&GangExec { gang: &gang });
    gang.stop();
    for w in workers {
        w.join().unwrap();
    }
}

/// Runs tasks that each record their index; returns how often each ran.
fn count_run(exec: &GangExec<'_>, n: usize) -> Vec<usize> {
    let counts: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
    let mut tasks: Vec<usize> = (0..n).collect();
    exec.run(&mut tasks, &|i: &mut usize| {
        counts[*i].fetch_add(1, Ordering::Relaxed);
        *i += 100;
    });
    // Every task's write is visible once `run` returns.
    assert!(tasks.iter().enumerate().all(|(i, t)| *t == i + 100));
    counts.iter().map(|c| c.load(Ordering::Relaxed)).collect()
}

#[test]
fn one_run() {
    check("one run", Some(3), || {
        with_gang(2, |exec| assert_eq!(count_run(exec, 2), [1, 1]))
    });
}

#[test]
fn two_runs_back_to_back() {
    check("two runs back to back", Some(3), || {
        with_gang(2, |exec| {
            assert_eq!(count_run(exec, 2), [1, 1]);
            assert_eq!(count_run(exec, 3), [1, 1, 1]);
        })
    });
}

#[test]
fn a_run_on_three_threads() {
    check("a run on three threads", Some(2), || {
        with_gang(3, |exec| assert_eq!(count_run(exec, 3), [1, 1, 1]))
    });
}

#[test]
fn a_panicking_task_on_the_worker_reaches_the_driver_after_the_job() {
    check("a panicking task on the worker", Some(3), || {
        with_gang(2, |exec| {
            let ran = AtomicUsize::new(0);
            let r = catch_unwind(AssertUnwindSafe(|| {
                let mut t = [0usize, 1];
                exec.run(&mut t, &|i: &mut usize| {
                    if *i == 1 {
                        panic!("task 1 fails");
                    }
                    ran.fetch_add(1, Ordering::Relaxed);
                })
            }));
            assert!(r.is_err());
            assert_eq!(ran.load(Ordering::Relaxed), 1);
            // The gang serves the next run.
            assert_eq!(count_run(exec, 2), [1, 1]);
        })
    });
}

#[test]
fn a_panicking_task_on_the_driver_leaves_no_task_running() {
    check("a panicking task on the driver", Some(3), || {
        with_gang(2, |exec| {
            let (started, ended) = (AtomicUsize::new(0), AtomicUsize::new(0));
            let r = catch_unwind(AssertUnwindSafe(|| {
                let mut t = [0usize, 1];
                exec.run(&mut t, &|i: &mut usize| {
                    if *i == 0 {
                        panic!("task 0 fails");
                    }
                    started.store(1, Ordering::Relaxed);
                    ended.store(1, Ordering::Relaxed);
                })
            }));
            assert!(r.is_err());
            // The unwinding left `run` with task 1 either done (its worker claimed it) or
            // never started (the driver took it over and, its own task failed, dropped it).
            assert_eq!(
                started.load(Ordering::Relaxed),
                ended.load(Ordering::Relaxed)
            );
            // The gang serves the next run.
            assert_eq!(count_run(exec, 2), [1, 1]);
        })
    });
}

#[test]
fn a_crew_dropped_while_idle_stops_its_workers() {
    check("a crew dropped while idle", None, || {
        drop(Crew::new(2).unwrap())
    });
}

#[test]
fn a_crew_runs_then_drops() {
    check("a crew runs, then drops", Some(3), || {
        let crew = Crew::new(2).unwrap();
        let counts = crew.run(|exec| count_run(exec, 2)).unwrap();
        assert_eq!(counts, [1, 1]);
    });
}
