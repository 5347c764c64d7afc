//! `quadra convert`: checkpoint + architecture in; `.qnet` and/or compiled-in Rust out.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ndarray::Array4;
use quadra_core::Dtype;
use quadra_cpu::checkpoint::StateDict;
use quadra_cpu::config::ArchConfig;
use quadra_cpu::weights::OwnedWeights;
use quadra_cpu::Network;

#[derive(clap::Args)]
pub struct Args {
    /// PyTorch state_dict saved with safetensors (f32, f16 or bf16 tensors).
    #[arg(long)]
    weights: PathBuf,
    /// Architecture config (JSON).
    #[arg(long, conflicts_with = "preset", required_unless_present = "preset")]
    config: Option<PathBuf>,
    /// Built-in architecture: quadranet25-{xxs,xs,t,s,b} or quadranet36-{xxs,xs,t,s,b}.
    #[arg(long)]
    preset: Option<String>,
    /// Storage type of the weight matrices.
    #[arg(long, default_value = "f32", value_parser = quadra_cpu::parse_dtype)]
    dtype: Dtype,
    /// Write a .qnet model file here.
    #[arg(long, required_unless_present = "emit_rust")]
    out: Option<PathBuf>,
    /// Write a Rust module (model.rs + model.qnet) for a no-heap firmware build here.
    #[arg(long)]
    emit_rust: Option<PathBuf>,
    /// Input size for the arena constant and the accuracy check: `224` or `HxW`.
    #[arg(long, default_value = "224", value_parser = quadra_cpu::parse_input_size)]
    input_size: (usize, usize),
    /// Inputs (float32 .npy, [N, C, H, W]) for the f16/int8 accuracy check; random if absent.
    #[arg(long)]
    check_input: Option<PathBuf>,
    /// A JSON object merged into the file's metadata (e.g. a training report).
    #[arg(long)]
    meta: Option<PathBuf>,
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

/// Cosine similarity of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        return if na == nb { 1.0 } else { 0.0 };
    }
    dot / (na * nb)
}

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
        let worst = report
            .iter()
            .map(|r| r.error.rel_rms)
            .fold(0.0f32, f32::max);
        println!("  worst relative rms error: {worst:.3e}");
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

/// f16/int8 logits against f32 on `x`: (mean cosine, min cosine, top-1 agreements).
pub fn accuracy_vs_f32(c: &Converted, x: &Array4<f32>) -> Result<(f64, f64, usize)> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let f = Network::new(c.config.clone(), c.f32.clone())?.with_threads(threads)?;
    let q = Network::new(c.config.clone(), c.stored.clone())?.with_threads(threads)?;
    let (yf, yq) = (f.forward_nchw(x.view())?, q.forward_nchw(x.view())?);
    let mut cos = Vec::new();
    let mut agree = 0;
    for (a, b) in yf.outer_iter().zip(yq.outer_iter()) {
        let (a, b) = (a.to_vec(), b.to_vec());
        cos.push(cosine(&a, &b));
        agree += (argmax(&a) == argmax(&b)) as usize;
    }
    let mean = cos.iter().sum::<f64>() / cos.len().max(1) as f64;
    let min = cos.iter().copied().fold(1.0, f64::min);
    Ok((mean, min, agree))
}

pub fn run(a: Args) -> Result<()> {
    let config = load_config(a.config.as_deref(), a.preset.as_deref())?;
    let c = convert(config, &a.weights, a.dtype, a.meta.as_deref(), false)?;
    if a.dtype != Dtype::F32 {
        let x = match &a.check_input {
            Some(p) => crate::npy::read_nchw(p)?,
            None => {
                let (h, w) = a.input_size;
                let n = 4;
                let mut s = 0x9E37_79B9u32;
                Array4::from_shape_fn((n, c.config.in_chans, h, w), |_| {
                    s ^= s << 13;
                    s ^= s >> 17;
                    s ^= s << 5;
                    (s as f32 / u32::MAX as f32) * 4.0 - 2.0
                })
            }
        };
        let (mean, min, agree) = accuracy_vs_f32(&c, &x)?;
        let src = a
            .check_input
            .as_ref()
            .map_or("random inputs".to_string(), |p| p.display().to_string());
        println!(
            "{} logits vs f32 on {} images ({src}): cosine mean {mean:.6}, min {min:.6}; top-1 agreement {agree}/{}",
            a.dtype.name(),
            x.shape()[0],
            x.shape()[0]
        );
    }
    let bytes = c.stored.to_qnet(&c.config, &c.meta)?;
    if let Some(out) = &a.out {
        std::fs::write(out, &bytes).with_context(|| format!("cannot write {}", out.display()))?;
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
            "wrote {}/model.rs and {}/model.qnet ({} bytes)",
            dir.display(),
            dir.display(),
            bytes.len()
        );
    }
    Ok(())
}
