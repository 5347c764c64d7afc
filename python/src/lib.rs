//! `quadra._quadra`: the Rust half of the `quadra` Python package. The Python half
//! (`python/quadra/__init__.py`) reads what PyTorch and the user hand it (a `state_dict`,
//! a config given as a dict, a path or a preset name) into plain arrays and strings;
//! everything else — conversion, the checks, running, measuring — is `quadra-cpu` and
//! `quadra-bench`, the same code the `quadra` CLI and the `quadra-bench` binary run.
//!
//! Every long call (conversion, `run`, measuring) releases the GIL. Errors are the crate
//! errors' messages, raised as `quadra.Error` subclasses (see [`to_py`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use numpy::ndarray::Ix4;
use numpy::{IntoPyArray, PyArray2, PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use quadra_core::Dtype;
use quadra_cpu::checkpoint::{CheckpointError, StateDict, Tensor};
use quadra_cpu::config::{ArchConfig, ConfigError};
use quadra_cpu::convert::{self, Conversion};
use quadra_cpu::preprocess::Preprocess;
use quadra_cpu::{InputError, Layout, Network, RunError};

create_exception!(
    quadra,
    Error,
    PyException,
    "Every error quadra raises is a subclass of this."
);
create_exception!(
    quadra,
    FormatError,
    Error,
    "Weights, a config, a model file or an image that quadra cannot read, or that do not \
     fit the architecture (the message names the file or tensor, what was expected and \
     what was found)."
);
create_exception!(
    quadra,
    ShapeError,
    Error,
    "An input array whose shape, channels or size does not fit the model or the session."
);
create_exception!(
    quadra,
    ArgumentError,
    Error,
    "An argument quadra cannot use: an unknown dtype, layout or preset, a thread count or \
     core choice this machine cannot satisfy, a cosine target out of range."
);
create_exception!(
    quadra,
    IoError,
    Error,
    "A file that could not be read or written (the message names it)."
);

/// The Python exception for a crate error, with the CLI's message.
fn to_py(e: RunError) -> PyErr {
    let msg = e.to_string();
    match &e {
        RunError::Input(InputError::Other(_)) => ArgumentError::new_err(msg),
        RunError::Input(_) | RunError::Core(_) => ShapeError::new_err(msg),
        RunError::Checkpoint(c) => checkpoint_err(c, msg),
        RunError::Model { .. } => FormatError::new_err(msg),
        RunError::Io { .. } => IoError::new_err(msg),
        RunError::Dispatch(_)
        | RunError::Threads { .. }
        | RunError::Cores { .. }
        | RunError::Misuse(_) => ArgumentError::new_err(msg),
        _ => Error::new_err(msg),
    }
}

fn checkpoint_err(e: &CheckpointError, msg: String) -> PyErr {
    match e {
        CheckpointError::Io { .. } => IoError::new_err(msg),
        _ => FormatError::new_err(msg),
    }
}

fn config_err(e: ConfigError, source: &str) -> PyErr {
    match e {
        ConfigError::UnknownPreset(_) => ArgumentError::new_err(e.to_string()),
        _ => FormatError::new_err(format!("{source}: {e}")),
    }
}

/// A Python object from JSON text (reports, architectures and tables are built as
/// `serde_json` values, the same the CLI writes).
fn from_json<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (v.to_string(),))
}

/// `x` as a C-contiguous float32 array: itself when it already is one (no copy),
/// otherwise `numpy.ascontiguousarray(x, dtype=float32)`.
fn f32_array<'py>(x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    if let Ok(a) = x.cast::<PyArrayDyn<f32>>() {
        if a.is_c_contiguous() {
            return Ok(a.clone());
        }
    }
    let np = x.py().import("numpy")?;
    let a = np.call_method1("ascontiguousarray", (x, "float32"))?;
    Ok(a.cast_into::<PyArrayDyn<f32>>()?)
}

fn layout(name: &str) -> PyResult<Layout> {
    match name.to_ascii_lowercase().as_str() {
        "nchw" => Ok(Layout::Nchw),
        "nhwc" => Ok(Layout::Nhwc),
        _ => Err(ArgumentError::new_err(format!(
            "unknown layout '{name}': use \"nchw\" (PyTorch's) or \"nhwc\""
        ))),
    }
}

fn dtype(name: &str) -> PyResult<Dtype> {
    Dtype::from_name(name).ok_or_else(|| {
        ArgumentError::new_err(format!(
            "unknown dtype '{name}': use f32, f16, int8 (weight-only) or w8a8 (int8 compute)"
        ))
    })
}

/// An architecture config: `kind` is `preset` (a name) or `json` (the README's schema),
/// `source` names it in errors.
fn config(kind: &str, text: &str, source: &str) -> PyResult<ArchConfig> {
    match kind {
        "preset" => ArchConfig::preset(text).map_err(|e| config_err(e, source)),
        _ => ArchConfig::from_json(text).map_err(|e| config_err(e, source)),
    }
}

/// Where a model's bytes are: in memory (converted, or loaded from bytes) or a file
/// (mapped by every network built from it).
enum Origin {
    Bytes(Arc<Vec<u8>>),
    File(PathBuf),
}

/// A QuadraNet model, ready to run: converted in memory or loaded from a `.qnet` file.
#[pyclass(module = "quadra", frozen)]
struct Model {
    origin: Origin,
    /// The file or label, in messages.
    name: String,
    /// The network on one thread per chosen core (`threads=None`).
    base: Arc<Network>,
    /// Networks on other thread counts, built on first use.
    others: Mutex<Vec<(usize, Arc<Network>)>>,
    /// The conversion report (JSON), for converted models.
    report: Option<serde_json::Value>,
}

impl Model {
    fn build(
        origin: Origin,
        name: String,
        report: Option<serde_json::Value>,
    ) -> Result<Self, RunError> {
        let base = Arc::new(Self::network(&origin, &name, 0)?);
        Ok(Model {
            origin,
            name,
            base,
            others: Mutex::new(Vec::new()),
            report,
        })
    }

    fn network(origin: &Origin, name: &str, threads: usize) -> Result<Network, RunError> {
        let net = match origin {
            Origin::Bytes(b) => Network::from_bytes(b, name)?,
            Origin::File(p) => Network::load(p)?,
        };
        net.with_threads(threads)
    }

    /// The network for `threads` (None: one per chosen core).
    fn net(&self, threads: Option<usize>) -> Result<Arc<Network>, RunError> {
        let Some(n) = threads else {
            return Ok(self.base.clone());
        };
        let mut others = self.others.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, net)) = others.iter().find(|(t, _)| *t == n) {
            return Ok(net.clone());
        }
        let net = Arc::new(Self::network(&self.origin, &self.name, n)?);
        others.push((n, net.clone()));
        Ok(net)
    }

    fn bytes(&self) -> Result<Arc<Vec<u8>>, RunError> {
        match &self.origin {
            Origin::Bytes(b) => Ok(b.clone()),
            Origin::File(p) => quadra_cpu::file::read_file(p)
                .map(Arc::new)
                .map_err(|source| RunError::Io {
                    path: p.display().to_string(),
                    source,
                }),
        }
    }

    fn stored_dtype(&self) -> Result<Dtype, RunError> {
        Ok(self.base.weights()?.mats.dtype())
    }
}

/// An input size argument: None (224), an int (square) or `(h, w)`.
fn size_arg(arg: Option<&Bound<'_, PyAny>>) -> PyResult<(usize, usize)> {
    let hw = match arg {
        None => (224, 224),
        Some(a) => match a.extract::<usize>() {
            Ok(s) => (s, s),
            Err(_) => a.extract::<(usize, usize)>().map_err(|_| {
                ArgumentError::new_err("input_size: give an int (square) or (height, width)")
            })?,
        },
    };
    size(hw)
}

fn size(input_size: (usize, usize)) -> PyResult<(usize, usize)> {
    let (h, w) = input_size;
    if h < 32 || w < 32 || h > quadra_cpu::MAX_INPUT_SIDE || w > quadra_cpu::MAX_INPUT_SIDE {
        return Err(ShapeError::new_err(format!(
            "input size {h}x{w}: QuadraNet downsamples by 32, so each side must be 32..={}",
            quadra_cpu::MAX_INPUT_SIDE
        )));
    }
    Ok((h, w))
}

#[pymethods]
impl Model {
    /// Logits `[N, num_classes]` of a float32 batch `[N, C, H, W]` (`layout="nchw"`, as
    /// PyTorch holds it) or `[N, H, W, C]` (`"nhwc"`). A C-contiguous float32 array is
    /// read in place; anything else is converted first. The GIL is released while it runs.
    #[pyo3(signature = (x, *, threads=None, layout="nchw"))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        threads: Option<usize>,
        layout: &str,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let lay = self::layout(layout)?;
        let a = f32_array(x)?;
        if a.ndim() != 4 {
            return Err(ShapeError::new_err(format!(
                "input has shape {:?}: a batch is 4-D ({})",
                a.shape(),
                if lay == Layout::Nchw {
                    "[N, C, H, W]"
                } else {
                    "[N, H, W, C]"
                }
            )));
        }
        let net = self.net(threads).map_err(to_py)?;
        let ro = a.readonly();
        let view = ro
            .as_array()
            .into_dimensionality::<Ix4>()
            .map_err(|e| ShapeError::new_err(e.to_string()))?;
        let y = py
            .detach(|| match lay {
                Layout::Nchw => net.forward_nchw(view),
                _ => net.forward_nhwc(view),
            })
            .map_err(to_py)?;
        Ok(y.into_pyarray(py))
    }

    /// A session for `batch` images of `h x w`: its buffers are allocated once and reused
    /// by every `Session.run` (threads=None: one per chosen core).
    #[pyo3(signature = (h, w, *, batch=1, threads=None))]
    fn session(
        &self,
        h: usize,
        w: usize,
        batch: usize,
        threads: Option<usize>,
    ) -> PyResult<Session> {
        let s = quadra_cpu::Session::with_threads(&self.base, h, w, batch, threads.unwrap_or(0))
            .map_err(to_py)?;
        Ok(Session {
            chans: self.base.config().in_chans,
            classes: self.base.config().num_classes,
            inner: s,
        })
    }

    /// Writes the `.qnet` model file to `path` atomically (a new file renamed over the
    /// old one, so a process that has the old file mapped keeps running on it).
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let bytes = self.bytes().map_err(to_py)?;
        py.detach(|| quadra_cpu::file::write_atomic(&path, &bytes))
            .map_err(|e| IoError::new_err(format!("cannot write {}: {e}", path.display())))
    }

    /// The `.qnet` model file's bytes.
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = self.bytes().map_err(to_py)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Writes `dir/model.rs` and `dir/model.qnet`: the model compiled into a no-heap
    /// firmware build (`input_size` sizes its arena constant), as `quadra convert
    /// --emit-rust` does.
    #[pyo3(signature = (dir, *, input_size=None))]
    fn emit_rust(&self, dir: PathBuf, input_size: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let input = size_arg(input_size)?;
        let bytes = self.bytes().map_err(to_py)?;
        let meta: serde_json::Value = serde_json::from_str(self.base.meta()).unwrap_or_default();
        let source = meta["source"].as_str().unwrap_or(&self.name).to_string();
        let dt = self.stored_dtype().map_err(to_py)?;
        quadra_cpu::emit::write_module(&dir, self.base.config(), &bytes, input, &source, dt)
            .map_err(|e| IoError::new_err(e.to_string()))
    }

    /// The architecture: in_chans, num_classes, dims and each stage's blocks (the JSON
    /// config schema `quadra convert --config` reads).
    #[getter]
    fn architecture<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let v: serde_json::Value = serde_json::from_str(&self.base.config().to_json())
            .map_err(|e| Error::new_err(e.to_string()))?;
        from_json(py, &v)
    }

    /// How the matrices are stored: "f32", "f16", "int8" or "w8a8".
    #[getter]
    fn dtype(&self) -> PyResult<&'static str> {
        Ok(self.stored_dtype().map_err(to_py)?.name())
    }

    /// Number of parameters.
    #[getter]
    fn parameters(&self) -> usize {
        self.base.config().arch().params()
    }

    /// The model file's metadata (source, dtype, converter, and what was merged in).
    #[getter]
    fn meta<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let v: serde_json::Value = serde_json::from_str(self.base.meta()).unwrap_or_default();
        from_json(py, &v)
    }

    /// The conversion report (a dict) of a model made by `quadra.convert`; None for a
    /// loaded model.
    #[getter]
    fn report<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.report.as_ref().map(|r| from_json(py, r)).transpose()
    }

    /// FLOPs of one image at `input_size` (a multiply-add is 2).
    #[pyo3(signature = (input_size=None))]
    fn flops(&self, input_size: Option<&Bound<'_, PyAny>>) -> PyResult<u64> {
        let (h, w) = size_arg(input_size)?;
        Ok(2 * self.base.config().arch().macs(h, w))
    }

    /// Bytes of the arena (activations and scratch) one image at `input_size` needs on
    /// `threads` threads: all the memory a run takes besides the weights.
    #[pyo3(signature = (input_size=None, *, threads=1))]
    fn arena_bytes(
        &self,
        input_size: Option<&Bound<'_, PyAny>>,
        threads: usize,
    ) -> PyResult<usize> {
        let (h, w) = size_arg(input_size)?;
        let dt = self.stored_dtype().map_err(to_py)?;
        let plan = self.base.config().arch().plan_for(h, w, threads.max(1), dt);
        Ok(plan.arena_len() * 4)
    }

    /// The kernel path, threads and cores this model runs with (threads=None: one per
    /// chosen core).
    #[pyo3(signature = (*, threads=None))]
    fn describe(&self, threads: Option<usize>) -> PyResult<String> {
        Ok(self.net(threads).map_err(to_py)?.describe())
    }

    fn __repr__(&self) -> String {
        let c = self.base.config();
        format!(
            "quadra.Model({}: {} classes, dims {:?}, {} parameters, {})",
            self.name,
            c.num_classes,
            c.dims,
            c.arch().params(),
            self.stored_dtype().map_or("?", |d| d.name())
        )
    }
}

/// A session: one input size and batch, buffers allocated once, threads of its own.
#[pyclass(module = "quadra")]
struct Session {
    inner: quadra_cpu::Session,
    chans: usize,
    classes: usize,
}

#[pymethods]
impl Session {
    /// Logits `[batch, num_classes]` of `x` (`[batch, C, H, W]` for layout "nchw",
    /// `[batch, H, W, C]` for "nhwc"), written into `out` (float32, C-contiguous,
    /// `[batch, num_classes]`) when given, else into a new array. The GIL is released
    /// while it runs; nothing is allocated but the returned array.
    #[pyo3(signature = (x, *, out=None, layout="nchw"))]
    fn run<'py>(
        &mut self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        out: Option<Bound<'py, PyAny>>,
        layout: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let lay = self::layout(layout)?;
        let a = f32_array(x)?;
        let (h, w) = self.inner.input_size();
        let b = self.inner.batch();
        let want: [usize; 4] = if lay == Layout::Nchw {
            [b, self.chans, h, w]
        } else {
            [b, h, w, self.chans]
        };
        if a.shape() != want {
            return Err(ShapeError::new_err(format!(
                "input has shape {:?}, the session expects {want:?} ({} layout)",
                a.shape(),
                layout.to_ascii_lowercase()
            )));
        }
        let y = match out {
            Some(o) => {
                let Ok(arr) = o.cast::<PyArray2<f32>>() else {
                    return Err(ShapeError::new_err(format!(
                        "out must be a float32 array of shape [{b}, {}]",
                        self.classes
                    )));
                };
                if arr.shape() != [b, self.classes] || !arr.is_c_contiguous() {
                    return Err(ShapeError::new_err(format!(
                        "out has shape {:?}{}; it must be a C-contiguous float32 array of shape [{b}, {}]",
                        arr.shape(),
                        if arr.is_c_contiguous() { "" } else { " (not C-contiguous)" },
                        self.classes
                    )));
                }
                arr.clone()
            }
            None => PyArray2::<f32>::zeros(py, [b, self.classes], false),
        };
        {
            let ro = a.readonly();
            let src = ro
                .as_slice()
                .map_err(|e| ShapeError::new_err(e.to_string()))?;
            let mut rw = y.readwrite();
            let dst = rw
                .as_slice_mut()
                .map_err(|e| ShapeError::new_err(e.to_string()))?;
            let inner = &mut self.inner;
            py.detach(|| -> Result<(), RunError> {
                dst.copy_from_slice(inner.run(src, lay)?);
                Ok(())
            })
            .map_err(to_py)?;
        }
        Ok(y.into_any())
    }

    /// Seconds of each of `iters` `Session::run` calls on `x`, timed in Rust (no Python
    /// between the calls): the baseline `python/benches/evidence.py` measures the Python
    /// call's overhead against, on the same session, buffers and input.
    #[pyo3(signature = (x, iters, *, layout="nchw"))]
    fn _time_rust(
        &mut self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        iters: usize,
        layout: &str,
    ) -> PyResult<Vec<f64>> {
        let lay = self::layout(layout)?;
        let a = f32_array(x)?;
        let ro = a.readonly();
        let src = ro
            .as_slice()
            .map_err(|e| ShapeError::new_err(e.to_string()))?;
        let inner = &mut self.inner;
        py.detach(|| -> Result<Vec<f64>, RunError> {
            let mut ts = Vec::with_capacity(iters);
            for _ in 0..iters {
                let t = std::time::Instant::now();
                inner.run(src, lay)?;
                ts.push(t.elapsed().as_secs_f64());
            }
            Ok(ts)
        })
        .map_err(to_py)
    }

    /// The kernel path, threads, cores and band split of this session.
    fn describe(&self) -> String {
        self.inner.describe()
    }

    /// `(height, width)` of the images it takes.
    #[getter]
    fn input_size(&self) -> (usize, usize) {
        self.inner.input_size()
    }

    /// Images per run.
    #[getter]
    fn batch(&self) -> usize {
        self.inner.batch()
    }

    /// Threads it runs on.
    #[getter]
    fn threads(&self) -> usize {
        self.inner.threads()
    }
}

/// Reads a state_dict: a safetensors path, or `[(name, float32 array, dtype name)]`.
fn state_dict(weights: &Bound<'_, PyAny>, source: &str) -> PyResult<StateDict> {
    if let Ok(path) = weights.extract::<PathBuf>() {
        return StateDict::load(&path).map_err(|e| {
            let msg = e.to_string();
            checkpoint_err(&e, msg)
        });
    }
    let items: Vec<(String, Bound<'_, PyAny>, String)> = weights.extract()?;
    let mut tensors = BTreeMap::new();
    for (name, arr, dt) in items {
        let dtype = match dt.as_str() {
            "float32" => safetensors::Dtype::F32,
            "float16" => safetensors::Dtype::F16,
            "bfloat16" => safetensors::Dtype::BF16,
            "float64" => safetensors::Dtype::F64,
            other => {
                return Err(FormatError::new_err(format!(
                    "{source}: tensor '{name}' is {other}; supported dtypes are float32, float16, bfloat16 (and float64 arrays, read as float32)"
                )))
            }
        };
        let a = f32_array(&arr)?;
        let data = a
            .readonly()
            .as_slice()
            .map_err(|e| ShapeError::new_err(e.to_string()))?
            .to_vec();
        tensors.insert(
            name,
            Tensor {
                shape: a.shape().to_vec(),
                dtype,
                data,
            },
        );
    }
    Ok(StateDict::from_tensors(source, tensors))
}

/// The conversion behind `quadra.convert` (which see).
#[pyfunction]
#[pyo3(signature = (weights, source, config_kind, config_text, config_source, dtype_name, min_cosine, check_input, input_size, meta))]
#[allow(clippy::too_many_arguments)]
fn _convert(
    py: Python<'_>,
    weights: &Bound<'_, PyAny>,
    source: String,
    config_kind: &str,
    config_text: &str,
    config_source: &str,
    dtype_name: &str,
    min_cosine: Option<f64>,
    check_input: Option<&Bound<'_, PyAny>>,
    input_size: (usize, usize),
    meta: Option<String>,
) -> PyResult<Model> {
    let dt = dtype(dtype_name)?;
    let cfg = config(config_kind, config_text, config_source)?;
    if let Some(t) = min_cosine {
        if dt != Dtype::W8A8 {
            return Err(ArgumentError::new_err(
                "min_cosine chooses which blocks of a w8a8 model stay f32: give dtype=\"w8a8\"",
            ));
        }
        if !(t > 0.0 && t <= 1.0) {
            return Err(ArgumentError::new_err(format!(
                "min_cosine {t} is not a cosine target in (0, 1]"
            )));
        }
    }
    let input = size(input_size)?;
    let extra = match meta {
        None => None,
        Some(text) => match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::Object(o)) => Some(o),
            _ => return Err(ArgumentError::new_err("meta must be a dict of JSON values")),
        },
    };
    let sd = state_dict(weights, &source)?;
    // The check inputs: given, or random at the input size (16 for the mixed-precision
    // search, which must hold on inputs it has not seen; 4 otherwise), as the CLI does.
    let x = match check_input {
        Some(x) => {
            let a = f32_array(x)?;
            let arr = a
                .readonly()
                .as_array()
                .into_dimensionality::<Ix4>()
                .map_err(|_| {
                    ShapeError::new_err(format!(
                        "check_input has shape {:?}: it must be a batch [N, C, H, W]",
                        a.shape()
                    ))
                })?
                .to_owned();
            Some((arr, "check_input"))
        }
        None if dt != Dtype::F32 => Some((
            convert::check_inputs(
                if min_cosine.is_some() { 16 } else { 4 },
                cfg.in_chans,
                input,
            ),
            "random inputs",
        )),
        None => None,
    };
    let (c, acc) = py
        .detach(|| -> Result<_, RunError> {
            let mut c = convert::convert(cfg, &sd, dt)?;
            if let Some(e) = extra {
                c.merge_meta(e);
            }
            let mut acc = None;
            if let (Some((x, _)), true) = (&x, dt != Dtype::F32) {
                if let Some(t) = min_cosine {
                    c.keep_f32_until(x, t)?;
                }
                acc = Some(c.accuracy(x)?);
            }
            Ok((c, acc))
        })
        .map_err(to_py)?;
    let report = report(&c, &sd, acc, x.as_ref().map(|(_, s)| *s));
    let bytes = c.to_qnet().map_err(to_py)?;
    Model::build(Origin::Bytes(Arc::new(bytes)), source, Some(report)).map_err(to_py)
}

/// The conversion report: what `quadra convert` prints, as data.
fn report(
    c: &Conversion,
    sd: &StateDict,
    acc: Option<convert::Agreement>,
    inputs: Option<&str>,
) -> serde_json::Value {
    let tensors: Vec<serde_json::Value> = c
        .tensors
        .iter()
        .map(|t| serde_json::json!({"name": t.name, "max_abs": t.error.max_abs, "rel_rms": t.error.rel_rms}))
        .collect();
    let worst = c.tensors.iter().map(|t| t.error.rel_rms).reduce(f32::max);
    serde_json::json!({
        "source": sd.source,
        "stripped_prefix": sd.stripped_prefix,
        "tensors_read": sd.tensors.len(),
        "parameters": c.config.arch().params(),
        "dtype": c.dtype.name(),
        "quantisation": tensors,
        "worst_rel_rms": worst,
        "units": c.units(),
        "kept_f32": c.kept_f32.iter().map(|&u| convert::unit_name(&c.config, u)).collect::<Vec<_>>(),
        "accuracy": acc.map(|a| serde_json::json!({
            "inputs": inputs,
            "images": a.images,
            // NaN has no JSON form: None stands for it.
            "mean_cosine": a.mean_cosine.is_finite().then_some(a.mean_cosine),
            "min_cosine": a.min_cosine.is_finite().then_some(a.min_cosine),
            "top1_agree": a.top1_agree,
        })),
    })
}

/// `quadra.load`: a `.qnet` file (mapped) or its bytes.
#[pyfunction]
fn _load(model: &Bound<'_, PyAny>) -> PyResult<Model> {
    if let Ok(b) = model.cast::<PyBytes>() {
        let bytes = b.as_bytes().to_vec();
        return Model::build(Origin::Bytes(Arc::new(bytes)), "model bytes".into(), None)
            .map_err(to_py);
    }
    let path: PathBuf = model.extract().map_err(|_| {
        ArgumentError::new_err("load takes a path (str or os.PathLike) or the model's bytes")
    })?;
    let name = path.display().to_string();
    Model::build(Origin::File(path), name, None).map_err(to_py)
}

/// `quadra.preprocess`: torchvision's Resize + CenterCrop + ToTensor + Normalize on an
/// image file, its bytes, or an `[H, W, 3]` uint8 array; `[1, 3, h, w]` float32.
#[pyfunction]
#[pyo3(signature = (image, size, resize, mean, std))]
fn _preprocess<'py>(
    py: Python<'py>,
    image: &Bound<'py, PyAny>,
    size: (usize, usize),
    resize: Option<usize>,
    mean: [f32; 3],
    std: [f32; 3],
) -> PyResult<Bound<'py, numpy::PyArray4<f32>>> {
    let (ch, cw) = size;
    let prep = Preprocess {
        resize: resize.unwrap_or(ch.max(cw) * 8 / 7),
        crop: (ch, cw),
        mean,
        std,
    };
    let decoded = |r: Result<(Vec<u8>, usize, usize), RunError>| {
        r.map_err(|e| match e {
            RunError::Input(InputError::Other(m)) => FormatError::new_err(m),
            e => to_py(e),
        })
    };
    let (rgb, w, h) = if let Ok(b) = image.cast::<PyBytes>() {
        decoded(quadra_cpu::preprocess::decode_rgb8(
            b.as_bytes(),
            "image bytes",
        ))?
    } else if let Ok(p) = image.extract::<PathBuf>() {
        decoded(quadra_cpu::preprocess::load_rgb8(&p))?
    } else if let Ok(a) = image.cast::<numpy::PyArray3<u8>>() {
        let s = a.shape();
        if s[2] != 3 {
            return Err(ShapeError::new_err(format!(
                "image array has shape {s:?}: an RGB image is [H, W, 3] uint8"
            )));
        }
        let (h, w) = (s[0], s[1]);
        (
            a.to_vec().map_err(|e| ShapeError::new_err(e.to_string()))?,
            w,
            h,
        )
    } else {
        return Err(ArgumentError::new_err(
            "image must be a path, the file's bytes, or an [H, W, 3] uint8 numpy array",
        ));
    };
    let x = py.detach(|| prep.rgb8(&rgb, w, h)).map_err(to_py)?;
    let arr = numpy::ndarray::Array4::from_shape_vec((1, 3, ch, cw), x)
        .map_err(|e| Error::new_err(e.to_string()))?;
    Ok(arr.into_pyarray(py))
}

/// Latency statistics (ms) of sorted durations in seconds.
fn stats(sorted: &[f64]) -> serde_json::Value {
    use quadra_bench::lut::{mean, percentile};
    serde_json::json!({
        "median": percentile(sorted, 0.5) * 1e3,
        "mean": mean(sorted) * 1e3,
        "p10": percentile(sorted, 0.1) * 1e3,
        "p90": percentile(sorted, 0.9) * 1e3,
        "min": sorted.first().map(|t| t * 1e3),
    })
}

/// `quadra.benchmark` and `quadra.latency_table`: measures `target` (a Model, or a config
/// `(kind, text, source)` run with random weights) as the `quadra-bench` binary does.
#[pyfunction]
#[pyo3(signature = (target, threads, iters, warmup, input_size, candidates))]
fn _measure<'py>(
    py: Python<'py>,
    target: &Bound<'py, PyAny>,
    threads: usize,
    iters: usize,
    warmup: usize,
    input_size: (usize, usize),
    candidates: bool,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let (h, w) = size(input_size)?;
    if iters == 0 {
        return Err(ArgumentError::new_err("iters must be at least 1"));
    }
    let (net, name) = if let Ok(m) = target.cast::<Model>() {
        let m = m.get();
        (m.net(Some(threads)).map_err(to_py)?, m.name.clone())
    } else {
        let (kind, text, source): (String, String, String) = target.extract()?;
        let cfg = config(&kind, &text, &source)?;
        let wts = quadra_bench::random_weights(cfg.arch().weights_len(), 7);
        let net = Network::new(cfg, wts)
            .and_then(|n| n.with_threads(threads))
            .map_err(to_py)?;
        (Arc::new(net), format!("{source} (random weights)"))
    };
    let opts = quadra_bench::measure::Opts {
        input_size: (h, w),
        iters,
        warmup,
        candidates,
    };
    let m = py
        .detach(|| quadra_bench::measure::measure(&opts, &net))
        .map_err(to_py)?;
    let arch = net.config().arch();
    let flops = 2 * arch.macs(h, w);
    let median = quadra_bench::lut::percentile(&m.times, 0.5);
    let isa = net.kernels().isa();
    let peak = quadra_bench::peak::fma_peak_gflops(isa) * net.threads() as f64;
    let gflops = flops as f64 / median / 1e9;
    let bench = serde_json::json!({
        "model": name,
        "input_size": [h, w],
        "threads": net.threads(),
        "kernels": net.kernels().describe(),
        "dtype": net.weights().map_err(to_py)?.mats.dtype().name(),
        "runs": m.times.len(),
        "latency_ms": stats(&m.times),
        "session_ms": stats(&m.session),
        "images_per_s": 1.0 / median,
        "flops": flops,
        "gflops_per_s": gflops,
        "fma_peak_gflops_per_s": peak,
        "fraction_of_peak": gflops / peak,
        "arena_bytes": m.plan.arena_len() * 4,
        "session": m.placement.describe,
    });
    let table = quadra_bench::lut::table(&arch, (h, w), &m, candidates);
    Ok((
        from_json(py, &bench)?,
        from_json(py, &serde_json::Value::Object(table))?,
    ))
}

#[pymodule]
fn _quadra(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("Error", py.get_type::<Error>())?;
    m.add("FormatError", py.get_type::<FormatError>())?;
    m.add("ShapeError", py.get_type::<ShapeError>())?;
    m.add("ArgumentError", py.get_type::<ArgumentError>())?;
    m.add("IoError", py.get_type::<IoError>())?;
    m.add_class::<Model>()?;
    m.add_class::<Session>()?;
    m.add_function(wrap_pyfunction!(_convert, m)?)?;
    m.add_function(wrap_pyfunction!(_load, m)?)?;
    m.add_function(wrap_pyfunction!(_preprocess, m)?)?;
    m.add_function(wrap_pyfunction!(_measure, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("presets", quadra_cpu::config::preset_names())?;
    Ok(())
}
