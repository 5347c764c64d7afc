//! `quadra inspect`.

use std::path::PathBuf;

use anyhow::Result;
use quadra_core::{Dtype, FloatBlocks, MatData};
use quadra_cpu::config::ArchConfig;
use quadra_cpu::file::ModelFile;

#[derive(clap::Args)]
pub struct Args {
    /// The .qnet file.
    model: PathBuf,
    /// Input size for FLOPs and arena: `224` or `HxW`.
    #[arg(long, default_value = "224", value_parser = quadra_cli::parse_input_size)]
    input_size: (usize, usize),
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let bytes = std::fs::metadata(&a.model).map(|m| m.len()).unwrap_or(0);
    // Mapped and read in place: inspecting a 95 MB model does not copy it.
    let file = ModelFile::open(&a.model)?;
    let parsed = file.parsed()?;
    let (config, weights, meta) = (
        ArchConfig::from_arch(&parsed.arch),
        parsed.weights,
        parsed.meta,
    );
    let arch = config.arch();
    let (h, w) = a.input_size;
    let plan = arch.plan_for(h, w, 1, weights.mats.dtype());
    let wl = arch.weights_len();
    let dtype = weights.mats.dtype();
    let blocks: Vec<Vec<String>> = config
        .blocks
        .iter()
        .map(|s| {
            s.iter()
                .map(|b| {
                    if b.is_identity() {
                        "identity".into()
                    } else {
                        format!("k{}e{}", b.kernel, b.expansion)
                    }
                })
                .collect()
        })
        .collect();
    let float = match weights.mats {
        MatData::W8A8(_, f) => f,
        _ => FloatBlocks::NONE,
    };
    let mut quadratic = 0;
    let precision: Vec<Vec<&str>> = config
        .blocks
        .iter()
        .zip(config.dims)
        .map(|(s, c)| {
            s.iter()
                .map(|b| {
                    if b.is_identity() {
                        return "-";
                    }
                    quadratic += 1;
                    if float.is_float(quadratic - 1) {
                        "f32"
                    } else {
                        block_precision(dtype, c, b.expansion as usize)
                    }
                })
                .collect()
        })
        .collect();
    let layers = if float.layers_float() {
        "f32"
    } else {
        match dtype {
            Dtype::W8A8 => "int8",
            d => d.name(),
        }
    };
    let flops = 2 * arch.macs(h, w);
    // The precision the metadata records as the default (`convert --precision`). A name this
    // build does not know runs f32: said here, since loading does not refuse it.
    let recorded = serde_json::from_str::<serde_json::Value>(meta)
        .ok()
        .and_then(|v| v.get("precision")?.as_str().map(str::to_owned));
    let (runs, warning) = match recorded.as_deref().map(|n| (n, quadra_cpu::Precision::from_name(n))) {
        None => (quadra_cpu::Precision::F32, None),
        Some((_, Some(p))) => (p, None),
        Some((n, None)) => (
            quadra_cpu::Precision::F32,
            Some(format!(
                "the metadata records precision {n:?}, which this build does not know (f32, fp16): it runs f32"
            )),
        ),
    };
    let report = serde_json::json!({
        "file": a.model.display().to_string(),
        "file_bytes": bytes,
        "dtype": dtype.name(),
        "in_chans": config.in_chans,
        "num_classes": config.num_classes,
        "dims": config.dims,
        "blocks": blocks,
        "block_precision": precision,
        "layer_precision": layers,
        "parameters": arch.params(),
        "weight_bytes": wl.bytes(dtype) + 4 * float.mats.len(),
        "input": [h, w],
        "flops": flops,
        "arena_bytes": plan.arena_len() * 4,
        "activation_bytes": plan.act_len * 4,
        "scratch_bytes": plan.scratch_len * 4,
        "largest_activation_bytes": arch.largest_activation(h, w) * 4,
        "precision": runs.name(),
        "precision_warning": warning,
        "meta": serde_json::from_str::<serde_json::Value>(meta).unwrap_or(serde_json::Value::String(meta.to_string())),
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{}  ({} bytes, matrices {})",
        a.model.display(),
        bytes,
        dtype.name()
    );
    println!(
        "  input      {} channels, {} classes",
        config.in_chans, config.num_classes
    );
    for (s, st) in blocks.iter().enumerate() {
        let shown: Vec<String> = st
            .iter()
            .zip(&precision[s])
            .map(|(b, p)| match *p {
                "-" => b.clone(),
                p => format!("{b}/{p}"),
            })
            .collect();
        println!(
            "  stage {s}    dim {:4}  {} blocks: {}",
            config.dims[s],
            st.len(),
            shown.join(" ")
        );
    }
    println!("  stem, downsamples, head: {layers}");
    println!("  parameters {}", arch.params());
    println!(
        "  weights    {} bytes",
        wl.bytes(dtype) + 4 * float.mats.len()
    );
    println!(
        "  at {h}x{w}:  {:.3} GFLOP per image ({} multiply-adds)",
        flops as f64 / 1e9,
        flops / 2
    );
    println!(
        "  arena      {} bytes = activations {} + scratch {} (largest activation {})",
        plan.arena_len() * 4,
        plan.act_len * 4,
        plan.scratch_len * 4,
        arch.largest_activation(h, w) * 4
    );
    println!("  precision  {runs} (the default; `quadra infer --precision` overrides it)");
    if let Some(w) = &warning {
        println!("  warning    {w}");
    }
    if !meta.is_empty() {
        println!("  metadata   {meta}");
    }
    Ok(())
}

/// How a block's pointwise GEMMs compute: `w8a8` (int8 x int8), `int8` (int8 weights
/// widened to f32), `f16`, `f32`; in a w8a8 file a GEMM computes in int8 when its inner
/// dimension is a multiple of 4 (PW1: C, PW2: E·C) and its block is not kept in f32.
fn block_precision(dtype: Dtype, c: usize, e: usize) -> &'static str {
    match dtype {
        Dtype::W8A8 if c.is_multiple_of(4) => "w8a8",
        Dtype::W8A8 if (e * c).is_multiple_of(4) => "int8+w8a8-pw2",
        Dtype::W8A8 | Dtype::I8 => "int8",
        Dtype::F16 => "f16",
        Dtype::F32 => "f32",
    }
}
