//! `Session::run` makes no heap allocation, on any thread, once the session is built.
//! (Its own test binary: the counting allocator sees every thread of the process, so no
//! other test may run beside it.)

use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use quadra_core::Dtype;
use quadra_cpu::config::ArchConfig;
use quadra_cpu::weights::{OwnedMats, OwnedWeights};
use quadra_cpu::{dispatch, Layout, Network, Session};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: AllocLayout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: AllocLayout) {
        // SAFETY: as above.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: AllocLayout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn run_allocates_nothing() {
    let cfg = ArchConfig::preset("quadranet25-xxs").unwrap();
    let len = cfg.arch().weights_len();
    let w = OwnedWeights {
        vecs: vec![0.5; len.vecs].into(),
        mats: OwnedMats::F32(vec![0.01; len.mats].into()),
    };
    let (h, w8, batch) = (64, 96, 2);
    let input = vec![0.25f32; batch * 3 * h * w8];
    for dtype in [Dtype::F32, Dtype::W8A8] {
        let (wq, _) = w.quantize(&cfg.arch(), dtype).unwrap();
        for kern in dispatch::available() {
            for threads in [1, 2, 3] {
                let net = Network::new(cfg.clone(), wq.clone())
                    .unwrap()
                    .with_kernels(kern)
                    .with_threads(threads)
                    .unwrap();
                // The network's rayon pool is never started (it is built on first use, and
                // a session has its own threads): no thread outside the session runs, so
                // every allocation counted is the session's. (A pool started here would
                // still be starting, or a dropped one exiting, while we count.)
                let mut s = Session::new(&net, h, w8, batch).unwrap();
                let before = ALLOCS.load(Ordering::SeqCst);
                for layout in [Layout::Nchw, Layout::Nhwc, Layout::Nchw] {
                    let out = s.run(&input, layout).unwrap();
                    assert!(out.iter().all(|v| v.is_finite()));
                }
                let n = ALLOCS.load(Ordering::SeqCst) - before;
                assert_eq!(
                    n,
                    0,
                    "{dtype:?} {} {threads} threads: {n} allocations in 3 runs",
                    kern.describe()
                );
            }
        }
    }
}
