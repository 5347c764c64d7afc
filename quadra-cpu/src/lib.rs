//! # quadra-cpu
//!
//! The std runtime around [`quadra_core`]: load a model (a PyTorch safetensors checkpoint
//! plus its architecture), pick the best kernel path for this CPU at run time, and run
//! batches given as `ndarray` tensors in NCHW (as PyTorch holds them) or NHWC.
//!
//! ```no_run
//! use quadra_cpu::{config::ArchConfig, checkpoint::StateDict, Network};
//! let cfg = ArchConfig::preset("quadranet25-xxs")?;
//! let net = Network::from_state_dict(cfg, &StateDict::load("weights.safetensors")?)?;
//! let x = ndarray::Array4::<f32>::zeros((1, 3, 224, 224));
//! let logits = net.forward_nchw(x.view())?; // [1, 1000]
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Features: `image` adds `preprocess::load_rgb8` (PNG and JPEG decoding, EXIF orientation)
//! for images given as files; without it, [`preprocess::Preprocess`] takes pixels you hold.
#![deny(missing_docs)]

pub mod aligned;
pub mod checkpoint;
pub mod config;
pub mod convert;
pub mod cores;
pub mod dispatch;
pub mod emit;
pub mod file;
mod gang;
pub mod preprocess;
mod session;
pub mod weights;

use std::sync::Arc;

use ndarray::{Array2, ArrayView4, Axis};
pub use quadra_core::Precision;
use quadra_core::{Executor, Kernels, Model, Serial, Weights};
use rayon::prelude::*;

pub use aligned::{AlignedF32, AlignedVec};
use checkpoint::{CheckpointError, StateDict};
use config::ArchConfig;
use cores::{Bands, Cores, Placement, Topology};
use file::ModelFile;
use gang::Crew;
pub use gang::GangExec;
/// The `ndarray` this crate takes and returns arrays of (0.16): use it through
/// `quadra_cpu::ndarray` so your arrays are of the same version.
pub use ndarray;
pub use session::Session;
use weights::{LoadedModel, OwnedWeights};

/// Why a network could not be built or run. Match on the variants (and on
/// [`InputError`]'s) to act on a kind of failure; `Display` gives the sentence to show.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The input does not fit the model or the session (the [`InputError`] says how).
    #[error("bad input: {0}")]
    Input(#[from] InputError),
    /// Reported by the core.
    #[error(transparent)]
    Core(#[from] quadra_core::Error),
    /// The checkpoint does not fit.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The requested kernel path cannot run here.
    #[error(transparent)]
    Dispatch(#[from] dispatch::DispatchError),
    /// A model file is not a valid model, or changed while in use.
    #[error("{file}: {reason}")]
    Model {
        /// The file (or the name given to model bytes).
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// More threads than a layer has bands.
    #[error("{requested} threads: at most {max} (a layer is split into at most {max} bands of rows, one per thread)")]
    Threads {
        /// Threads asked for.
        requested: usize,
        /// [`MAX_THREADS`].
        max: usize,
    },
    /// The thread pool could not be built.
    #[error("cannot build a thread pool: {0}")]
    Pool(String),
    /// A choice of cores this machine cannot satisfy (an offline CPU, an empty list).
    #[error("cores '{policy}': {why}")]
    Cores {
        /// The policy as given (`big`, `4-7`, ...).
        policy: String,
        /// Why it cannot be used.
        why: String,
    },
    /// An API used in a way it does not allow (the message says how).
    #[error("{0}")]
    Misuse(String),
    /// An earlier run of this session panicked (a bug in quadra: please report it); the
    /// session refuses to run again. Make a new one.
    #[error("this session is poisoned: an earlier run panicked (a bug in quadra: please report it); make a new session")]
    Poisoned,
}

/// How an input does not fit a model or a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// The tensor's channel count is not the model's.
    #[error("input has {found} channels, the model expects {expected} (layout {layout}, shape {shape:?})")]
    Channels {
        /// The model's `in_chans`.
        expected: usize,
        /// The tensor's.
        found: usize,
        /// `[N, C, H, W]` or `[N, H, W, C]`.
        layout: &'static str,
        /// The tensor's shape.
        shape: Vec<usize>,
    },
    /// A side under 32 (QuadraNet downsamples by 32).
    #[error("input {h}x{w}: QuadraNet downsamples by 32, so H and W must be at least 32")]
    TooSmall {
        /// Height.
        h: usize,
        /// Width.
        w: usize,
    },
    /// A side above [`MAX_INPUT_SIDE`].
    #[error("input size {h}x{w}: at most {max} a side")]
    TooLarge {
        /// Height.
        h: usize,
        /// Width.
        w: usize,
        /// [`MAX_INPUT_SIDE`].
        max: usize,
    },
    /// A flat input of the wrong length.
    #[error(
        "input has {found} floats, the session expects {expected} ({batch} x {chans} x {h} x {w})"
    )]
    Length {
        /// Floats the session takes.
        expected: usize,
        /// Floats given.
        found: usize,
        /// Images per run.
        batch: usize,
        /// Input channels.
        chans: usize,
        /// Height.
        h: usize,
        /// Width.
        w: usize,
    },
    /// A batch of 0, or one too large to allocate.
    #[error("{0}")]
    Batch(String),
    /// Anything else about an input (an image that cannot be decoded, preprocessing
    /// settings, weights of the wrong type); the message says what.
    #[error("{0}")]
    Other(String),
}

/// A loaded network: architecture, packed weights, kernel path and thread pool.
///
/// ```no_run
/// use quadra_cpu::{ndarray::Array4, Layout, Network};
/// let net = Network::load("m.qnet")?.with_threads(4)?; // mapped, validated once
/// println!("{} kernels, {} threads", net.kernels().describe(), net.threads());
/// let batch = Array4::<f32>::zeros((8, 3, 224, 224)); // NCHW, as PyTorch holds it
/// let logits = net.forward_nchw(batch.view())?; // [8, num_classes]
/// let features = net.features(batch.view(), Layout::Nchw)?; // [8, dims[3]]
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Network {
    config: ArchConfig,
    store: Arc<Store>,
    meta: String,
    kernels: Kernels,
    /// The precision asked for (the model file's recorded default, or `with_precision`);
    /// `kernels` has it if this CPU does.
    precision: Precision,
    threads: usize,
    /// The threads' cores, and how rows are split among them.
    cores: Cores,
    bands: Bands,
    placement: Placement,
    /// Built on first use: a network only run through a [`Session`] (which has its own
    /// threads) never starts one.
    pool: std::sync::OnceLock<Result<rayon::ThreadPool, String>>,
    /// The threads of [`Network::with_executor`] (and of batches smaller than the thread
    /// count), started on first use.
    crew: std::sync::OnceLock<Result<Crew, String>>,
}

/// Where a network's weights live: packed in memory (from a checkpoint or a conversion),
/// or in a model file's bytes, parsed in place.
pub(crate) enum Store {
    Packed(OwnedWeights),
    File(ModelFile),
}

impl Store {
    /// The model over these weights. A model file is parsed again from its bytes (cheap,
    /// every bound checked): if the file was rewritten in place under a running network
    /// (which replacing it by rename never does), that is a [`RunError::Model`] naming it,
    /// never an out-of-bounds read.
    pub(crate) fn model<'a>(&'a self, config: &'a ArchConfig) -> Result<Model<'a>, RunError> {
        Ok(match self {
            Store::Packed(w) => Model::new(config.arch(), w.view())?,
            Store::File(f) => {
                let changed = |what: String| RunError::Model {
                    file: f.source().to_string(),
                    reason: format!(
                        "the model file changed while in use ({what}): replace a model file by \
                         renaming a new one over it, never by rewriting it in place"
                    ),
                };
                let parsed = f.parsed().map_err(|e| match e {
                    RunError::Model { reason, .. } => changed(reason),
                    other => changed(other.to_string()),
                })?;
                if parsed.arch != config.arch() {
                    return Err(changed("its architecture is not the one loaded".into()));
                }
                parsed.model().map_err(|e| changed(e.to_string()))?
            }
        })
    }

    fn weights(&self) -> Result<Weights<'_>, RunError> {
        Ok(match self {
            Store::Packed(w) => w.view(),
            Store::File(f) => f.parsed()?.weights,
        })
    }
}

/// Largest input side a session takes (and the command lines): an 8192x8192 image is
/// 768 MiB of f32 before any layer (the core itself stops at `quadra_core::arch::MAX_SIDE`).
pub const MAX_INPUT_SIDE: usize = 8192;

/// Most threads a network or session runs on: a layer is split into at most
/// [`quadra_core::exec::MAX_BANDS`] bands of rows, one per thread, so more threads could
/// only wait.
pub const MAX_THREADS: usize = quadra_core::exec::MAX_BANDS;

/// Tensor layout of an input batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `[N, C, H, W]`, as PyTorch.
    Nchw,
    /// `[N, H, W, C]`.
    Nhwc,
}

/// The rayon pool of whole-image batches: one thread per placed core, pinned there when
/// the placement asks (a failure leaves a thread unpinned).
fn pool(placement: &Placement) -> Result<rayon::ThreadPool, String> {
    let cores = placement.pin.then(|| placement.cores.clone());
    rayon::ThreadPoolBuilder::new()
        .num_threads(placement.threads())
        .thread_name(|i| format!("quadra-batch-{i}"))
        .start_handler(move |i| {
            if let Some(c) = cores.as_ref().and_then(|c| c.get(i)) {
                let _ = cores::pin_to(*c);
            }
        })
        .build()
        .map_err(|e| e.to_string())
}

/// [`Network::describe`] and [`Session::describe`].
pub(crate) fn describe(
    kernels: Kernels,
    precision: Precision,
    placement: &Placement,
    policy: &Cores,
    crew: Option<&Crew>,
) -> String {
    let n = placement.threads();
    let mut s = format!(
        "{} kernels, {n} thread{}",
        kernels.describe(),
        if n == 1 { "" } else { "s" }
    );
    if let Some(note) = dispatch::precision_note(kernels, precision) {
        s += &format!(" ({note})");
    }
    if n > 1 {
        s += &format!(
            " on cores {} ({}), {} bands",
            cores::format_cpu_list(&placement.cores),
            policy.name(),
            placement.bands.name()
        );
        match crew {
            Some(c) if c.pinned() => s += ", workers pinned",
            Some(c) => {
                s += ", workers not pinned";
                if let Some(note) = c.pin_note() {
                    s += &format!(" ({note})");
                }
            }
            None => {}
        }
    }
    s
}

/// The precision a model file's metadata records (`"precision": "fp16"`, written by
/// `quadra convert --precision fp16`); f32 when it records none.
pub(crate) fn recorded_precision(meta: &str) -> Precision {
    serde_json::from_str::<serde_json::Value>(meta)
        .ok()
        .and_then(|v| v.get("precision")?.as_str().and_then(Precision::from_name))
        .unwrap_or_default()
}

impl Network {
    /// From an architecture and weights already packed for the core.
    pub fn new(config: ArchConfig, weights: OwnedWeights) -> Result<Self, RunError> {
        Model::new(config.arch(), weights.view())?;
        Self::with_store(config, Store::Packed(weights), String::new())
    }

    fn with_store(config: ArchConfig, store: Store, meta: String) -> Result<Self, RunError> {
        let precision = recorded_precision(&meta);
        Ok(Network {
            config,
            store: Arc::new(store),
            meta,
            kernels: dispatch::with_precision(dispatch::default_kernels()?, precision),
            precision,
            threads: 1,
            cores: Cores::default(),
            bands: Bands::default(),
            placement: Placement::single(),
            pool: std::sync::OnceLock::new(),
            crew: std::sync::OnceLock::new(),
        })
    }

    /// From a validated model file, used in place (nothing is copied).
    pub fn from_file(file: ModelFile) -> Result<Self, RunError> {
        let f = file.parsed()?;
        f.model()?;
        let (config, meta) = (ArchConfig::from_arch(&f.arch), f.meta.to_string());
        Self::with_store(config, Store::File(file), meta)
    }

    /// From `.qnet` bytes in memory, copied once into aligned storage and validated;
    /// `source` names them in errors.
    pub fn from_bytes(bytes: &[u8], source: &str) -> Result<Self, RunError> {
        Self::from_file(ModelFile::from_bytes(bytes, source)?)
    }

    /// From an architecture and a PyTorch state_dict (every key checked).
    pub fn from_state_dict(config: ArchConfig, sd: &StateDict) -> Result<Self, RunError> {
        let weights = sd.pack(&config.arch())?;
        Self::new(config, weights)
    }

    /// From a loaded `.qnet` model.
    pub fn from_loaded(m: LoadedModel) -> Result<Self, RunError> {
        let precision = recorded_precision(&m.meta);
        let mut n = Self::new(m.config, m.weights)?.with_precision(precision);
        n.meta = m.meta;
        Ok(n)
    }

    /// Opens a `.qnet` file: mapped read-only and used in place, so the model costs its
    /// file's size in (shared, evictable) page cache and nothing more. The file must not be
    /// rewritten in place while the network lives ([`ModelFile::open`]).
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Self, RunError> {
        Self::from_file(ModelFile::open(path)?)
    }

    /// Metadata of the model file (empty if none).
    pub fn meta(&self) -> &str {
        &self.meta
    }

    /// Uses `kernels` instead of the detected (or `QUADRA_KERNEL`) path, at the network's
    /// precision ([`Network::with_precision`]).
    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        self.kernels = dispatch::with_precision(kernels, self.precision);
        self
    }

    /// Computes at `precision`: [`Precision::Fp16`] runs the pointwise GEMMs in half
    /// precision on aarch64 CPUs with FEAT_FP16 (detected at run time) and f32 elsewhere,
    /// which [`Network::describe`] then says. The default is the model file's recorded
    /// precision (`quadra convert --precision`), else f32.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.set_precision(precision);
        self
    }

    /// [`Network::with_precision`] in place (sessions made afterwards use it).
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
        self.kernels = dispatch::with_precision(self.kernels, precision);
    }

    /// The precision asked for (what runs: [`Network::kernels`]`().precision()`).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Runs on `threads` threads of its own (0: one per core of its [`Cores`], by default
    /// the big cores; at most [`MAX_THREADS`]; the global rayon pool is never used). The
    /// workers are pinned to the chosen cores ([`Network::describe`] says whether that
    /// worked).
    pub fn with_threads(mut self, threads: usize) -> Result<Self, RunError> {
        if threads > MAX_THREADS {
            return Err(RunError::Threads {
                requested: threads,
                max: MAX_THREADS,
            });
        }
        self.threads = threads;
        self.replace()
    }

    /// Runs on the cores `cores` chooses (`big` by default): the thread count stays as
    /// set (`with_threads(0)`: one per chosen core).
    pub fn with_cores(mut self, cores: Cores) -> Result<Self, RunError> {
        self.cores = cores;
        self.replace()
    }

    /// Splits each layer's rows among the threads as `bands` says (`auto` by default:
    /// measured speeds on `Cores::All`, core capacities otherwise).
    pub fn with_bands(mut self, bands: Bands) -> Result<Self, RunError> {
        self.bands = bands;
        self.replace()
    }

    /// Places the threads anew (and drops any started).
    fn replace(mut self) -> Result<Self, RunError> {
        self.placement = Self::place(&self.cores, self.threads, self.bands)?;
        self.pool = std::sync::OnceLock::new();
        self.crew = std::sync::OnceLock::new();
        Ok(self)
    }

    /// `threads` threads (0: one per chosen core) on `cores`, read from this machine's
    /// topology ([`Topology::detect`]).
    pub(crate) fn place(
        cores: &Cores,
        threads: usize,
        bands: Bands,
    ) -> Result<Placement, RunError> {
        Placement::new(&Topology::detect(), cores, threads, bands).map_err(|why| RunError::Cores {
            policy: cores.name(),
            why,
        })
    }

    /// The cores a network's threads run on (thread `i` on `cores()[i]`; thread 0 is the
    /// caller's, which is not pinned).
    pub fn cores(&self) -> &[usize] {
        &self.placement.cores
    }

    /// The kernels, threads and cores in words, e.g. `avx512+vnni kernels, 2 threads on
    /// cores 0-1 (big), capacity bands`; with threads started, whether they are pinned.
    pub fn describe(&self) -> String {
        let crew = self.crew.get().and_then(|c| c.as_ref().ok());
        describe(
            self.kernels,
            self.precision,
            &self.placement,
            &self.cores,
            crew,
        )
    }

    fn pool(&self) -> Result<&rayon::ThreadPool, RunError> {
        self.pool
            .get_or_init(|| pool(&self.placement))
            .as_ref()
            .map_err(|e| RunError::Pool(e.clone()))
    }

    /// The kernel path in use.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// Threads a forward pass runs on.
    pub fn threads(&self) -> usize {
        self.placement.threads()
    }

    /// How each layer's rows are split among the threads.
    pub fn bands(&self) -> Bands {
        self.bands
    }

    pub(crate) fn placement(&self) -> &Placement {
        &self.placement
    }

    /// The cores policy ([`Network::with_cores`]).
    pub fn cores_policy(&self) -> &Cores {
        &self.cores
    }

    /// Runs `f` with an executor that splits each layer into one band per thread (for the
    /// core API, `Model::forward_with`; size arenas with `Model::arena_len(h, w, threads)`).
    /// `f` runs on the calling thread, which takes band 0; the network's other threads
    /// (started on first use) take the rest, spinning between layers so bands start and
    /// end without a wake-up. Two threads calling `with_executor` at once take turns;
    /// calling it again (or `forward_*`, `features`) from inside `f` or from a task of the
    /// executor is an error, as is a second `exec.run` while one is in flight (a panic).
    pub fn with_executor<R>(&self, f: impl FnOnce(&GangExec<'_>) -> R) -> Result<R, RunError> {
        let crew = self
            .crew
            .get_or_init(|| {
                Crew::placed(&self.placement)
                    .map_err(|e| format!("cannot start {} threads: {e}", self.threads()))
            })
            .as_ref()
            .map_err(|e| RunError::Pool(e.clone()))?;
        crew.run(f).map_err(|_| Self::nested())
    }

    fn nested() -> RunError {
        RunError::Misuse(
            "with_executor, forward_nchw/forward_nhwc or features called inside with_executor \
             (from its closure or one of its tasks): use the executor it gives you with the core \
             API (Model::forward_with)"
                .into(),
        )
    }

    /// The architecture.
    pub fn config(&self) -> &ArchConfig {
        &self.config
    }

    /// The packed weights (borrowed; `OwnedWeights::from_view` copies them).
    pub fn weights(&self) -> Result<Weights<'_>, RunError> {
        self.store.weights()
    }

    /// A copy of the packed weights (to quantise or repack them).
    pub fn owned_weights(&self) -> Result<OwnedWeights, RunError> {
        Ok(OwnedWeights::from_view(self.weights()?))
    }

    /// The core model over these weights (for the core API directly, e.g.
    /// `Model::forward_observed`).
    pub fn model(&self) -> Result<Model<'_>, RunError> {
        self.store.model(&self.config)
    }

    /// Logits `[N, num_classes]` for an NCHW batch.
    pub fn forward_nchw(&self, x: ArrayView4<'_, f32>) -> Result<Array2<f32>, RunError> {
        self.run(x, Layout::Nchw, false)
    }

    /// Logits `[N, num_classes]` for an NHWC batch.
    pub fn forward_nhwc(&self, x: ArrayView4<'_, f32>) -> Result<Array2<f32>, RunError> {
        self.run(x, Layout::Nhwc, false)
    }

    /// Pooled, normalised features before the head, `[N, dims[3]]`.
    pub fn features(
        &self,
        x: ArrayView4<'_, f32>,
        layout: Layout,
    ) -> Result<Array2<f32>, RunError> {
        self.run(x, layout, true)
    }

    fn run(
        &self,
        x: ArrayView4<'_, f32>,
        layout: Layout,
        features: bool,
    ) -> Result<Array2<f32>, RunError> {
        if self
            .crew
            .get()
            .and_then(|c| c.as_ref().ok())
            .is_some_and(Crew::serving)
        {
            return Err(Self::nested());
        }
        let pool = self.pool()?;
        let cfg = &self.config;
        let (n, c, h, w) = match layout {
            Layout::Nchw => x.dim(),
            Layout::Nhwc => {
                let (n, h, w, c) = x.dim();
                (n, c, h, w)
            }
        };
        let name = match layout {
            Layout::Nchw => "[N, C, H, W]",
            Layout::Nhwc => "[N, H, W, C]",
        };
        if c != cfg.in_chans {
            return Err(InputError::Channels {
                expected: cfg.in_chans,
                found: c,
                layout: name,
                shape: x.shape().to_vec(),
            }
            .into());
        }
        if h < 32 || w < 32 {
            return Err(InputError::TooSmall { h, w }.into());
        }
        let width = if features {
            cfg.dims[3]
        } else {
            cfg.num_classes
        };
        let mut out = Array2::<f32>::zeros((n, width));
        let model = self.model()?;
        let kern = self.kernels;
        let threads = self.threads();
        let one = |exec: &dyn ExecRef, arena: &mut [f32], i: usize, dst: &mut [f32]| {
            let img = x.index_axis(Axis(0), i);
            let hwc: Vec<f32> = match layout {
                Layout::Nchw => img.permuted_axes([1, 2, 0]).iter().copied().collect(),
                Layout::Nhwc => img.iter().copied().collect(),
            };
            exec.forward(&model, kern, &hwc, (h, w), arena, dst, features)
        };
        if n >= threads || threads == 1 {
            // Enough images to keep every thread busy: one image per task, unsplit layers.
            let arena_len = model.arena_len(h, w, 1);
            let rows: Vec<_> = out.axis_iter_mut(Axis(0)).collect();
            pool.install(|| {
                rows.into_par_iter().enumerate().try_for_each_init(
                    || AlignedF32::zeros(arena_len),
                    |arena, (i, mut row)| {
                        let dst = row
                            .as_slice_mut()
                            .expect("rows of a fresh Array2 are contiguous");
                        one(&Serial, arena.as_mut_slice(), i, dst)
                    },
                )
            })?;
        } else {
            // Fewer images than threads: each image's layers split into bands of rows, run
            // by a gang of the pool's threads held for the whole batch.
            let arena_len = model.arena_len(h, w, threads);
            let rows = self.with_executor(|exec| {
                let mut arena = AlignedF32::zeros(arena_len);
                let mut rows = vec![0.0f32; n * width];
                rows.chunks_exact_mut(width)
                    .enumerate()
                    .try_for_each(|(i, dst)| one(exec, arena.as_mut_slice(), i, dst))
                    .map(|()| rows)
            })??;
            out.as_slice_mut()
                .expect("a fresh Array2 is contiguous")
                .copy_from_slice(&rows);
        }
        Ok(out)
    }
}

/// A forward pass through some executor (an object-safe face of the generic core API).
pub(crate) trait ExecRef: Sync {
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        model: &Model<'_>,
        kern: Kernels,
        hwc: &[f32],
        hw: (usize, usize),
        arena: &mut [f32],
        dst: &mut [f32],
        features: bool,
    ) -> Result<(), RunError>;
}

impl<E: Executor> ExecRef for E {
    fn forward(
        &self,
        model: &Model<'_>,
        kern: Kernels,
        hwc: &[f32],
        (h, w): (usize, usize),
        arena: &mut [f32],
        dst: &mut [f32],
        features: bool,
    ) -> Result<(), RunError> {
        if features {
            model.forward_features(self, kern, hwc, h, w, arena, dst)?;
        } else {
            model.forward_with(self, kern, hwc, h, w, arena, dst)?;
        }
        Ok(())
    }
}
