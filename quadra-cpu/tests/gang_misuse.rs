//! Misuse of the executor `Network::with_executor` hands out, from safe code: a `run`
//! nested inside one of its own tasks, or entered from a second thread while a run is in
//! flight, and `with_executor` nested inside itself. Each must be refused with a clear
//! panic or error: never a use of a finished job's closure, never a hang.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use quadra_core::Executor;
use quadra_cpu::config::ArchConfig;
use quadra_cpu::weights::{OwnedMats, OwnedWeights};
use quadra_cpu::Network;

fn network(threads: usize) -> Network {
    let cfg = ArchConfig::preset("quadranet25-xxs").unwrap();
    let len = cfg.arch().weights_len();
    let w = OwnedWeights {
        vecs: vec![1.0; len.vecs].into(),
        mats: OwnedMats::F32(vec![0.01; len.mats].into()),
    };
    Network::new(cfg, w).unwrap().with_threads(threads).unwrap()
}

fn message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Runs `f` on a thread of its own and fails the test if it does not finish in 60 s (a
/// hang is one of the failures these tests look for).
fn within_a_minute<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("hung (or its thread died) instead of refusing the misuse")
}

/// A run nested in a task: from the calling thread's own band (task 0) and from a
/// worker's (task 1).
#[test]
fn a_run_nested_in_its_own_task_is_refused() {
    for nested_in in [0usize, 1] {
        let (ran, msg) = within_a_minute(move || {
            let net = network(2);
            let ran = AtomicUsize::new(0);
            let r = net
                .with_executor(|exec| {
                    catch_unwind(AssertUnwindSafe(|| {
                        let mut outer = vec![0usize, 1];
                        exec.run(&mut outer, &|t: &mut usize| {
                            if *t == nested_in {
                                let mut inner = vec![0u8; 2];
                                exec.run(&mut inner, &|v: &mut u8| *v += 1);
                            }
                            std::thread::sleep(Duration::from_millis(20));
                            ran.fetch_add(1, Ordering::SeqCst);
                        })
                    }))
                })
                .unwrap();
            // The executor still works after the refused nesting.
            let again = net
                .with_executor(|exec| {
                    let mut t = vec![0u32; 4];
                    exec.run(&mut t, &|v: &mut u32| *v += 1);
                    t
                })
                .unwrap();
            assert_eq!(again, vec![1; 4]);
            (ran.into_inner(), r.map_err(message).err())
        });
        let msg = msg.unwrap_or_else(|| panic!("nested run in task {nested_in} was not refused"));
        assert!(msg.contains("nested"), "task {nested_in}: {msg}");
        // The outer job's other task still ran, and the outer run waited for it.
        assert!(
            ran >= 1,
            "task {nested_in}: the outer job's tasks ran {ran} times"
        );
    }
}

/// Two threads entering the same executor's `run` at once.
#[test]
fn a_run_entered_from_a_second_thread_is_refused() {
    let refused = within_a_minute(|| {
        let net = network(2);
        net.with_executor(|exec| {
            std::thread::scope(|s| {
                let a = s.spawn(|| {
                    catch_unwind(AssertUnwindSafe(|| {
                        let mut t = vec![0u8; 2];
                        exec.run(&mut t, &|_| std::thread::sleep(Duration::from_millis(300)));
                    }))
                    .err()
                    .map(message)
                });
                std::thread::sleep(Duration::from_millis(50));
                let b = catch_unwind(AssertUnwindSafe(|| {
                    let mut t = vec![0u8; 2];
                    exec.run(&mut t, &|v| *v += 1);
                }))
                .err()
                .map(message);
                let a = a.join().unwrap();
                (a, b)
            })
        })
        .unwrap()
    });
    let (a, b) = refused;
    assert!(a.is_none(), "the first run, alone in flight, failed: {a:?}");
    let b = b.expect("the second, concurrent run was not refused");
    assert!(b.contains("in flight"), "{b}");
}

#[test]
fn with_executor_nested_in_itself_is_an_error_not_a_deadlock() {
    for threads in [1, 2] {
        let e = within_a_minute(move || {
            let net = network(threads);
            let inner = net
                .with_executor(|_| net.with_executor(|_| ()).err().map(|e| e.to_string()))
                .unwrap();
            // And from a worker's task.
            let from_worker = net
                .with_executor(|exec| {
                    let mut t = vec![None, None];
                    exec.run(&mut t, &|v: &mut Option<String>| {
                        *v = net.with_executor(|_| ()).err().map(|e| e.to_string())
                    });
                    t
                })
                .unwrap();
            (inner, from_worker)
        });
        let (inner, from_worker) = e;
        let inner = inner.unwrap_or_else(|| panic!("{threads} threads: nested with_executor ran"));
        assert!(inner.contains("with_executor"), "{inner}");
        for m in from_worker {
            let m = m.unwrap_or_else(|| panic!("{threads} threads: with_executor in a task ran"));
            assert!(m.contains("with_executor"), "{m}");
        }
    }
}
