//! A gang of the private pool's threads held for one image, so a layer's bands start and
//! finish with a spin on an atomic instead of a rayon job (whose idle workers fall asleep
//! between layers: waking them cost tens of microseconds per layer, most of a small
//! model's time). The pool stays private; the gang lives inside one `broadcast`.

use std::cell::UnsafeCell;
use std::hint::spin_loop;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use quadra_core::Executor;

/// Spin briefly (a layer is usually a few microseconds away), then yield the core so an
/// oversubscribed machine still makes progress.
pub(crate) fn backoff(spins: &mut u32) {
    if *spins < 1 << 14 {
        *spins += 1;
        spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// A published job: run task `i` for every `i < n` this thread owns.
#[derive(Clone, Copy)]
struct Job {
    call: *const (dyn Fn(usize) + Sync + 'static),
    n: usize,
}

/// Shared state of one gang.
pub(crate) struct Gang {
    width: usize,
    generation: AtomicUsize,
    done: AtomicUsize,
    stop: AtomicBool,
    panicked: AtomicBool,
    job: UnsafeCell<Option<Job>>,
}

// SAFETY: `job` is written only by the driver, before it publishes the job with a Release
// increment of `generation` and only after every worker counted itself done with the
// previous job (Acquire on `done`); workers read it only after observing the new
// generation (Acquire) and before counting themselves done. The raw closure pointer in it
// is only called within that window, while the driver keeps the closure alive.
unsafe impl Sync for Gang {}
// SAFETY: the only non-Send part is the job's raw closure pointer, which is dereferenced
// only under the protocol above, whichever thread owns the gang (a session keeps it in an
// `Arc` shared with its workers).
unsafe impl Send for Gang {}

impl Gang {
    pub(crate) fn new(width: usize) -> Self {
        Gang {
            width: width.max(1),
            generation: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            job: UnsafeCell::new(None),
        }
    }

    /// Worker `idx` (1..width): runs its share of every job published after generation
    /// `seen` until stopped.
    pub(crate) fn work(&self, idx: usize, mut seen: usize) {
        loop {
            let mut spins = 0u32;
            let generation = loop {
                if self.stop.load(Ordering::Acquire) {
                    return;
                }
                let g = self.generation.load(Ordering::Acquire);
                if g != seen {
                    break g;
                }
                backoff(&mut spins);
            };
            seen = generation;
            // SAFETY: the job was published before `generation` moved (see `impl Sync`).
            let job = unsafe { *self.job.get() };
            if let Some(job) = job {
                let mut i = idx;
                while i < job.n {
                    // SAFETY: the driver keeps the closure alive until we count done below.
                    let r = catch_unwind(AssertUnwindSafe(|| unsafe { (*job.call)(i) }));
                    if r.is_err() {
                        self.panicked.store(true, Ordering::Relaxed);
                    }
                    i += self.width;
                }
            }
            self.done.fetch_add(1, Ordering::Release);
        }
    }

    /// Releases the workers (they return from [`Gang::work`]).
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Makes a stopped gang usable again, once every worker has returned from
    /// [`Gang::work`]; returns the generation the workers start from.
    pub(crate) fn rearm(&self) -> usize {
        self.stop.store(false, Ordering::Release);
        self.generation.load(Ordering::Acquire)
    }
}

/// Stops the gang when the driver leaves, even by unwinding.
pub(crate) struct StopOnDrop<'g>(pub(crate) &'g Gang);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// The executor of a gang (see [`crate::Network::with_executor`]): task `i` of a layer runs
/// on gang thread `i mod width`, the calling thread being 0.
pub struct GangExec<'g> {
    pub(crate) gang: &'g Gang,
}

struct TaskPtr<T>(*mut T);
// SAFETY: only used to hand each task index to exactly one thread (see `run`).
unsafe impl<T: Send> Sync for TaskPtr<T> {}

impl<T> TaskPtr<T> {
    fn at(&self, i: usize) -> *mut T {
        self.0.wrapping_add(i)
    }
}

impl Executor for GangExec<'_> {
    fn width(&self) -> usize {
        self.gang.width
    }

    fn run<T: Send>(&self, tasks: &mut [T], f: &(dyn Fn(&mut T) + Sync)) {
        let (n, width) = (tasks.len(), self.gang.width);
        if n <= 1 || width <= 1 {
            tasks.iter_mut().for_each(f);
            return;
        }
        let base = TaskPtr(tasks.as_mut_ptr());
        let call = |i: usize| {
            // SAFETY: `i < n`, and each index is run by exactly one thread (i mod width),
            // so the `&mut` are disjoint; `tasks` outlives the job because we wait below.
            f(unsafe { &mut *base.at(i) })
        };
        let call_ref: &(dyn Fn(usize) + Sync) = &call;
        // SAFETY: only the lifetime is erased; workers call it only until they count
        // themselves done, and we return only after all of them have.
        let call_ptr: *const (dyn Fn(usize) + Sync + 'static) =
            unsafe { std::mem::transmute(call_ref as *const (dyn Fn(usize) + Sync)) };
        // SAFETY: every worker finished the previous job (we waited), so none reads `job`.
        unsafe { *self.gang.job.get() = Some(Job { call: call_ptr, n }) };
        self.gang.done.store(0, Ordering::Relaxed);
        self.gang.generation.fetch_add(1, Ordering::Release);
        // This thread's bands may panic; the workers' bands still borrow `call` and
        // `tasks`, so the unwinding waits until every worker is done with the job.
        let driver = catch_unwind(AssertUnwindSafe(|| {
            let mut i = 0;
            while i < n {
                call(i);
                i += width;
            }
        }));
        let mut spins = 0u32;
        while self.gang.done.load(Ordering::Acquire) < width - 1 {
            backoff(&mut spins);
        }
        if let Err(payload) = driver {
            self.gang.panicked.store(false, Ordering::Relaxed);
            resume_unwind(payload);
        }
        if self.gang.panicked.swap(false, Ordering::Relaxed) {
            panic!("a band task panicked on a gang thread");
        }
    }
}
