//! `quadra convert`: checkpoint + architecture in; `.qnet` and/or compiled-in Rust out.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ndarray::{Array2, Array4};
use quadra_core::Dtype;
use quadra_cpu::checkpoint::StateDict;
use quadra_cpu::config::ArchConfig;
use quadra_cpu::weights::OwnedWeights;
use quadra_cpu::Network;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("architecture").required(true).args(["config", "preset"])))]
pub struct Args {
    /// PyTorch state_dict saved with safetensors (f32, f16 or bf16 tensors).
    #[arg(long)]
    weights: PathBuf,
    /// Architecture config (JSON; or give --preset).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Built-in architecture: quadranet25-{xxs,xs,t,s,b} or quadranet36-{xxs,xs,t,s,b}
    /// (quadranet36-t is the official QuadraNet_tiny36_dw, quadranet36-b QuadraNet_base_dw36).
    #[arg(long)]
    preset: Option<String>,
    /// With --preset: classes of the head (default 1000).
    #[arg(long, requires = "preset", value_parser = quadra_cli::parse_count)]
    num_classes: Option<usize>,
    /// With --preset: input channels (default 3).
    #[arg(long, requires = "preset", value_parser = quadra_cli::parse_count)]
    in_chans: Option<usize>,
    /// Storage type of the weight matrices: f32, f16, int8 (weight-only: int8 weights
    /// widened to f32) or w8a8 (int8 weights and int8 pointwise GEMMs).
    #[arg(long, default_value = "f32", value_parser = quadra_cli::parse_dtype)]
    dtype: Dtype,
    /// With --dtype w8a8: keep the most sensitive units wholly in f32 (a block's QDW taps
    /// and both pointwise layers, or the stem, downsample and head layers together) until
    /// the worst logits cosine against f32 on the check inputs reaches this (e.g. 0.999).
    #[arg(long, requires = "dtype", value_parser = parse_cosine)]
    min_cosine: Option<f64>,
    /// Write a .qnet model file here.
    #[arg(long, required_unless_present = "emit_rust")]
    out: Option<PathBuf>,
    /// Write a Rust module (model.rs + model.qnet) for a no-heap firmware build here.
    #[arg(long)]
    emit_rust: Option<PathBuf>,
    /// Input size for the arena constant and the accuracy check: `224` or `HxW`.
    #[arg(long, default_value = "224", value_parser = quadra_cli::parse_input_size)]
    input_size: (usize, usize),
    /// Inputs (float32 .npy, [N, C, H, W]) for the accuracy check and the --min-cosine
    /// search; random if absent.
    #[arg(long)]
    check_input: Option<PathBuf>,
    /// Path to a JSON file whose object is merged into the model file's metadata (e.g. a
    /// training report).
    #[arg(long)]
    meta: Option<PathBuf>,
    /// Print only the summary lines, not the per-tensor quantisation table.
    #[arg(long)]
    quiet: bool,
}

/// Loads `--config` / `--preset`.
pub fn load_config(config: Option<&Path>, preset: Option<&str>) -> Result<ArchConfig> {
    match (config, preset) {
        (Some(p), _) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            ArchConfig::from_json(&text).with_context(|| format!("{}", p.display()))
        }
        (None, Some(name)) => Ok(ArchConfig::preset(name)?),
        (None, None) => bail!("give --config or --preset"),
    }
}

pub use quadra_core::compare::cosine;

/// Index of the largest value.
pub fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold(0, |best, (i, x)| if *x > v[best] { i } else { best })
}

/// The converted model and what it cost.
pub struct Converted {
    pub config: ArchConfig,
    pub f32: OwnedWeights,
    pub stored: OwnedWeights,
    pub meta: String,
}

/// Checks the checkpoint against the config, packs and quantises it, printing the
/// per-tensor quantisation error.
pub fn convert(
    config: ArchConfig,
    weights: &Path,
    dtype: Dtype,
    extra_meta: Option<&Path>,
    quiet: bool,
) -> Result<Converted> {
    let sd = StateDict::load(weights)?;
    if let (Some(p), false) = (&sd.stripped_prefix, quiet) {
        println!(
            "note: every key of {} starts with '{p}' (a DistributedDataParallel checkpoint); read without it",
            weights.display()
        );
    }
    let arch = config.arch();
    let f32w = sd.pack(&arch)?;
    if !quiet {
        println!(
            "{}: {} tensors match the architecture ({} parameters)",
            weights.display(),
            sd.tensors.len(),
            arch.params()
        );
    }
    let (stored, report) = f32w.quantize(&arch, dtype)?;
    if !quiet && !report.is_empty() {
        println!("quantisation error per tensor ({}):", dtype.name());
        println!("  {:<48} {:>12} {:>12}", "tensor", "max |err|", "rel rms");
        for r in &report {
            println!(
                "  {:<48} {:>12.3e} {:>12.3e}",
                r.name, r.error.max_abs, r.error.rel_rms
            );
        }
    }
    if let Some(worst) = report.iter().map(|r| r.error.rel_rms).reduce(f32::max) {
        println!(
            "{} tensors quantised to {}: worst relative rms error {worst:.3e}{}",
            report.len(),
            dtype.name(),
            if quiet {
                " (--quiet: table left out)"
            } else {
                ""
            }
        );
    }
    let mut meta = serde_json::json!({
        "source": weights.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default(),
        "dtype": dtype.name(),
        "converter": concat!("quadra ", env!("CARGO_PKG_VERSION")),
    });
    if let Some(p) = extra_meta {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
        let extra: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", p.display()))?;
        let Some(obj) = extra.as_object() else {
            bail!("{}: metadata must be a JSON object", p.display());
        };
        for (k, v) in obj {
            meta[k] = v.clone();
        }
    }
    Ok(Converted {
        config,
        f32: f32w,
        stored,
        meta: meta.to_string(),
    })
}

fn parse_cosine(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        Ok(v) => Err(format!("{v} is not a cosine target in (0, 1]")),
        Err(_) => Err(format!("'{s}' is not a number")),
    }
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// f16/int8 logits against f32 on `x`: (mean cosine, min cosine, top-1 agreements).
pub fn accuracy_vs_f32(c: &Converted, x: &Array4<f32>) -> Result<(f64, f64, usize)> {
    let f = Network::new(c.config.clone(), c.f32.clone())?.with_threads(threads())?;
    let yf = f.forward_nchw(x.view())?;
    agreement(&yf, &c.config, &c.stored, x)
}

/// Logits of `weights` on `x` against the f32 logits `yf`: (mean cosine, min cosine,
/// top-1 agreements). A NaN anywhere makes the cosines NaN.
fn agreement(
    yf: &Array2<f32>,
    config: &ArchConfig,
    weights: &OwnedWeights,
    x: &Array4<f32>,
) -> Result<(f64, f64, usize)> {
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
    Ok((mean, min, agree))
}

/// The w8a8 model that keeps the fewest, most sensitive units in f32 such that the worst
/// logits cosine against f32 on `x` is at least `target`. The units are the quadratic
/// blocks (`0..n`: QDW taps and pointwise GEMMs) and the stem, downsample and head layers
/// together (unit `n`); a unit's sensitivity is the cosine lost when it alone is int8.
/// Returns the weights and the units kept in f32.
pub fn mixed_precision(
    c: &Converted,
    x: &Array4<f32>,
    target: f64,
) -> Result<(OwnedWeights, Vec<usize>)> {
    let arch = c.config.arch();
    let nq = arch.quadratic_blocks() + 1;
    let f = Network::new(c.config.clone(), c.f32.clone())?.with_threads(threads())?;
    let yf = f.forward_nchw(x.view())?;
    let layers = nq - 1;
    let with = |float: &[usize]| -> Result<(OwnedWeights, f64)> {
        let blocks: Vec<usize> = float.iter().copied().filter(|&u| u != layers).collect();
        let (w, _) = c.f32.w8a8(&arch, float.contains(&layers), &blocks)?;
        let (_, min, _) = agreement(&yf, &c.config, &w, x)?;
        Ok((w, min))
    };
    let (all_int8, cos0) = with(&[])?;
    if cos0 >= target {
        return Ok((all_int8, Vec::new()));
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
    // The cosine grows (about) monotonically with the number of float blocks: bisect the
    // smallest count that reaches the target; all blocks float is the fallback.
    let (mut lo, mut hi) = (0usize, nq);
    let mut best = with(&order)?;
    if best.1.is_nan() || best.1 < target {
        anyhow::bail!(
            "even with every block and layer in f32 the worst cosine is {:.6} < {target}: the \
             f32 model disagrees with itself (NaN or infinity in the logits?)",
            best.1
        );
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
    Ok((best.0, kept))
}

/// `stages.{s}.{b}` of quadratic block `i` (identity blocks are not counted); the unit
/// after the last block is the stem, downsample and head layers.
pub fn block_name(config: &ArchConfig, i: usize) -> String {
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

pub fn run(a: Args) -> Result<()> {
    let mut config = load_config(a.config.as_deref(), a.preset.as_deref())?;
    config.num_classes = a.num_classes.unwrap_or(config.num_classes);
    config.in_chans = a.in_chans.unwrap_or(config.in_chans);
    if a.min_cosine.is_some() && a.dtype != Dtype::W8A8 {
        bail!("--min-cosine chooses which blocks of a w8a8 model stay f32: give --dtype w8a8");
    }
    let mut c = convert(config, &a.weights, a.dtype, a.meta.as_deref(), a.quiet)?;
    if a.dtype != Dtype::F32 {
        let x = match &a.check_input {
            Some(p) => crate::npy::read_nchw(p)?,
            None => {
                let (h, w) = a.input_size;
                // The mixed-precision search needs more than a spot check to hold on
                // inputs it has not seen (4 images did not on QuadraNet36-T; 16 did).
                let n = if a.min_cosine.is_some() { 16 } else { 4 };
                let mut s = 0x9E37_79B9u32;
                Array4::from_shape_fn((n, c.config.in_chans, h, w), |_| {
                    s ^= s << 13;
                    s ^= s >> 17;
                    s ^= s << 5;
                    (s as f32 / u32::MAX as f32) * 4.0 - 2.0
                })
            }
        };
        let src = a
            .check_input
            .as_ref()
            .map_or("random inputs".to_string(), |p| p.display().to_string());
        if let Some(target) = a.min_cosine {
            let (w, kept) = mixed_precision(&c, &x, target)?;
            c.stored = w;
            let names: Vec<String> = kept.iter().map(|&b| block_name(&c.config, b)).collect();
            println!(
                "mixed precision (worst cosine >= {target} on {src}): {} of {} units stay f32{}{}",
                kept.len(),
                c.config.arch().quadratic_blocks() + 1,
                if kept.is_empty() { "" } else { ": " },
                names.join(", ")
            );
        }
        let (mean, min, agree) = accuracy_vs_f32(&c, &x)?;
        println!(
            "{} logits vs f32 on {} images ({src}): cosine mean {mean:.6}, min {min:.6}; top-1 agreement {agree}/{}",
            a.dtype.name(),
            x.shape()[0],
            x.shape()[0]
        );
    }
    let bytes = c.stored.to_qnet(&c.config, &c.meta)?;
    if let Some(out) = &a.out {
        quadra_cpu::file::write_atomic(out, &bytes)
            .with_context(|| format!("cannot write {}", out.display()))?;
        println!(
            "wrote {} ({} bytes, matrices {})",
            out.display(),
            bytes.len(),
            a.dtype.name()
        );
    }
    if let Some(dir) = &a.emit_rust {
        crate::emit::write_module(dir, &c.config, &bytes, a.input_size, &a.weights, a.dtype)?;
        println!(
            "wrote {} and {} ({} bytes)",
            dir.join("model.rs").display(),
            dir.join("model.qnet").display(),
            bytes.len()
        );
    }
    Ok(())
}
