//! [`Session`]: a network prepared for one input size and batch, whose `run` allocates
//! nothing.

use std::sync::Arc;

use quadra_core::{Kernels, Serial};

use crate::aligned::AlignedF32;
use crate::config::ArchConfig;
use crate::cores::{Cores, Placement};
use crate::gang::Crew;
use crate::{ExecRef, InputError, Layout, Network, RunError, Store};

/// A network prepared for one input size and batch: it owns the arena, the layout-converted
/// image, the output and (with more than one thread) its own worker threads, so
/// [`Session::run`] makes no heap allocation and no thread wake-up through a pool.
///
/// Images of a batch run one after another, each split into bands of rows over the
/// session's threads (as `Network::forward_*` does for one image). The threads are the
/// network's (`Network::with_threads`, `with_cores`: one per big core for 0), workers
/// pinned to their cores; between layers they spin briefly, then park. A session is used
/// by one thread at a time (`run` takes `&mut self`) and may be moved between threads.
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
    precision: quadra_core::Precision,
    size: (usize, usize),
    batch: usize,
    features: bool,
    arena: AlignedF32,
    hwc: AlignedF32,
    out: AlignedF32,
    crew: Option<Crew>,
    /// Set while a run is in progress: still set on entry means the last run unwound.
    poisoned: bool,
    policy: Cores,
    placement: Placement,
}

impl Session {
    /// A session giving logits (`num_classes` per image) for `batch` images of
    /// `height x width`.
    pub fn new(net: &Network, height: usize, width: usize, batch: usize) -> Result<Self, RunError> {
        Self::build(net, height, width, batch, false, net.placement().clone())
    }

    /// As [`Session::new`], on `threads` threads of its own instead of the network's
    /// count (0: one per core the network's [`crate::cores::Cores`] choose).
    pub fn with_threads(
        net: &Network,
        height: usize,
        width: usize,
        batch: usize,
        threads: usize,
    ) -> Result<Self, RunError> {
        Self::on_cores(net, height, width, batch, threads, net.cores_policy())
    }

    /// As [`Session::with_threads`], on the cores `cores` chooses instead of the network's
    /// (`threads` 0: one per chosen core).
    pub fn on_cores(
        net: &Network,
        height: usize,
        width: usize,
        batch: usize,
        threads: usize,
        cores: &Cores,
    ) -> Result<Self, RunError> {
        if threads > crate::MAX_THREADS {
            return Err(RunError::Threads {
                requested: threads,
                max: crate::MAX_THREADS,
            });
        }
        let placement = Network::place(cores, threads, net.bands())?;
        let mut s = Self::build(net, height, width, batch, false, placement)?;
        s.policy = cores.clone();
        Ok(s)
    }

    /// A session giving pooled, normalised features before the head (`dims[3]` per image).
    pub fn for_features(
        net: &Network,
        height: usize,
        width: usize,
        batch: usize,
    ) -> Result<Self, RunError> {
        Self::build(net, height, width, batch, true, net.placement().clone())
    }

    fn build(
        net: &Network,
        h: usize,
        w: usize,
        batch: usize,
        features: bool,
        placement: Placement,
    ) -> Result<Self, RunError> {
        let threads = placement.threads();
        let config = net.config().clone();
        if h < 32 || w < 32 {
            return Err(InputError::TooSmall { h, w }.into());
        }
        if h > crate::MAX_INPUT_SIDE || w > crate::MAX_INPUT_SIDE {
            let max = crate::MAX_INPUT_SIDE;
            return Err(InputError::TooLarge { h, w, max }.into());
        }
        if batch == 0 {
            let why = "a session needs a batch of at least 1";
            return Err(InputError::Batch(why.into()).into());
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
            InputError::Batch(format!("a batch of {batch} {h}x{w} images is too large"))
        })?;
        let crew = if threads > 1 {
            let crew = Crew::placed(&placement)
                .map_err(|e| RunError::Pool(format!("cannot start {threads} threads: {e}")))?;
            Some(crew)
        } else {
            None
        };
        // Sizes come from the caller: allocated fallibly, so a batch too large for this
        // machine is an error, not an abort.
        let alloc = |n: usize, what: &str| {
            AlignedF32::try_zeros(n).ok_or_else(|| {
                InputError::Batch(format!(
                    "cannot allocate {} bytes for the {what} of a batch of {batch} {h}x{w} images",
                    n.saturating_mul(4)
                ))
            })
        };
        Ok(Session {
            store: Arc::clone(&net.store),
            kernels: net.kernels(),
            precision: net.precision(),
            size: (h, w),
            batch,
            features,
            arena: alloc(arena_len, "arena")?,
            hwc: alloc(input / batch, "input image")?,
            out: alloc(batch.saturating_mul(per), "output")?,
            crew,
            config,
            poisoned: false,
            policy: net.cores_policy().clone(),
            placement,
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
        self.crew.as_ref().map_or(1, Crew::width)
    }

    /// The cores of the threads: thread `i` on `cores()[i]` (thread 0 is the caller's,
    /// which is not pinned; the workers are, when [`Session::pinned`]).
    pub fn cores(&self) -> &[usize] {
        &self.placement.cores
    }

    /// How rows are split among the threads (`Bands::Auto` resolved).
    pub fn bands(&self) -> crate::cores::Bands {
        self.placement.bands
    }

    /// Whether every worker thread is pinned to its core (false with one thread).
    pub fn pinned(&self) -> bool {
        self.crew.as_ref().is_some_and(Crew::pinned)
    }

    /// The current band weights, one per thread (the fastest about 1024): with measured
    /// bands they follow the threads' speeds from run to run.
    pub fn band_weights(&self) -> Vec<u32> {
        self.crew
            .as_ref()
            .map_or_else(|| vec![1024], Crew::band_weights)
    }

    /// The kernels, threads, cores and pinning in words, e.g. `avx512+vnni kernels, 2
    /// threads on cores 0-1 (big), capacity bands, workers pinned`.
    pub fn describe(&self) -> String {
        crate::describe(
            self.kernels,
            self.precision,
            &self.placement,
            &self.policy,
            self.crew.as_ref(),
        )
    }

    /// Runs the batch in `input` (`layout`, `input_len()` floats) and returns the output
    /// (`output_len()` floats, image after image). No heap allocation on success.
    ///
    /// A run that panics (a bug in quadra) poisons the session: every later `run` returns
    /// [`RunError::Poisoned`]. Its threads are idle by then (a layer returns only once
    /// every band has), so dropping the session is safe.
    pub fn run(&mut self, input: &[f32], layout: Layout) -> Result<&[f32], RunError> {
        if self.poisoned {
            return Err(RunError::Poisoned);
        }
        if input.len() != self.input_len() {
            let (h, w) = self.size;
            return Err(InputError::Length {
                expected: self.input_len(),
                found: input.len(),
                batch: self.batch,
                chans: self.config.in_chans,
                h,
                w,
            }
            .into());
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
            poisoned,
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
        // Cleared only when the run returns; an unwinding panic leaves it set.
        *poisoned = true;
        let result = match crew {
            None => body(&Serial),
            Some(crew) => crew.run(|exec| body(exec)).unwrap_or_else(|_| {
                Err(RunError::Misuse(
                    "Session::run nested in a task of its own threads".into(),
                ))
            }),
        };
        *poisoned = false;
        result?;
        Ok(self.out.as_slice())
    }
}
