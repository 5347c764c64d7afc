//! A band that panics on a gang thread: `GangExec::run` must not return (or unwind) while
//! other threads still run bands of the same job, which borrow the job's closure and
//! tasks; the panic reaches the caller, and the pool serves the next call.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use quadra_core::Executor;
use quadra_cpu::config::ArchConfig;
use quadra_cpu::ndarray::Array4;
use quadra_cpu::weights::{OwnedMats, OwnedWeights};
use quadra_cpu::Network;

fn network() -> Network {
    let cfg = ArchConfig::preset("quadranet25-xxs").unwrap();
    let len = cfg.arch().weights_len();
    let w = OwnedWeights {
        vecs: vec![1.0; len.vecs].into(),
        mats: OwnedMats::F32(vec![0.01; len.mats].into()),
    };
    Network::new(cfg, w).unwrap().with_threads(2).unwrap()
}

static WORKER_DONE: AtomicBool = AtomicBool::new(false);

#[test]
fn a_panicking_band_waits_for_the_others_and_the_pool_serves_the_next_call() {
    let net = network();
    // Band 0 runs on the calling thread and panics at once; band 1 runs on the other gang
    // thread and takes a while. `run` may unwind only after band 1 is done.
    let left_early = net
        .with_executor(|exec| {
            let mut tasks = vec![0usize, 1];
            let r = catch_unwind(AssertUnwindSafe(|| {
                exec.run(&mut tasks, &|t: &mut usize| {
                    if *t == 0 {
                        panic!("band 0 fails");
                    }
                    std::thread::sleep(Duration::from_millis(200));
                    *t += 10;
                    WORKER_DONE.store(true, Ordering::SeqCst);
                })
            }));
            assert!(r.is_err(), "band 0's panic reaches the caller of run");
            !WORKER_DONE.load(Ordering::SeqCst)
        })
        .unwrap();
    assert!(
        !left_early,
        "run unwound while band 1 still ran on another thread"
    );
    // A panic on a worker thread reaches the caller too.
    let r = catch_unwind(AssertUnwindSafe(|| {
        net.with_executor(|exec| {
            let mut tasks = vec![0usize, 1];
            exec.run(&mut tasks, &|t: &mut usize| {
                if *t == 1 {
                    panic!("band 1 fails");
                }
            })
        })
    }));
    assert!(r.is_err(), "band 1's panic reaches the caller");
    // The pool is whole: a two-thread forward pass still runs.
    let x = Array4::from_elem((1, 3, 64, 64), 0.5f32);
    let y = net.forward_nchw(x.view()).unwrap();
    assert!(y.iter().all(|v| v.is_finite()));
}

#[test]
fn forward_inside_with_executor_is_an_error_not_a_deadlock() {
    let net = network();
    let x = Array4::from_elem((1, 3, 64, 64), 0.5f32);
    let e = net
        .with_executor(|_| net.forward_nchw(x.view()))
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(e.contains("with_executor"), "{e}");
    let e = net
        .with_executor(|_| net.features(x.view(), quadra_cpu::Layout::Nchw))
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(e.contains("with_executor"), "{e}");
    // Outside, the same call runs.
    assert!(net.forward_nchw(x.view()).is_ok());
}
