//! [`Session`]: a network prepared for one input size and batch, whose `run` allocates
//! nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use quadra_core::{Kernels, Serial};

use crate::aligned::AlignedF32;
use crate::config::ArchConfig;
use crate::gang::{Gang, GangExec, StopOnDrop};
use crate::{ExecRef, Layout, Network, RunError, Store};

/// A network prepared for one input size and batch: it owns the arena, the layout-converted
/// image, the output and (with more than one thread) its own worker threads, so
/// [`Session::run`] makes no heap allocation and no thread wake-up through a pool.
///
/// Images of a batch run one after another, each split into bands of rows over the
/// session's threads (as `Network::forward_*` does for one image). The threads are the
/// network's count (`Network::with_threads`); between runs they sleep on a condition
/// variable, during a run they spin between layers. A session is used by one thread at a
/// time (`run` takes `&mut self`) and may be moved between threads.
///
/// ```no_run
/// use quadra_cpu::{Layout, Network, Session};
/// let net = Network::load("model.qnet")?.with_threads(2)?;
/// let mut session = Session::new(&net, 224, 224, 1)?;
/// let input = vec![0.0f32; session.input_len()]; // NCHW
/// let logits = session.run(&input, Layout::Nchw)?; // num_classes values
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Session {
    store: Arc<Store>,
    config: ArchConfig,
    kernels: Kernels,
    size: (usize, usize),
    batch: usize,
    features: bool,
    arena: AlignedF32,
    hwc: AlignedF32,
    out: AlignedF32,
    crew: Option<Crew>,
}

impl Session {
    /// A session giving logits (`num_classes` per image) for `batch` images of
    /// `height x width`.
    pub fn new(net: &Network, height: usize, width: usize, batch: usize) -> Result<Self, RunError> {
        Self::build(net, height, width, batch, false, net.threads())
    }

    /// As [`Session::new`], on `threads` threads of its own (at least 1) instead of the
    /// network's count.
    pub fn with_threads(
        net: &Network,
        height: usize,
        width: usize,
        batch: usize,
        threads: usize,
    ) -> Result<Self, RunError> {
        Self::build(net, height, width, batch, false, threads.max(1))
    }

    /// A session giving pooled, normalised features before the head (`dims[3]` per image).
    pub fn for_features(
        net: &Network,
        height: usize,
        width: usize,
        batch: usize,
    ) -> Result<Self, RunError> {
        Self::build(net, height, width, batch, true, net.threads())
    }

    fn build(
        net: &Network,
        h: usize,
        w: usize,
        batch: usize,
        features: bool,
        threads: usize,
    ) -> Result<Self, RunError> {
        let config = net.config().clone();
        if h < 32 || w < 32 {
            return Err(RunError::Input(format!(
                "input size {h}x{w}: QuadraNet downsamples by 32, so H and W must be at least 32"
            )));
        }
        if h > crate::MAX_INPUT_SIDE || w > crate::MAX_INPUT_SIDE {
            return Err(RunError::Input(format!(
                "input size {h}x{w}: at most {} a side",
                crate::MAX_INPUT_SIDE
            )));
        }
        if batch == 0 {
            return Err(RunError::Input(
                "a session needs a batch of at least 1".into(),
            ));
        }
        if threads > crate::MAX_THREADS {
            return Err(RunError::Input(format!(
                "{threads} threads: at most {}",
                crate::MAX_THREADS
            )));
        }
        let model = net.model()?;
        // The core refuses sizes it cannot plan (e.g. above its largest side) here, once.
        let arena_len = model.arena_len(h, w, threads);
        let per = if features {
            config.dims[3]
        } else {
            config.num_classes
        };
        let input = batch.checked_mul(config.in_chans * h * w).ok_or_else(|| {
            RunError::Input(format!("a batch of {batch} {h}x{w} images is too large"))
        })?;
        let crew = if threads > 1 {
            Some(Crew::new(threads)?)
        } else {
            None
        };
        // Sizes come from the caller: allocated fallibly, so a batch too large for this
        // machine is an error, not an abort.
        let alloc = |n: usize, what: &str| {
            AlignedF32::try_zeros(n).ok_or_else(|| {
                RunError::Input(format!(
                    "cannot allocate {} bytes for the {what} of a batch of {batch} {h}x{w} images",
                    n.saturating_mul(4)
                ))
            })
        };
        Ok(Session {
            store: Arc::clone(&net.store),
            kernels: net.kernels(),
            size: (h, w),
            batch,
            features,
            arena: alloc(arena_len, "arena")?,
            hwc: alloc(input / batch, "input image")?,
            out: alloc(batch.saturating_mul(per), "output")?,
            crew,
            config,
        })
    }

    /// Floats `run` takes: batch x in_chans x height x width.
    pub fn input_len(&self) -> usize {
        self.batch * self.hwc.len()
    }

    /// Floats `run` gives: batch x (num_classes, or `dims[3]` for features).
    pub fn output_len(&self) -> usize {
        self.out.len()
    }

    /// Input height and width.
    pub fn input_size(&self) -> (usize, usize) {
        self.size
    }

    /// Images per run.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The kernel path.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// Threads a run uses (the calling one included).
    pub fn threads(&self) -> usize {
        self.crew.as_ref().map_or(1, |c| c.width)
    }

    /// Runs the batch in `input` (`layout`, `input_len()` floats) and returns the output
    /// (`output_len()` floats, image after image). No heap allocation on success.
    pub fn run(&mut self, input: &[f32], layout: Layout) -> Result<&[f32], RunError> {
        if input.len() != self.input_len() {
            let (h, w) = self.size;
            return Err(RunError::Input(format!(
                "input has {} floats, the session expects {} ({} x {} x {h} x {w})",
                input.len(),
                self.input_len(),
                self.batch,
                self.config.in_chans
            )));
        }
        let Session {
            store,
            config,
            kernels,
            size: (h, w),
            features,
            arena,
            hwc,
            out,
            crew,
            ..
        } = self;
        let (h, w, c) = (*h, *w, config.in_chans);
        let model = store.model(config)?;
        let per = out.len() / self.batch;
        let mut body = |exec: &dyn ExecRef| -> Result<(), RunError> {
            for (img, dst) in input.chunks_exact(hwc.len()).zip(out.chunks_exact_mut(per)) {
                match layout {
                    Layout::Nhwc => hwc.copy_from_slice(img),
                    Layout::Nchw => {
                        for (p, px) in hwc.chunks_exact_mut(c).enumerate() {
                            for (ch, v) in px.iter_mut().enumerate() {
                                *v = img[ch * h * w + p];
                            }
                        }
                    }
                }
                exec.forward(&model, *kernels, hwc, (h, w), arena, dst, *features)?;
            }
            Ok(())
        };
        match crew {
            None => body(&Serial)?,
            Some(crew) => crew.run(|exec| body(exec))?,
        }
        Ok(self.out.as_slice())
    }
}

/// The session's own worker threads: a gang kept across runs. Between runs the workers
/// wait on `wake`; a run publishes its number under the lock, they join the gang from the
/// generation it started at, and return to waiting when the run stops the gang.
struct Crew {
    width: usize,
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
}

struct Shared {
    gang: Gang,
    state: Mutex<State>,
    wake: Condvar,
    /// Workers that left the gang since the current run began.
    left: AtomicUsize,
}

struct State {
    run: u64,
    /// The gang generation the current run started at.
    from: usize,
    quit: bool,
}

impl Crew {
    fn new(width: usize) -> Result<Self, RunError> {
        let shared = Arc::new(Shared {
            gang: Gang::new(width),
            state: Mutex::new(State {
                run: 0,
                from: 0,
                quit: false,
            }),
            wake: Condvar::new(),
            left: AtomicUsize::new(0),
        });
        let mut crew = Crew {
            width,
            shared,
            handles: Vec::with_capacity(width - 1),
        };
        for idx in 1..width {
            let shared = Arc::clone(&crew.shared);
            let h = std::thread::Builder::new()
                .name(format!("quadra-session-{idx}"))
                .spawn(move || shared.serve(idx))
                .map_err(|e| RunError::Pool(e.to_string()))?;
            crew.handles.push(h);
        }
        // Each worker counts itself once it is up (a starting thread allocates its name and
        // signal stack), so the first run, too, starts from ready threads.
        let mut spins = 0u32;
        while crew.shared.left.load(Ordering::Acquire) < width - 1 {
            crate::gang::backoff(&mut spins);
        }
        Ok(crew)
    }

    fn run<R>(&mut self, f: impl FnOnce(&GangExec<'_>) -> R) -> R {
        let s = &*self.shared;
        // Every worker left the previous run's gang (waited for below), so it may be rearmed.
        let from = s.gang.rearm();
        s.left.store(0, Ordering::Relaxed);
        {
            let mut st = s.state.lock().unwrap_or_else(|e| e.into_inner());
            st.run += 1;
            st.from = from;
        }
        s.wake.notify_all();
        let r = {
            let _stop = StopOnDrop(&s.gang);
            f(&GangExec { gang: &s.gang })
        };
        let mut spins = 0u32;
        while s.left.load(Ordering::Acquire) < self.width - 1 {
            crate::gang::backoff(&mut spins);
        }
        r
    }
}

impl Shared {
    fn serve(&self, idx: usize) {
        let mut seen = 0;
        self.left.fetch_add(1, Ordering::Release);
        loop {
            let from = {
                let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                while st.run == seen && !st.quit {
                    st = self.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                if st.quit {
                    return;
                }
                seen = st.run;
                st.from
            };
            self.gang.work(idx, from);
            self.left.fetch_add(1, Ordering::Release);
        }
    }
}

impl Drop for Crew {
    fn drop(&mut self) {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .quit = true;
        self.shared.wake.notify_all();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
