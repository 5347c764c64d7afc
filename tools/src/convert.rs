//! `quadra convert`: checkpoint + architecture in; `.qnet` and/or compiled-in Rust out.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use quadra_core::Dtype;
use quadra_cpu::checkpoint::StateDict;
use quadra_cpu::config::ArchConfig;
use quadra_cpu::convert::{self, Conversion};

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
    /// Record the precision the model runs at by default: f32, or fp16 (half-precision
    /// GEMMs on aarch64 CPUs with FEAT_FP16; `quadra infer --precision` overrides it).
    /// Pair fp16 with --dtype f16: the weights are then used as stored.
    #[arg(long, value_parser = quadra_cli::parse_precision)]
    precision: Option<quadra_cpu::Precision>,
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

fn parse_cosine(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        Ok(v) => Err(format!("{v} is not a cosine target in (0, 1]")),
        Err(_) => Err(format!("'{s}' is not a number")),
    }
}

pub fn run(a: Args) -> Result<()> {
    let mut config = load_config(a.config.as_deref(), a.preset.as_deref())?;
    config.num_classes = a.num_classes.unwrap_or(config.num_classes);
    config.in_chans = a.in_chans.unwrap_or(config.in_chans);
    if a.min_cosine.is_some() && a.dtype != Dtype::W8A8 {
        bail!("--min-cosine chooses which blocks of a w8a8 model stay f32: give --dtype w8a8");
    }
    let sd = StateDict::load(&a.weights)?;
    if let (Some(p), false) = (&sd.stripped_prefix, a.quiet) {
        println!(
            "note: every key of {} starts with '{p}' (a DistributedDataParallel checkpoint); read without it",
            a.weights.display()
        );
    }
    let mut c = convert::convert(config, &sd, a.dtype)?;
    if let Some(p) = a.precision {
        c.meta.insert("precision".into(), p.name().into());
    }
    if !a.quiet {
        println!(
            "{}: {} tensors match the architecture ({} parameters)",
            a.weights.display(),
            sd.tensors.len(),
            c.config.arch().params()
        );
    }
    print_quantisation(&c, a.quiet);
    if let Some(p) = &a.meta {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
        let extra: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", p.display()))?;
        let serde_json::Value::Object(obj) = extra else {
            bail!("{}: metadata must be a JSON object", p.display());
        };
        c.merge_meta(obj);
    }
    if a.dtype != Dtype::F32 {
        let x = match &a.check_input {
            Some(p) => crate::npy::read_nchw(p)?,
            // The mixed-precision search needs more than a spot check to hold on inputs it
            // has not seen (4 images did not on QuadraNet36-T; 16 did).
            None => convert::check_inputs(
                if a.min_cosine.is_some() { 16 } else { 4 },
                c.config.in_chans,
                a.input_size,
            ),
        };
        let src = a
            .check_input
            .as_ref()
            .map_or("random inputs".to_string(), |p| p.display().to_string());
        if let Some(target) = a.min_cosine {
            let kept = c.keep_f32_until(&x, target)?;
            let names: Vec<String> = kept
                .iter()
                .map(|&u| convert::unit_name(&c.config, u))
                .collect();
            println!(
                "mixed precision (worst cosine >= {target} on {src}): {} of {} units stay f32{}{}",
                kept.len(),
                c.units(),
                if kept.is_empty() { "" } else { ": " },
                names.join(", ")
            );
        }
        let acc = c.accuracy(&x)?;
        println!(
            "{} logits vs f32 on {} images ({src}): cosine mean {:.6}, min {:.6}; top-1 agreement {}/{}",
            a.dtype.name(),
            acc.images,
            acc.mean_cosine,
            acc.min_cosine,
            acc.top1_agree,
            acc.images
        );
    }
    let bytes = c.to_qnet()?;
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
        // The checkpoint's file name, as the metadata has it.
        let source = c.meta["source"].as_str().unwrap_or_default().to_string();
        quadra_cpu::emit::write_module(dir, &c.config, &bytes, a.input_size, &source, a.dtype)?;
        println!(
            "wrote {} and {} ({} bytes)",
            dir.join("model.rs").display(),
            dir.join("model.qnet").display(),
            bytes.len()
        );
    }
    Ok(())
}

/// The per-tensor quantisation table (unless `quiet`) and its worst line.
fn print_quantisation(c: &Conversion, quiet: bool) {
    let report = &c.tensors;
    if !quiet && !report.is_empty() {
        println!("quantisation error per tensor ({}):", c.dtype.name());
        println!("  {:<48} {:>12} {:>12}", "tensor", "max |err|", "rel rms");
        for r in report {
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
            c.dtype.name(),
            if quiet {
                " (--quiet: table left out)"
            } else {
                ""
            }
        );
    }
}
