//! `quadra-bench`: latency, throughput, GFLOP/s, arena and peak RSS of a QuadraNet on this
//! device, plus a per-layer latency table and a ProxylessNAS-style latency lookup table of
//! every candidate block (K ∈ {3,5,7}, E ∈ {2,4}) at every stage's shape.
//!
//! No criterion, links statically for aarch64: copy it to a Raspberry Pi 5 or a phone.
//!
//! One file per job: `model` builds the network the arguments name, `report` prints what
//! the library's `measure` found and the latency table `lut` made of it, `op` measures one
//! operator (`--op`).

mod model;
mod op;
mod report;

use std::path::PathBuf;

use clap::Parser;
use quadra_bench::{lut, measure};
use quadra_core::Dtype;

/// Boxed errors, printed as a sentence.
pub(crate) type Res<T> = Result<T, Box<dyn std::error::Error>>;

#[derive(Parser)]
#[command(
    name = "quadra-bench",
    version,
    about = "Measure a QuadraNet on this device"
)]
pub(crate) struct Args {
    /// Built-in architecture with random weights (default quadranet25-xxs).
    #[arg(long, conflicts_with_all = ["model", "config"])]
    pub(crate) preset: Option<String>,
    /// An architecture config (JSON, as `quadra convert --config` takes, e.g. a searched
    /// network) with random weights: no checkpoint needed.
    #[arg(long, conflicts_with = "model")]
    pub(crate) config: Option<PathBuf>,
    /// Sum the latency table over this network's layers and compare the sum with the
    /// measured whole-network latency.
    #[arg(long)]
    pub(crate) check: bool,
    /// A .qnet model file.
    #[arg(long)]
    pub(crate) model: Option<PathBuf>,
    /// Input size: `224` or `HxW`.
    #[arg(long, default_value = "224", value_parser = quadra_cli::parse_input_size)]
    pub(crate) input_size: (usize, usize),
    /// Threads (0: one per chosen core).
    #[arg(long, default_value_t = 1, value_parser = quadra_cli::parse_threads)]
    pub(crate) threads: usize,
    /// Cores the threads run on: big (every core but the slowest class; all when they are
    /// equal), little, all, or a CPU list such as 4-7 or 0,2,5. Workers are pinned to them.
    #[arg(long, default_value = "big", value_parser = quadra_cpu::cores::Cores::parse)]
    pub(crate) cores: quadra_cpu::cores::Cores,
    /// How each layer's rows are split among the threads: even, capacity (by the cores'
    /// sysfs capacity), measured (from there, following each thread's measured speed), or
    /// auto (measured with --cores all, capacity otherwise).
    #[arg(long, default_value = "auto", value_parser = quadra_cpu::cores::Bands::parse)]
    pub(crate) bands: quadra_cpu::cores::Bands,
    /// Kernel path: scalar, avx2, avx512, neon (default: the best this CPU runs).
    #[arg(long)]
    pub(crate) kernel: Option<String>,
    /// Arithmetic: f32, or fp16 (half-precision GEMMs on aarch64 with FEAT_FP16; f32
    /// elsewhere, which the report's description says). Default: the model's recorded one.
    #[arg(long, value_parser = quadra_cli::parse_precision)]
    pub(crate) precision: Option<quadra_cpu::Precision>,
    /// Timed runs.
    #[arg(long, default_value_t = 20, value_parser = quadra_cli::parse_count)]
    pub(crate) iters: usize,
    /// Untimed warm-up runs.
    #[arg(long, default_value_t = 3)]
    pub(crate) warmup: usize,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub(crate) json: bool,
    /// Write the latency lookup table as YAML (ProxylessNAS key format).
    #[arg(long)]
    pub(crate) lut_yaml: Option<PathBuf>,
    /// Write the latency lookup table as JSON.
    #[arg(long)]
    pub(crate) lut_json: Option<PathBuf>,
    /// Skip measuring the candidate blocks (the per-layer table of the model stays).
    #[arg(long)]
    pub(crate) no_candidates: bool,
    /// Store (and compute) the weights as f32, f16, int8 (weight-only) or w8a8 (int8
    /// pointwise GEMMs); a model file's f32 weights are converted, others run as stored.
    #[arg(long, value_parser = quadra_cli::parse_dtype)]
    pub(crate) dtype: Option<Dtype>,
    /// Measure one operator instead of a model: `qdw:CxHxK` or `block:CxHxKxE` (an HxH
    /// map of C channels, random weights).
    #[arg(long)]
    pub(crate) op: Option<String>,
    /// With --op: the operator's weights from PyTorch (safetensors of the official module's
    /// state_dict: `QuadraConv` for qdw, `QuadraBlock1_dw` for block) instead of random ones.
    #[arg(long, requires = "op")]
    pub(crate) op_weights: Option<PathBuf>,
    /// With --op: the input, raw little-endian f32 channels-last `[H, W, C]`, instead of a
    /// random one; the operator's output on it is written to --op-output.
    #[arg(long, requires_all = ["op", "op_output"])]
    pub(crate) op_input: Option<PathBuf>,
    /// With --op-input: where to write the output, raw little-endian f32 `[H, W, C]`.
    #[arg(long, requires = "op_input")]
    pub(crate) op_output: Option<PathBuf>,
    /// With `--op block:...`: rows per strip instead of the default (one thread); the result
    /// does not depend on it, only the cache traffic does.
    #[arg(long, requires = "op")]
    pub(crate) strip: Option<usize>,
}

impl Args {
    /// What to measure.
    pub(crate) fn opts(&self) -> measure::Opts {
        measure::Opts {
            input_size: self.input_size,
            iters: self.iters,
            warmup: self.warmup,
            candidates: !self.no_candidates,
        }
    }
}

fn main() -> std::process::ExitCode {
    quadra_cli::exit_quietly_on_broken_pipe();
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // A sentence, not the error's Debug form.
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(a: Args) -> Res<()> {
    if let Some(op) = &a.op {
        return op::bench(&a, op);
    }
    let (net, name) = model::network(&a)?;
    let m = measure::measure(&a.opts(), &net)?;
    let arch = net.config().arch();
    let table = lut::table(&arch, a.input_size, &m, !a.no_candidates);
    let write = |p: &std::path::Path, text: String| {
        quadra_cpu::file::write_atomic(p, text.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", p.display()))
    };
    if let Some(p) = &a.lut_json {
        write(p, serde_json::to_string_pretty(&table)?)?;
    }
    if let Some(p) = &a.lut_yaml {
        write(p, lut::yaml(&table))?;
    }
    report::print(&a, &net, &name, &m, &table)
}
