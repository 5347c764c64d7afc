//! Converting a checked state_dict into a model: pack, quantise, compare against f32, and
//! (for w8a8) choose which units stay f32. The `quadra convert` command and the Python
//! package both call this and only differ in how they show the report.
//!
//! ```no_run
//! use quadra_cpu::{checkpoint::StateDict, config::ArchConfig, convert};
//! let sd = StateDict::load("model.safetensors")?;
//! let mut c = convert::convert(ArchConfig::preset("quadranet25-xxs")?, &sd, quadra_core::Dtype::W8A8)?;
//! let x = convert::check_inputs(16, c.config.in_chans, (224, 224));
//! let kept = c.keep_f32_until(&x, 0.999)?; // units kept in f32
//! let acc = c.accuracy(&x)?;
//! println!("{} f32 units; worst cosine {:.6}", kept.len(), acc.min_cosine);
//! std::fs::write("model.qnet", c.to_qnet()?)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use ndarray::{Array2, Array4};
use quadra_core::compare::cosine;
use quadra_core::Dtype;

use crate::checkpoint::StateDict;
use crate::config::ArchConfig;
use crate::weights::{OwnedWeights, TensorQuantError};
use crate::{InputError, Network, RunError};

/// A converted model: the f32 weights it came from, the weights as stored, and what the
/// conversion cost.
#[derive(Clone)]
pub struct Conversion {
    /// The architecture.
    pub config: ArchConfig,
    /// The checkpoint's weights, packed, in f32.
    pub f32: OwnedWeights,
    /// The weights as the model stores them (`dtype`).
    pub stored: OwnedWeights,
    /// Storage type asked for.
    pub dtype: Dtype,
    /// Quantisation error of every quantised tensor (empty for f32).
    pub tensors: Vec<TensorQuantError>,
    /// Units ([`unit_name`]) kept in f32 by [`Conversion::keep_f32_until`], ascending.
    pub kept_f32: Vec<usize>,
    /// The model file's metadata (a JSON object): source, dtype, converter, and whatever
    /// [`Conversion::merge_meta`] added.
    pub meta: serde_json::Map<String, serde_json::Value>,
}

/// Logits of a converted model against its f32 weights on the same inputs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Agreement {
    /// Images compared.
    pub images: usize,
    /// Mean cosine of the logits (NaN if any is NaN).
    pub mean_cosine: f64,
    /// Worst cosine (NaN if any is NaN).
    pub min_cosine: f64,
    /// Images whose top-1 class is the same.
    pub top1_agree: usize,
}

/// Index of the largest value (the first of equals; NaN is never the largest).
pub fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold(0, |best, (i, x)| if *x > v[best] { i } else { best })
}

/// `n` deterministic pseudo-random images `[n, chans, h, w]` in [-2, 2) (the spread of
/// normalised ImageNet pixels), for checking a conversion when no real inputs are given.
pub fn check_inputs(n: usize, chans: usize, (h, w): (usize, usize)) -> Array4<f32> {
    let mut s = 0x9E37_79B9u32;
    Array4::from_shape_fn((n, chans, h, w), |_| {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        (s as f32 / u32::MAX as f32) * 4.0 - 2.0
    })
}

/// Checks `sd` against `config`, packs it, and stores the matrices as `dtype` (int8 and
/// w8a8: symmetric per output channel, every unit int8 until
/// [`Conversion::keep_f32_until`] says otherwise).
pub fn convert(config: ArchConfig, sd: &StateDict, dtype: Dtype) -> Result<Conversion, RunError> {
    let arch = config.arch();
    let f32w = sd.pack(&arch)?;
    let (stored, tensors) = f32w.quantize(&arch, dtype)?;
    let mut meta = serde_json::Map::new();
    // The file's name, not where it was on the converting machine.
    let source = std::path::Path::new(&sd.source)
        .file_name()
        .map_or(sd.source.clone(), |n| n.to_string_lossy().to_string());
    meta.insert("source".into(), source.into());
    meta.insert("dtype".into(), dtype.name().into());
    meta.insert(
        "converter".into(),
        concat!("quadra ", env!("CARGO_PKG_VERSION")).into(),
    );
    Ok(Conversion {
        config,
        f32: f32w,
        stored,
        dtype,
        tensors,
        kept_f32: Vec::new(),
        meta,
    })
}

fn threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(crate::MAX_THREADS)
}

/// Logits of `weights` on `x` against the f32 logits `yf`.
fn agreement(
    yf: &Array2<f32>,
    config: &ArchConfig,
    weights: &OwnedWeights,
    x: &Array4<f32>,
) -> Result<Agreement, RunError> {
    let q = Network::new(config.clone(), weights.clone())?.with_threads(threads())?;
    let yq = q.forward_nchw(x.view())?;
    let mut cos = Vec::new();
    let mut agree = 0;
    for (a, b) in yf.outer_iter().zip(yq.outer_iter()) {
        let (a, b) = (a.to_vec(), b.to_vec());
        cos.push(cosine(&a, &b));
        agree += (argmax(&a) == argmax(&b)) as usize;
    }
    let mean = cos.iter().sum::<f64>() / cos.len().max(1) as f64;
    // NaN-aware: a NaN cosine is the minimum.
    let min = cos.iter().copied().fold(1.0, |m: f64, c| {
        if c.is_nan() || m.is_nan() {
            f64::NAN
        } else {
            m.min(c)
        }
    });
    Ok(Agreement {
        images: cos.len(),
        mean_cosine: mean,
        min_cosine: min,
        top1_agree: agree,
    })
}

/// Name of unit `i`: `stages.{s}.{b}` of quadratic block `i` (identity blocks are not
/// counted); the unit after the last block is the stem, downsample and head layers.
pub fn unit_name(config: &ArchConfig, i: usize) -> String {
    let mut n = 0;
    for (s, st) in config.blocks.iter().enumerate() {
        for (b, spec) in st.iter().enumerate() {
            if spec.is_identity() {
                continue;
            }
            if n == i {
                return format!("stages.{s}.{b}");
            }
            n += 1;
        }
    }
    "stem+downsample+head".into()
}

impl Conversion {
    /// Number of units [`Conversion::keep_f32_until`] chooses among: the quadratic
    /// blocks, and the stem, downsample and head layers together.
    pub fn units(&self) -> usize {
        self.config.arch().quadratic_blocks() + 1
    }

    /// The stored model's logits against the f32 model's on `x` (`[N, C, H, W]`).
    pub fn accuracy(&self, x: &Array4<f32>) -> Result<Agreement, RunError> {
        let yf = self.f32_logits(x)?;
        agreement(&yf, &self.config, &self.stored, x)
    }

    fn f32_logits(&self, x: &Array4<f32>) -> Result<Array2<f32>, RunError> {
        let f = Network::new(self.config.clone(), self.f32.clone())?.with_threads(threads())?;
        f.forward_nchw(x.view())
    }

    /// For w8a8: keeps the fewest, most sensitive units in f32 such that the worst logits
    /// cosine against f32 on `x` is at least `target`, and stores that model. A unit's
    /// sensitivity is the cosine lost when it alone is int8. Returns the units kept
    /// (also in [`Conversion::kept_f32`]); see [`unit_name`].
    pub fn keep_f32_until(&mut self, x: &Array4<f32>, target: f64) -> Result<Vec<usize>, RunError> {
        if self.dtype != Dtype::W8A8 {
            return Err(RunError::Misuse(format!(
                "a minimum cosine chooses which blocks of a w8a8 model stay f32: the dtype is {}, not w8a8",
                self.dtype.name()
            )));
        }
        if !(target > 0.0 && target <= 1.0) {
            return Err(
                InputError::Other(format!("{target} is not a cosine target in (0, 1]")).into(),
            );
        }
        let arch = self.config.arch();
        let nq = self.units();
        let yf = self.f32_logits(x)?;
        let layers = nq - 1;
        let with = |float: &[usize]| -> Result<(OwnedWeights, f64), RunError> {
            let blocks: Vec<usize> = float.iter().copied().filter(|&u| u != layers).collect();
            let (w, _) = self.f32.w8a8(&arch, float.contains(&layers), &blocks)?;
            let a = agreement(&yf, &self.config, &w, x)?;
            Ok((w, a.min_cosine))
        };
        let (all_int8, cos0) = with(&[])?;
        if cos0 >= target {
            self.stored = all_int8;
            self.kept_f32.clear();
            return Ok(Vec::new());
        }
        let mut loss = Vec::with_capacity(nq);
        for b in 0..nq {
            let others: Vec<usize> = (0..nq).filter(|&i| i != b).collect();
            let (_, cb) = with(&others)?;
            // A NaN cosine is the worst loss.
            loss.push((if cb.is_nan() { f64::INFINITY } else { 1.0 - cb }, b));
        }
        loss.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let order: Vec<usize> = loss.iter().map(|&(_, b)| b).collect();
        // The cosine grows (about) monotonically with the number of float units: bisect
        // the smallest count that reaches the target; all units float is the fallback.
        let (mut lo, mut hi) = (0usize, nq);
        let mut best = with(&order)?;
        if best.1.is_nan() || best.1 < target {
            return Err(InputError::Other(format!(
                "even with every block and layer in f32 the worst cosine is {:.6} < {target}: \
                 the f32 model disagrees with itself (NaN or infinity in the logits?)",
                best.1
            ))
            .into());
        }
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            let (w, cm) = with(&order[..mid])?;
            if cm >= target {
                hi = mid;
                best = (w, cm);
            } else {
                lo = mid;
            }
        }
        let mut kept = order[..hi].to_vec();
        kept.sort_unstable();
        self.stored = best.0;
        self.kept_f32 = kept.clone();
        Ok(kept)
    }

    /// Adds the keys of `extra` (e.g. a training report) to the model file's metadata,
    /// replacing keys of the same name.
    pub fn merge_meta(&mut self, extra: serde_json::Map<String, serde_json::Value>) {
        self.meta.extend(extra);
    }

    /// The metadata as the model file stores it.
    pub fn meta_json(&self) -> String {
        serde_json::Value::Object(self.meta.clone()).to_string()
    }

    /// The `.qnet` model file.
    pub fn to_qnet(&self) -> Result<Vec<u8>, RunError> {
        self.stored.to_qnet(&self.config, &self.meta_json())
    }

    /// The stored model, ready to run (its metadata is the file's).
    pub fn network(&self) -> Result<Network, RunError> {
        Network::from_bytes(&self.to_qnet()?, "converted model")
    }
}
