//! The thread gang behind every multi-threaded forward pass: a [`Crew`] of worker threads
//! kept for the life of a session (or a network's executor), and the [`Gang`] protocol by
//! which a driver hands them each layer's bands. A layer starts and ends with an atomic
//! store and a short spin instead of a thread-pool job (waking sleeping pool threads cost
//! tens of microseconds per layer, most of a small model's time); a thread that waits
//! longer than [`SPIN_FOR`] parks on a condition variable, so an oversubscribed machine
//! (more threads than free cores, a phone running its UI) loses a wake-up, not its cores.
//!
//! # The protocol
//! One driver at a time: [`GangExec::run`] claims the gang's `busy` flag and refuses (a
//! panic naming the misuse) a second run while one is in flight, whether nested in one of
//! its own tasks or entered from another thread. A job's tasks fall into `width` shares
//! (task `i` in share `i mod width`); share 0 is the driver's. The driver publishes the job
//! (a pointer to its stack and the task count) under a sequence lock on `generation` (odd
//! while it writes), runs its share, and then, for every other share, either takes it over
//! (a compare-exchange on `claimed[idx]`, when worker `idx` has not claimed it yet: it came
//! late, its core busy with other work) and runs it itself, or waits until the worker marks
//! it `finished` — on every path, a panicking task included — and only then returns. A
//! worker reads the job under the sequence lock, claims its share with the same
//! compare-exchange and dereferences the job only if that succeeds, so no thread touches a
//! job after its run has returned, and a late worker never holds a layer up: it finds its
//! share taken and moves on to the newest job. A panic in a share is caught and re-raised
//! by the driver with its own message.
//!
//! Parking uses the classic Dekker pairing: a waiter announces itself (`sleepers`,
//! `driver_parked`), issues a SeqCst fence and re-checks the condition under the lock;
//! the signaller changes the condition, issues a SeqCst fence and notifies (under the
//! lock) if anyone announced itself. One of the two always sees the other, so no wake-up
//! is lost, and a signaller that finds nobody asleep makes no system call.
//!
//! `cfg(loom)` swaps the atomics, locks and threads for loom's so `tests/loom_gang.rs` can
//! model-check the protocol.

use std::any::Any;
use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use quadra_core::Executor;

use self::sync::{
    fence, thread, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Condvar, Mutex,
    Ordering,
};
use crate::cores::{Bands, Placement};

/// Most threads of a gang (one band each).
const MAX: usize = quadra_core::exec::MAX_BANDS;

#[cfg(not(loom))]
mod sync {
    pub(crate) use std::sync::atomic::{
        fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
    };
    pub(crate) use std::sync::{Condvar, Mutex};
    pub(crate) use std::{thread, thread_local};
}

#[cfg(loom)]
mod sync {
    pub(crate) use loom::sync::atomic::{
        fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
    };
    pub(crate) use loom::sync::{Condvar, Mutex};
    pub(crate) use loom::{thread, thread_local};
}

/// How long a waiting thread spins before it parks. Layers of a small model follow each
/// other within tens of microseconds; a longer wait (between runs, or behind a thread
/// that lost its core) parks.
pub(crate) const SPIN_FOR: std::time::Duration = std::time::Duration::from_micros(100);

/// [`SPIN_FOR`], or `QUADRA_SPIN_US` microseconds (a tuning aid: longer spins favour a
/// machine with idle cores, shorter ones a machine running other work).
fn spin_for() -> std::time::Duration {
    static S: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();
    *S.get_or_init(|| {
        std::env::var("QUADRA_SPIN_US")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(SPIN_FOR, std::time::Duration::from_micros)
    })
}

/// The shortest time the driver waits for a worker to claim its share before taking it
/// over (see `Gang::finish_job`).
const MIN_GRACE: std::time::Duration = std::time::Duration::from_micros(5);

/// A bounded spin: `again()` is false once [`SPIN_FOR`] has passed (at once under loom,
/// whose model explores the parked path instead).
struct Spin {
    n: u32,
    since: Option<std::time::Instant>,
}

impl Spin {
    fn new() -> Self {
        Spin { n: 0, since: None }
    }

    fn again(&mut self) -> bool {
        if cfg!(loom) {
            return false;
        }
        self.n = self.n.wrapping_add(1);
        // The clock is read every 64 spins: a few nanoseconds each, hidden in the spin.
        if self.n.is_multiple_of(64) {
            let now = std::time::Instant::now();
            if now.duration_since(*self.since.get_or_insert(now)) >= spin_for() {
                return false;
            }
        }
        std::hint::spin_loop();
        true
    }
}

/// A published job: the driver's closure over its tasks (`n` of them; task `i` belongs to
/// share `i mod width`) and, for a job of row bands, when it was published. It lives on
/// the driver's stack for the job's duration.
struct JobData<'a> {
    call: &'a (dyn Fn(usize) + Sync),
    published: Option<std::time::Instant>,
}

/// Shared state of one gang: a driver (whoever calls [`GangExec::run`]) and `width - 1`
/// workers running [`Gang::work`].
pub(crate) struct Gang {
    width: usize,
    /// Held by a run from its start until every share of its job is done.
    busy: AtomicBool,
    /// Even: the job of this generation is published; odd: the driver is writing the
    /// next (a sequence lock around `job` and `tasks`).
    generation: AtomicUsize,
    /// The current job, on the driver's stack: dereferenced only by a thread that
    /// claimed a share of it (see `impl Sync`).
    job: AtomicPtr<JobData<'static>>,
    /// Tasks of the current job.
    tasks: AtomicUsize,
    /// The newest generation whose share `idx` is claimed, by worker `idx` or by the
    /// driver taking it over.
    claimed: [AtomicUsize; MAX],
    /// The newest generation whose share `idx` worker `idx` has finished.
    finished: [AtomicUsize; MAX],
    stop: AtomicBool,
    /// The first panic of a worker's task in the current job.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// Workers parked (or about to park) on `wake`.
    sleepers: AtomicUsize,
    /// Workers that have started.
    started: AtomicUsize,
    /// The driver is parked (or about to park) on `done`.
    driver_parked: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
    done: Condvar,
    /// Band weight of each thread ([`Executor::split`]); changed by the driver only
    /// between passes.
    weights: [AtomicU32; MAX],
    /// Nanoseconds from publication to each share's finish, summed over the timed jobs
    /// since the last rebalance.
    busy_ns: [AtomicU64; MAX],
    /// Rebalance the weights from `busy_ns` between passes (`Bands::Measured`).
    adapt: bool,
}

// SAFETY: the job pointer is the only shared reference to non-Sync-checked data. A worker
// reads it under the generation's sequence lock (so it is the pointer of the generation it
// read), then claims its share of that generation with a compare-exchange on `claimed`
// that succeeds only if nobody claimed it for that or a later generation; only then does
// it dereference the pointer. The driver, before its job ends (and its stack frame with
// the job and the tasks goes), either claims each worker's share itself (the worker's
// claim then fails and it never dereferences) or waits until the worker marks the share
// finished (Release on `finished`, Acquire in the driver) — on every path, a panicking
// task included. Each task index belongs to exactly one share, so the `&mut` to tasks are
// disjoint.
unsafe impl Sync for Gang {}
// SAFETY: as above: the pointer is only used under that protocol, whichever thread owns
// the gang.
unsafe impl Send for Gang {}

impl Gang {
    /// A gang of `width` threads (at most [`MAX`]) with even bands.
    #[cfg_attr(not(loom), allow(dead_code))]
    pub(crate) fn new(width: usize) -> Self {
        Self::with_weights(&vec![1024; width.clamp(1, MAX)], false)
    }

    /// A gang with one thread per weight, splitting rows in proportion to the weights;
    /// `adapt`: move them towards the threads' measured speeds between passes.
    pub(crate) fn with_weights(weights: &[u32], adapt: bool) -> Self {
        let width = weights.len().clamp(1, MAX);
        Gang {
            weights: std::array::from_fn(|i| AtomicU32::new(weights.get(i).copied().unwrap_or(0))),
            busy_ns: std::array::from_fn(|_| AtomicU64::new(0)),
            adapt,
            width,
            busy: AtomicBool::new(false),
            generation: AtomicUsize::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            tasks: AtomicUsize::new(0),
            claimed: std::array::from_fn(|_| AtomicUsize::new(0)),
            finished: std::array::from_fn(|_| AtomicUsize::new(0)),
            stop: AtomicBool::new(false),
            panic: Mutex::new(None),
            sleepers: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
            driver_parked: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            done: Condvar::new(),
        }
    }

    /// Worker `idx` (1..width): runs its share of every job it claims in time, until
    /// [`Gang::stop`]. A worker that comes late finds its share taken by the driver and
    /// moves on to the newest job.
    pub(crate) fn work(&self, idx: usize) {
        self.started.fetch_add(1, Ordering::Release);
        let mut seen = 0;
        while let Some(g) = self.next_job(seen) {
            seen = g;
            // The job of generation `g`: read under the sequence lock.
            let job = self.job.load(Ordering::Acquire);
            let n = self.tasks.load(Ordering::Acquire);
            if self.generation.load(Ordering::Acquire) != g || idx >= n {
                continue;
            }
            let old = self.claimed[idx].load(Ordering::Acquire);
            if old >= g
                || self.claimed[idx]
                    .compare_exchange(old, g, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
            {
                continue; // the driver took this share over
            }
            // SAFETY: share `idx` of generation `g` is ours, so the driver waits for it to
            // be finished before the job (on its stack) ends (see `impl Sync`).
            let job = unsafe { &*job };
            self.run_share(job, n, idx);
            self.add_busy(idx, job.published);
            self.finished[idx].store(g, Ordering::Release);
            fence(Ordering::SeqCst);
            if self.driver_parked.load(Ordering::Relaxed) {
                let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
                self.done.notify_all();
            }
        }
    }

    /// The driver's own share (0), a panic passed on as it is.
    fn run_share_here(&self, job: &JobData<'_>, n: usize) {
        let mut i = 0;
        while i < n {
            (job.call)(i);
            i += self.width;
        }
    }

    /// Runs the tasks of share `idx` (`idx`, `idx + width`, ... below `n`), keeping the
    /// first panic for the driver.
    fn run_share(&self, job: &JobData<'_>, n: usize, idx: usize) {
        let mut i = idx;
        while i < n {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| (job.call)(i))) {
                let mut first = self.panic.lock().unwrap_or_else(|e| e.into_inner());
                first.get_or_insert(payload);
            }
            i += self.width;
        }
    }

    /// Adds the time since `start` (a timed job's publication) to thread `idx`'s total.
    fn add_busy(&self, idx: usize, start: Option<std::time::Instant>) {
        if let Some(t) = start {
            let ns = t.elapsed().as_nanos().min(u64::MAX as u128) as u64;
            self.busy_ns[idx].fetch_add(ns, Ordering::Relaxed);
        }
    }

    /// The current band weights of the first `n` threads.
    fn weights(&self, n: usize) -> [u32; MAX] {
        std::array::from_fn(|i| {
            if i < n {
                self.weights[i].load(Ordering::Relaxed)
            } else {
                0
            }
        })
    }

    /// Moves the band weights towards equal finishing times (driver only, between
    /// passes): each thread's weight is scaled by the square root of (mean time / its
    /// time) over the timed jobs since the last call, once they add up to 5 ms (a few
    /// passes of a small model: one pass's timing is noise) and differ by more than 5%. Any weights give the same results; these only decide
    /// who waits.
    /// (Allocation-free: a session's runs make no heap allocation.)
    fn rebalance(&self) {
        let n = self.width;
        let ns: [u64; MAX] = std::array::from_fn(|i| {
            if i < n {
                self.busy_ns[i].load(Ordering::Relaxed)
            } else {
                0
            }
        });
        let total: u64 = ns.iter().sum();
        if n < 2 || total < 5_000_000 {
            return;
        }
        for b in &self.busy_ns[..n] {
            b.store(0, Ordering::Relaxed);
        }
        let mean = total as f64 / n as f64;
        // A thread with (almost) no rows measured (almost) nothing: floor its time.
        let t: [f64; MAX] = std::array::from_fn(|i| (ns[i] as f64).max(mean / 64.0));
        if t[..n].iter().all(|&x| (x / mean - 1.0).abs() < 0.05) {
            return;
        }
        let w = self.weights(n);
        let scaled: [f64; MAX] = std::array::from_fn(|i| {
            if i < n {
                w[i].max(1) as f64 * (mean / t[i]).sqrt()
            } else {
                0.0
            }
        });
        let max = scaled.iter().cloned().fold(0.0f64, f64::max);
        for (i, s) in scaled[..n].iter().enumerate() {
            // At least a quarter of the fastest: a thread whose time is mostly the wait for
            // its core (not its rows) would otherwise be starved of rows, and the layer
            // would still wait for it.
            let v = (s / max * 1024.0).round().clamp(256.0, 1024.0) as u32;
            self.weights[i].store(v, Ordering::Relaxed);
        }
    }

    /// Waits for a published generation newer than `seen` (`None`: stopped).
    fn next_job(&self, seen: usize) -> Option<usize> {
        let newer = |g: usize| g != seen && g.is_multiple_of(2);
        let mut spin = Spin::new();
        loop {
            if self.stop.load(Ordering::Acquire) {
                return None;
            }
            let g = self.generation.load(Ordering::Acquire);
            if newer(g) {
                return Some(g);
            }
            if !spin.again() {
                break;
            }
        }
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.sleepers.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let next = loop {
            if self.stop.load(Ordering::Acquire) {
                break None;
            }
            let g = self.generation.load(Ordering::Acquire);
            if newer(g) {
                break Some(g);
            }
            guard = self.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
        };
        self.sleepers.fetch_sub(1, Ordering::Relaxed);
        next
    }

    /// Publishes a job of `n` tasks (the caller holds `busy`; every share of the last job
    /// is done); returns its generation.
    fn publish(&self, job: &JobData<'_>, n: usize) -> usize {
        let g = self.generation.load(Ordering::Relaxed) + 2;
        // Odd while the job is written: a worker reading now sees the generation change.
        self.generation.store(g - 1, Ordering::Relaxed);
        fence(Ordering::Release);
        let ptr = job as *const JobData<'_> as *mut JobData<'static>;
        self.job.store(ptr, Ordering::Release);
        self.tasks.store(n, Ordering::Release);
        self.generation.store(g, Ordering::Release);
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::Relaxed) > 0 {
            let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_all();
        }
        g
    }

    /// The driver's side of the other shares of job `g`, once its own share (which took
    /// `own`) is done: a share no worker has claimed after a grace as long as the driver's
    /// own share (at least [`MIN_GRACE`]) is taken over — run here, unless this thread's
    /// own share already panicked (the job's results are lost anyway) — and a claimed one
    /// waited for. The grace lets a worker that was only waking up (tens of microseconds)
    /// run its share beside the driver; a worker whose core is busy with other work (for
    /// milliseconds) holds the layer up for at most one more share's time.
    fn finish_job(
        &self,
        job: &JobData<'_>,
        n: usize,
        g: usize,
        own: std::time::Duration,
        run_taken: bool,
    ) {
        let grace = own.max(MIN_GRACE);
        let since = std::time::Instant::now();
        for idx in 1..self.width.min(n) {
            let claimed = || self.claimed[idx].load(Ordering::Acquire) >= g;
            // Under loom the grace is skipped (time is not modelled): every interleaving of
            // claims and take-overs is explored anyway.
            while !cfg!(loom) && !claimed() && since.elapsed() < grace {
                std::hint::spin_loop();
            }
            let old = self.claimed[idx].load(Ordering::Acquire);
            let taken = old < g
                && self.claimed[idx]
                    .compare_exchange(old, g, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
            if taken {
                if run_taken {
                    self.run_share(job, n, idx);
                }
                self.add_busy(idx, job.published);
            } else {
                self.wait_finished(idx, g);
            }
        }
    }

    /// Waits until worker `idx` has finished its share of generation `g`.
    fn wait_finished(&self, idx: usize, g: usize) {
        let done = || self.finished[idx].load(Ordering::Acquire) >= g;
        let mut spin = Spin::new();
        while !done() {
            if !spin.again() {
                let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
                self.driver_parked.store(true, Ordering::Relaxed);
                fence(Ordering::SeqCst);
                while !done() {
                    guard = self.done.wait(guard).unwrap_or_else(|e| e.into_inner());
                }
                self.driver_parked.store(false, Ordering::Relaxed);
                return;
            }
        }
    }

    /// Releases the workers: they return from [`Gang::work`] once idle.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        fence(Ordering::SeqCst);
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.wake.notify_all();
    }

    /// Claims the gang for one run, or panics naming the misuse.
    fn claim(&self) -> Claim<'_> {
        if self
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            panic!(
                "quadra: GangExec::run entered while a run of the same executor is in flight \
                 (nested in one of its own tasks, or from a second thread): an executor runs \
                 one layer at a time, from one thread"
            );
        }
        Claim(self)
    }
}

/// Holds a gang's `busy` flag; released when dropped (after the run's workers are done).
struct Claim<'g>(&'g Gang);

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::Release);
    }
}

/// The executor of a gang ([`crate::Network::with_executor`], and a session's runs): task
/// `i` of a layer runs on gang thread `i mod width`, the calling thread being 0, unless
/// that thread comes late and the caller runs its tasks itself. One run at a time: a run
/// entered while another is in flight (nested in a task, or from a second thread) panics.
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
        self.run_job(tasks, f, false)
    }

    fn run_bands<T: Send>(&self, tasks: &mut [T], f: &(dyn Fn(&mut T) + Sync)) {
        self.run_job(tasks, f, true)
    }

    fn split(&self, rows: usize, bands: usize, i: usize) -> (usize, usize) {
        let n = bands.min(self.gang.width);
        quadra_core::exec::weighted_band_rows(rows, &self.gang.weights(n)[..n], i)
    }

    fn pass_start(&self) {
        if self.gang.adapt {
            self.gang.rebalance();
        }
    }
}

impl GangExec<'_> {
    /// The current band weights, one per thread (the fastest about 1024).
    pub fn band_weights(&self) -> Vec<u32> {
        self.gang.weights(self.gang.width)[..self.gang.width].to_vec()
    }

    fn run_job<T: Send>(&self, tasks: &mut [T], f: &(dyn Fn(&mut T) + Sync), timed: bool) {
        let gang = self.gang;
        let claim = gang.claim();
        let (n, width) = (tasks.len(), gang.width);
        if n <= 1 || width <= 1 {
            tasks.iter_mut().for_each(f);
            return;
        }
        let base = TaskPtr(tasks.as_mut_ptr());
        let call = |i: usize| {
            // SAFETY: `i < n`, and each index belongs to exactly one share, run by exactly
            // one thread, so the `&mut` are disjoint; `tasks` outlives the job because it
            // ends only when every share is done.
            f(unsafe { &mut *base.at(i) })
        };
        // From publication, not from each thread's start: a thread that starts late (its
        // core busy with other work) finishes late, and the split should see that.
        let job = JobData {
            call: &call,
            published: timed.then(std::time::Instant::now),
        };
        let g = gang.publish(&job, n);
        // This thread's tasks may panic; the other shares still borrow `call` and `tasks`,
        // so the unwinding waits until every share is done.
        let start = std::time::Instant::now();
        let driver = catch_unwind(AssertUnwindSafe(|| gang.run_share_here(&job, n)));
        let own = start.elapsed();
        gang.add_busy(0, job.published);
        gang.finish_job(&job, n, g, own, driver.is_ok());
        let worker = gang.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(claim);
        if let Err(payload) = driver {
            resume_unwind(payload);
        }
        if let Some(payload) = worker {
            resume_unwind(payload);
        }
    }
}

/// Worker threads kept with a gang: spawned once, parked when idle, stopped and joined on
/// drop. [`Crew::run`] lends the calling thread to the gang as its driver.
pub(crate) struct Crew {
    gang: std::sync::Arc<Gang>,
    handles: Vec<thread::JoinHandle<()>>,
    /// Serialises drivers (two threads calling `run` at once take turns).
    drive: Mutex<()>,
    /// Whether every worker was pinned to its core.
    pinned: bool,
    /// Why a worker could not be pinned (the first failure).
    pin_note: Option<String>,
}

sync::thread_local! {
    /// The gang this thread serves (as a driver or a worker), to refuse a nested `run`.
    #[allow(clippy::missing_const_for_thread_local)] // loom's macro takes no `const`
    static SERVING: Cell<usize> = Cell::new(0);
}

/// Why [`Crew::run`] refused.
#[derive(Debug)]
pub(crate) struct Nested;

impl Crew {
    /// A crew of `width` threads (the driver and `width - 1` workers), unpinned, with
    /// even bands.
    #[cfg_attr(not(loom), allow(dead_code))]
    pub(crate) fn new(width: usize) -> std::io::Result<Self> {
        let mut p = Placement::single();
        p.cores = vec![0; width.clamp(1, MAX)];
        p.capacity = vec![1; p.cores.len()];
        Self::placed(&p)
    }

    /// A crew placed as `placement` says: worker `i` pinned to `cores[i]` when it asks
    /// for pinning (a failure leaves the worker unpinned, noted in [`Crew::pin_note`]),
    /// bands weighted by its [`Bands`] mode.
    pub(crate) fn placed(placement: &Placement) -> std::io::Result<Self> {
        let width = placement.threads().clamp(1, MAX);
        let adapt = placement.bands == Bands::Measured;
        let gang = std::sync::Arc::new(Gang::with_weights(&placement.weights()[..width], adapt));
        let pin_results = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut crew = Crew {
            gang,
            handles: Vec::with_capacity(width.saturating_sub(1)),
            drive: Mutex::new(()),
            pinned: false,
            pin_note: None,
        };
        for idx in 1..crew.gang.width {
            let gang = std::sync::Arc::clone(&crew.gang);
            let core = placement.pin.then(|| placement.cores[idx]);
            let results = std::sync::Arc::clone(&pin_results);
            let work = move || {
                if let Some(core) = core {
                    let r = crate::cores::pin_to(core);
                    results.lock().unwrap_or_else(|e| e.into_inner()).push(r);
                }
                SERVING.with(|s| s.set(std::sync::Arc::as_ptr(&gang) as usize));
                gang.work(idx)
            };
            #[cfg(not(loom))]
            let handle = thread::Builder::new()
                .name(format!("quadra-{idx}"))
                .spawn(work)?;
            #[cfg(loom)]
            let handle = thread::spawn(work);
            // On failure `crew` drops: the workers already started are stopped and joined.
            crew.handles.push(handle);
        }
        // Wait until every worker is up (a starting thread allocates its name and signal
        // stack), so a run never overlaps a start-up.
        while crew.gang.started.load(Ordering::Acquire) < crew.gang.width - 1 {
            thread::yield_now();
        }
        let results = std::mem::take(&mut *pin_results.lock().unwrap_or_else(|e| e.into_inner()));
        crew.pinned = placement.pin && width > 1 && results.iter().all(Result::is_ok);
        crew.pin_note = if !placement.pin && width > 1 {
            Some("more threads than chosen cores: not pinned".into())
        } else {
            results.into_iter().find_map(Result::err)
        };
        Ok(crew)
    }

    /// Whether every worker is pinned to its core.
    pub(crate) fn pinned(&self) -> bool {
        self.pinned
    }

    /// Why the workers are not pinned, if they are not.
    pub(crate) fn pin_note(&self) -> Option<&str> {
        self.pin_note.as_deref()
    }

    /// The current band weights, one per thread.
    pub(crate) fn band_weights(&self) -> Vec<u32> {
        GangExec { gang: &self.gang }.band_weights()
    }

    /// Threads of the crew, the driver included.
    pub(crate) fn width(&self) -> usize {
        self.gang.width
    }

    /// Whether the calling thread serves this crew now (drives a run, or is a worker).
    pub(crate) fn serving(&self) -> bool {
        SERVING.with(Cell::get) == std::sync::Arc::as_ptr(&self.gang) as usize
    }

    /// Runs `f` with the gang's executor, this thread as its driver. Another thread's
    /// `run` waits for this one; a `run` nested in `f` (or in a task of the executor) is
    /// refused.
    pub(crate) fn run<R>(&self, f: impl FnOnce(&GangExec<'_>) -> R) -> Result<R, Nested> {
        if self.serving() {
            return Err(Nested);
        }
        let me = std::sync::Arc::as_ptr(&self.gang) as usize;
        let _turn = self.drive.lock().unwrap_or_else(|e| e.into_inner());
        let outer = SERVING.with(|s| s.replace(me));
        struct Restore(usize);
        impl Drop for Restore {
            fn drop(&mut self) {
                SERVING.with(|s| s.set(self.0));
            }
        }
        let _restore = Restore(outer);
        Ok(f(&GangExec { gang: &self.gang }))
    }
}

impl Drop for Crew {
    fn drop(&mut self) {
        self.gang.stop();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    /// A session's crew reused after a run that panicked in a band while another band was
    /// still running on a slow worker: the next runs see every task exactly once, and no
    /// task of a finished run is called after its run returned.
    #[test]
    fn a_crew_reused_after_a_panicking_run_runs_each_task_once() {
        let crew = Crew::new(3).unwrap();
        for round in 0..200 {
            let returned = AtomicBool::new(false);
            let late = AtomicUsize::new(0);
            let r = catch_unwind(AssertUnwindSafe(|| {
                crew.run(|exec| {
                    let mut t = [0usize, 1, 2];
                    exec.run(&mut t, &|i: &mut usize| {
                        if *i == 0 {
                            panic!("band 0 fails");
                        }
                        std::thread::sleep(Duration::from_millis(2 * *i as u64));
                        if returned.load(Ordering::SeqCst) {
                            late.fetch_add(1, Ordering::SeqCst);
                        }
                    })
                })
            }));
            returned.store(true, Ordering::SeqCst);
            assert!(
                r.is_err(),
                "round {round}: the band's panic reached the caller"
            );
            assert_eq!(
                late.load(Ordering::SeqCst),
                0,
                "round {round}: a band ran late"
            );
            // The next runs, back to back: every task exactly once.
            let counts: Vec<AtomicUsize> = (0..9 * 15).map(|_| AtomicUsize::new(0)).collect();
            for run in 0..3 {
                crew.run(|exec| {
                    for job in 0..5 {
                        let mut t: Vec<usize> = (0..9).map(|i| (run * 5 + job) * 9 + i).collect();
                        exec.run(&mut t, &|i: &mut usize| {
                            counts[*i].fetch_add(1, Ordering::SeqCst);
                        })
                    }
                })
                .unwrap();
            }
            std::thread::sleep(Duration::from_millis(5));
            let counts: Vec<usize> = counts.iter().map(|c| c.load(Ordering::SeqCst)).collect();
            assert_eq!(
                counts,
                vec![1; 9 * 15],
                "round {round}: tasks ran {counts:?} times"
            );
        }
    }
}
