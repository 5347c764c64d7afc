//! `quadra-bench`: latency, throughput, GFLOP/s, arena and peak RSS of a QuadraNet on this
//! device, plus a per-layer latency table and a ProxylessNAS-style latency lookup table of
//! every candidate block (K ∈ {3,5,7}, E ∈ {2,4}) at every stage's shape.
//!
//! No criterion, links statically for aarch64: copy it to a Raspberry Pi 5 or a phone.

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use quadra_bench::{
    peak::{fma_peak_gflops, PeakSampler},
    peak_rss_bytes, random, random_weights,
};
use quadra_core::arch::{Arch, BlockSpec};
use quadra_core::block::{BlockDims, BlockWeights};
use quadra_core::net::{run_block, run_block_scratch, Layer};
use quadra_core::{kernels, Dtype, Isa};
use quadra_cpu::config::ArchConfig;
use quadra_cpu::{dispatch, AlignedF32, Layout, Network, Session};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "quadra-bench",
    version,
    about = "Measure a QuadraNet on this device"
)]
struct Args {
    /// Built-in architecture with random weights (default quadranet25-xxs).
    #[arg(long, conflicts_with_all = ["model", "config"])]
    preset: Option<String>,
    /// An architecture config (JSON, as `quadra convert --config` takes, e.g. a searched
    /// network) with random weights: no checkpoint needed.
    #[arg(long, conflicts_with = "model")]
    config: Option<PathBuf>,
    /// Sum the latency table over this network's layers and compare the sum with the
    /// measured whole-network latency.
    #[arg(long)]
    check: bool,
    /// A .qnet model file.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Input size: `224` or `HxW`.
    #[arg(long, default_value = "224", value_parser = quadra_cpu::parse_input_size)]
    input_size: (usize, usize),
    /// Threads.
    #[arg(long, default_value_t = 1, value_parser = quadra_cpu::parse_threads)]
    threads: usize,
    /// Kernel path: scalar, avx2, avx512, neon (default: the best this CPU runs).
    #[arg(long)]
    kernel: Option<String>,
    /// Timed runs.
    #[arg(long, default_value_t = 20, value_parser = quadra_cpu::parse_count)]
    iters: usize,
    /// Untimed warm-up runs.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Write the latency lookup table as YAML (ProxylessNAS key format).
    #[arg(long)]
    lut_yaml: Option<PathBuf>,
    /// Write the latency lookup table as JSON.
    #[arg(long)]
    lut_json: Option<PathBuf>,
    /// Skip measuring the candidate blocks (the per-layer table of the model stays).
    #[arg(long)]
    no_candidates: bool,
    /// Store (and compute) the weights as f32, f16, int8 (weight-only) or w8a8 (int8
    /// pointwise GEMMs); a model file's f32 weights are converted, others run as stored.
    #[arg(long, value_parser = quadra_cpu::parse_dtype)]
    dtype: Option<Dtype>,
    /// Measure one operator instead of a model: `qdw:CxHxK` or `block:CxHxKxE` (an HxH
    /// map of C channels, random weights).
    #[arg(long)]
    op: Option<String>,
    /// With --op: the operator's weights from PyTorch (safetensors of the official module's
    /// state_dict: `QuadraConv` for qdw, `QuadraBlock1_dw` for block) instead of random ones.
    #[arg(long, requires = "op")]
    op_weights: Option<PathBuf>,
    /// With --op: the input, raw little-endian f32 channels-last `[H, W, C]`, instead of a
    /// random one; the operator's output on it is written to --op-output.
    #[arg(long, requires_all = ["op", "op_output"])]
    op_input: Option<PathBuf>,
    /// With --op-input: where to write the output, raw little-endian f32 `[H, W, C]`.
    #[arg(long, requires = "op_input")]
    op_output: Option<PathBuf>,
    /// With `--op block:...`: rows per strip instead of the default (one thread); the result
    /// does not depend on it, only the cache traffic does.
    #[arg(long, requires = "op")]
    strip: Option<usize>,
}

/// A lone operator's packed weights from a PyTorch state_dict: the tensors are placed as
/// block 0 of a one-block network (the only part packed from the file; the rest is zeros)
/// and the block's stretch of the streams is returned. For `qdw` only the `QuadraConv`
/// tensors are read (keys `conv{1,2,3}.{weight,bias}`), for `block` every block key.
fn op_weights_from(
    path: &std::path::Path,
    qdw_only: bool,
    (c, k, e): (usize, usize, usize),
) -> Result<quadra_cpu::weights::OwnedWeights, Box<dyn std::error::Error>> {
    use quadra_core::arch::{Arch, Stage};
    use quadra_cpu::checkpoint::{StateDict, Tensor};
    let file = StateDict::load(path)?;
    let spec = [BlockSpec::quadra(k as u8, e as u8)];
    let stage = |blocks| Stage { dim: c, blocks };
    let arch = Arch {
        in_chans: 1,
        num_classes: 1,
        stages: [stage(&spec), stage(&[]), stage(&[]), stage(&[])],
    };
    let prefix = if qdw_only {
        "stages.0.0.QuadraConv."
    } else {
        "stages.0.0."
    };
    let mut sd = StateDict {
        source: file.source.clone(),
        tensors: Default::default(),
        stripped_prefix: None,
    };
    let mut first = None;
    let mut used = 0;
    quadra_core::net::visit_tensors::<quadra_core::Error>(&arch, |slot| {
        let from_file = slot
            .name
            .strip_prefix(prefix)
            .and_then(|key| file.tensors.get(key));
        if slot.name.starts_with("stages.0.0.") && first.is_none() {
            first = Some((slot.vec_offset, slot.mat_offset));
        }
        let t = match from_file {
            Some(t) => {
                used += 1;
                t.clone()
            }
            None if slot.name.starts_with(prefix) => {
                // Missing: let `pack` name it with its shape.
                return Ok(());
            }
            None => Tensor {
                shape: slot.shape.to_vec(),
                dtype: safetensors::Dtype::F32,
                data: vec![0.0; slot.shape.iter().product()],
            },
        };
        sd.tensors.insert(slot.name.to_string(), t);
        Ok(())
    })?;
    if used != file.tensors.len() {
        return Err(format!(
            "{}: {} tensors, {used} of them the operator's (expected the state_dict of one {})",
            path.display(),
            file.tensors.len(),
            if qdw_only {
                "QuadraConv"
            } else {
                "QuadraBlock1_dw"
            }
        )
        .into());
    }
    let packed = sd.pack(&arch)?;
    let (vo, mo) = first.ok_or("no block in the one-block network")?;
    let len = spec[0].weights_len(c);
    let quadra_cpu::weights::OwnedMats::F32(m) = &packed.mats else {
        return Err("packed weights are not f32".into());
    };
    Ok(quadra_cpu::weights::OwnedWeights {
        vecs: packed.vecs[vo..vo + len.vecs].into(),
        mats: quadra_cpu::weights::OwnedMats::F32(m[mo..mo + len.mats].into()),
    })
}

/// Reads raw little-endian f32 values, exactly `n` of them.
fn read_f32s(path: &std::path::Path, n: usize) -> Result<Vec<f32>, Box<dyn std::error::Error>> {
    let b =
        quadra_cpu::read_file(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if b.len() != 4 * n {
        return Err(format!(
            "{}: {} bytes, expected {} ({n} f32 values)",
            path.display(),
            b.len(),
            4 * n
        )
        .into());
    }
    let v: Vec<f32> = b
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(format!(
            "{}: value {i} is {}: inputs must be finite",
            path.display(),
            v[i]
        )
        .into());
    }
    Ok(v)
}

fn write_f32s(path: &std::path::Path, v: &[f32]) -> Result<(), Box<dyn std::error::Error>> {
    let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    quadra_cpu::file::write_atomic(path, &b)
        .map_err(|e| format!("cannot write {}: {e}", path.display()).into())
}

/// Largest map side `--op` measures (a 4096x4096 map of the widest C is already 1 GiB).
const MAX_OP_SIDE: usize = 4096;

/// `--op`: one QDW conv or one QuadraBlock, median of `iters` runs.
fn bench_op(a: &Args, spec: &str) -> Result<(), Box<dyn std::error::Error>> {
    use quadra_core::block::{qdw_forward, qdw_scratch_len};
    use quadra_core::kernels::QdwWeights;
    use quadra_core::MatData;
    let bad = || format!("--op '{spec}': expected qdw:CxHxK or block:CxHxKxE");
    let (kind, dims) = spec.split_once(':').ok_or_else(bad)?;
    let n: Vec<usize> = dims
        .split('x')
        .map(|v| v.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let (c, h, k) = match n[..] {
        [c, h, k] | [c, h, k, _] => (c, h, k),
        _ => return Err(bad().into()),
    };
    if n.contains(&0) {
        return Err(format!("--op '{spec}': every dimension must be at least 1").into());
    }
    let e = n.get(3).copied().unwrap_or(4);
    if a.strip.is_some() && kind != "block" {
        return Err(format!("--op '{spec}': --strip applies to block:CxHxKxE only").into());
    }
    // What the kernels take, checked before anything is allocated.
    if !matches!(k, 3 | 5 | 7) {
        return Err(format!("--op '{spec}': the kernel K must be 3, 5 or 7, not {k}").into());
    }
    if !(1..=8).contains(&e) {
        return Err(format!("--op '{spec}': the expansion E must be 1 to 8, not {e}").into());
    }
    if c > quadra_core::arch::MAX_DIM || h > MAX_OP_SIDE {
        return Err(format!(
            "--op '{spec}': at most {} channels and a {MAX_OP_SIDE}x{MAX_OP_SIDE} map",
            quadra_core::arch::MAX_DIM
        )
        .into());
    }
    let kern = match &a.kernel {
        Some(name) => dispatch::kernels_for(Isa::from_name(name).ok_or_else(bad)?)?,
        None => dispatch::default_kernels()?,
    };
    let x0 = match &a.op_input {
        Some(p) => read_f32s(p, h * h * c)?,
        None => random(h * h * c, 5),
    };
    let given = match &a.op_weights {
        Some(p) => Some(op_weights_from(p, kind == "qdw", (c, k, e))?),
        None => None,
    };
    let mut result: Option<Vec<f32>> = None;
    let mut ts = Vec::new();
    // QDW only: the kernel alone, on rows blocked and padded beforehand, and per round
    // (op, kernel) as fractions of the FMA peak sampled in that round.
    let mut kernel_ts = Vec::new();
    let mut paired: Vec<(f64, f64)> = Vec::new();
    let flops;
    match kind {
        "qdw" => {
            let taps = AlignedF32::from(random(QdwWeights::taps_len(k, c), 1));
            let bias = random(3 * c, 2);
            let ones = vec![1.0; 3 * c];
            let wts = match &given {
                // The QuadraConv of a packed block: its taps, scales and biases.
                Some(w) => BlockWeights::from_weights(c, k, e, w.view())?.qdw,
                None => QdwWeights::new(k, c, MatData::F32(&taps), &ones, &bias)?,
            };
            let mut scratch = AlignedF32::zeros(qdw_scratch_len(h, c, k));
            let mut xa = AlignedF32::zeros(x0.len());
            flops = quadra_bench::qdw_flops(h, h, c, k);
            // The kernel alone: every input row channel-blocked and padded once (what the
            // ring holds, and inside a block what LayerNorm writes), then only `qdw_row`.
            let prow = kernels::qdw_row_len(h, c, k);
            let mut blocked = AlignedF32::zeros((h + k - 1) * prow);
            for (y, src) in x0.chunks_exact(h * c).enumerate() {
                let dst = &mut blocked[(y + k / 2) * prow..(y + k / 2 + 1) * prow];
                kernels::block_row(kern, src, h, c, k, dst)?;
            }
            let mut out = AlignedF32::zeros(h * h * c);
            let mut op = |x: &mut [f32]| -> Result<f64, quadra_core::Error> {
                x.copy_from_slice(&x0);
                let t = Instant::now();
                qdw_forward(kern, h, h, &wts, x, scratch.as_mut_slice())?;
                Ok(t.elapsed().as_secs_f64())
            };
            let alone = |out: &mut [f32]| -> Result<f64, quadra_core::Error> {
                let t = Instant::now();
                for (y, o) in out.chunks_exact_mut(h * c).enumerate() {
                    let rows: [&[f32]; kernels::MAX_K] = core::array::from_fn(|ky| {
                        if ky < k {
                            &blocked[(y + ky) * prow..(y + ky + 1) * prow]
                        } else {
                            &[]
                        }
                    });
                    kernels::qdw_row(kern, &wts, &rows[..k], h, None, o)?;
                }
                Ok(t.elapsed().as_secs_f64())
            };
            for _ in 0..a.warmup {
                op(xa.as_mut_slice())?;
                alone(out.as_mut_slice())?;
            }
            if a.op_output.is_some() {
                op(xa.as_mut_slice())?;
                result = Some(xa.to_vec());
            }
            // Rounds of: a ~10 ms sample of the FMA peak, then a share of the op's runs and
            // of the kernel's, so each round's ratios compare numbers taken together.
            let sampler = PeakSampler::new(kern.isa(), 0.01);
            let rounds = a.iters.min(10);
            for r in 0..rounds {
                let n = a.iters * (r + 1) / rounds - a.iters * r / rounds;
                let peak = sampler.sample();
                let (mut t_op, mut t_alone) = (Vec::new(), Vec::new());
                // One after the other, not interleaved: each keeps its own data in L2.
                for _ in 0..n {
                    t_op.push(op(xa.as_mut_slice())?);
                }
                for _ in 0..n {
                    t_alone.push(alone(out.as_mut_slice())?);
                }
                ts.extend_from_slice(&t_op);
                kernel_ts.extend_from_slice(&t_alone);
                let fraction = |t: &mut Vec<f64>| {
                    t.sort_by(f64::total_cmp);
                    flops as f64 / percentile(t, 0.5) / 1e9 / peak
                };
                paired.push((fraction(&mut t_op), fraction(&mut t_alone)));
            }
        }
        "block" => {
            let spec = BlockSpec::quadra(k as u8, e as u8);
            let wts = match given {
                Some(w) => w,
                None => random_weights(spec.weights_len(c), 3),
            };
            let bw = BlockWeights::from_weights(c, k, e, wts.view())?;
            let dims = BlockDims { h, w: h, c, k, e };
            let cfg = ArchConfig::preset("quadranet25-xxs")?;
            let net = Network::new(cfg.clone(), random_weights(cfg.arch().weights_len(), 1))?
                .with_threads(a.threads)?;
            let (per, total) = match a.strip {
                Some(s) if s == 0 || s > h => {
                    return Err(format!("--strip {s}: a strip is 1 to {h} rows").into())
                }
                Some(s) if a.threads > 1 => {
                    return Err(format!("--strip {s} runs one thread, not {}", a.threads).into())
                }
                Some(s) => (0, quadra_core::plan::block_scratch_len(h, c, k, e, s)),
                None => run_block_scratch(dims, net.threads()),
            };
            let mut scratch = AlignedF32::zeros(total);
            let mut xa = AlignedF32::zeros(x0.len());
            let x = xa.as_mut_slice();
            ts = net.with_executor(|exec| -> Result<Vec<f64>, quadra_core::Error> {
                let mut ts = Vec::new();
                for i in 0..a.iters + a.warmup {
                    x.copy_from_slice(&x0);
                    let t = Instant::now();
                    match a.strip {
                        Some(s) => quadra_core::block::block_forward(
                            kern,
                            dims,
                            s,
                            &bw,
                            x,
                            scratch.as_mut_slice(),
                        )?,
                        None => run_block(exec, kern, dims, &bw, x, scratch.as_mut_slice(), per)?,
                    }
                    if i >= a.warmup {
                        ts.push(t.elapsed().as_secs_f64());
                    }
                }
                Ok(ts)
            })??;
            if a.op_output.is_some() {
                result = Some(x.to_vec());
            }
            flops = 2 * spec.macs(h, h, c);
        }
        _ => return Err(bad().into()),
    }
    if let (Some(p), Some(y)) = (&a.op_output, &result) {
        write_f32s(p, y)?;
    }
    ts.sort_by(f64::total_cmp);
    let p50 = percentile(&ts, 0.5);
    let gflops = flops as f64 / p50 / 1e9;
    let peak = fma_peak_gflops(kern.isa());
    let mut report = json!({"op": spec, "kernel": kern.isa().name(), "op_ms": p50 * 1e3, "op_gflops": gflops,
                        "fma_peak_gflops_per_core": peak, "flops": flops});
    kernel_ts.sort_by(f64::total_cmp);
    let kernel = (!kernel_ts.is_empty()).then(|| {
        let k50 = percentile(&kernel_ts, 0.5);
        (k50, flops as f64 / k50 / 1e9)
    });
    if let Some((k50, kg)) = kernel {
        report["qdw_row_only_ms"] = json!(k50 * 1e3);
        report["qdw_row_only_gflops"] = json!(kg);
    }
    // Median over rounds of each round's fraction of the peak sampled with it.
    let paired = (!paired.is_empty()).then(|| {
        let median = |f: fn(&(f64, f64)) -> f64| {
            let mut v: Vec<f64> = paired.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            percentile(&v, 0.5)
        };
        (median(|p| p.0), median(|p| p.1), paired.len())
    });
    if let Some((op, alone, _)) = paired {
        report["op_peak_fraction_paired"] = json!(op);
        report["qdw_row_only_peak_fraction_paired"] = json!(alone);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{spec} on {}: {:.4} ms, {gflops:.1} GFLOP/s ({:.0}% of the {peak:.1} GFLOP/s FMA peak)", kern.isa(), p50 * 1e3, 100.0 * gflops / peak);
        if let Some((k50, kg)) = kernel {
            println!("  the kernel alone (qdw_row on rows blocked beforehand): {:.4} ms, {kg:.1} GFLOP/s ({:.0}%)", k50 * 1e3, 100.0 * kg / peak);
        }
        if let Some((op, alone, n)) = paired {
            println!("  against the peak sampled beside them (median of {n} rounds): op {:.0}%, kernel alone {:.0}%", 100.0 * op, 100.0 * alone);
        }
    }
    Ok(())
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// ProxylessNAS latency-table key of one layer.
fn key(arch: &Arch<'_>, (h, w): (usize, usize), layer: Layer) -> String {
    let hw = Arch::stage_hw(h, w);
    match layer {
        Layer::Stem => format!(
            "Stem-input:{h}x{w}x{}-output:{}x{}x{}-expand:1-kernel:4-stride:4-idskip:0",
            arch.in_chans,
            hw[0].0,
            hw[0].1,
            arch.dim(0)
        ),
        Layer::Downsample { stage: s } => format!(
            "Downsample-input:{}x{}x{}-output:{}x{}x{}-expand:1-kernel:2-stride:2-idskip:0",
            hw[s - 1].0,
            hw[s - 1].1,
            arch.dim(s - 1),
            hw[s].0,
            hw[s].1,
            arch.dim(s)
        ),
        Layer::Block { stage: s, spec, .. } => block_key(hw[s], arch.dim(s), spec),
        Layer::Head => format!(
            "Logits-input:{}x{}x{}-output:{}",
            hw[3].0,
            hw[3].1,
            arch.dim(3),
            arch.num_classes
        ),
    }
}

fn block_key((h, w): (usize, usize), c: usize, spec: BlockSpec) -> String {
    if spec.is_identity() {
        format!("Identity-input:{h}x{w}x{c}-output:{h}x{w}x{c}-expand:0-kernel:0-stride:1-idskip:1")
    } else {
        format!(
            "QuadraBlock-input:{h}x{w}x{c}-output:{h}x{w}x{c}-expand:{}-kernel:{}-stride:1-idskip:1",
            spec.expansion, spec.kernel
        )
    }
}

/// What one measurement run found.
struct Measured {
    times: Vec<f64>,
    /// Each layer of the model and its duration in every timed run.
    layers: Vec<(Layer, Vec<f64>)>,
    /// Each candidate block's key and its sorted durations.
    candidates: Vec<(String, Vec<f64>)>,
}

/// Median, 10th and 90th percentile (ms) of durations in seconds, as a LUT entry.
fn stats(ts: &[f64], source: &str) -> serde_json::Value {
    let mut v = ts.to_vec();
    v.sort_by(f64::total_cmp);
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    json!({"mean": mean * 1e3, "median": percentile(&v, 0.5) * 1e3,
           "p10": percentile(&v, 0.1) * 1e3, "p90": percentile(&v, 0.9) * 1e3,
           "runs": v.len(), "source": source})
}

/// The latency table as YAML: one mapping per candidate key (ProxylessNAS's
/// `LatencyEstimator` reads `lut[key]['mean']`) holding `mean`, `median`, `p10`, `p90` (ms),
/// `runs` and `source`. Keys and strings are written as double-quoted JSON strings, which
/// YAML reads as the same strings whatever they contain (a plain `a: b` would not parse).
fn lut_yaml(lut: &serde_json::Map<String, serde_json::Value>) -> String {
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    let mut y = String::new();
    for (k, v) in lut {
        y.push_str(&format!("{}:\n", quote(k)));
        for n in ["mean", "median", "p10", "p90"] {
            // A non-finite number has no JSON form; YAML's is .nan.
            match v[n].as_f64() {
                Some(x) if x.is_finite() => y.push_str(&format!("  {n}: {x:.6}\n")),
                _ => y.push_str(&format!("  {n}: .nan\n")),
            }
        }
        y.push_str(&format!("  runs: {}\n", v["runs"].as_u64().unwrap_or(0)));
        y.push_str(&format!(
            "  source: {}\n",
            quote(v["source"].as_str().unwrap_or(""))
        ));
    }
    y
}

fn main() -> std::process::ExitCode {
    quadra_cpu::exit_quietly_on_broken_pipe();
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // A sentence, not the error's Debug form.
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(a: Args) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(op) = &a.op {
        return bench_op(&a, op);
    }
    let (h, w) = a.input_size;
    let (mut net, name) = match (&a.model, &a.preset) {
        (Some(p), _) => (Network::load(p)?, p.display().to_string()),
        (None, _) if a.config.is_some() => {
            let p = a.config.as_ref().expect("checked by the guard");
            let text = quadra_cpu::read_file(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            let text =
                String::from_utf8(text).map_err(|_| format!("{}: not UTF-8", p.display()))?;
            let cfg = ArchConfig::from_json(&text).map_err(|e| format!("{}: {e}", p.display()))?;
            let wts = random_weights(cfg.arch().weights_len(), 7);
            (
                Network::new(cfg, wts)?,
                format!("{} (random weights)", p.display()),
            )
        }
        (None, preset) => {
            let name = preset.clone().unwrap_or_else(|| "quadranet25-xxs".into());
            let cfg = ArchConfig::preset(&name)?;
            let wts = random_weights(cfg.arch().weights_len(), 7);
            (Network::new(cfg, wts)?, format!("{name} (random weights)"))
        }
    };
    let stored = net.weights()?.mats.dtype();
    if let Some(dtype) = a.dtype.filter(|d| *d != stored) {
        let (wts, _) = net.owned_weights()?.quantize(&net.config().arch(), dtype)?;
        let kern = net.kernels();
        net = Network::new(net.config().clone(), wts)?.with_kernels(kern);
    }
    if let Some(k) = &a.kernel {
        let isa = Isa::from_name(k).ok_or_else(|| format!("unknown kernel path '{k}'"))?;
        net = net.with_kernels(dispatch::kernels_for(isa)?);
    }
    let net = net.with_threads(a.threads)?;
    let kern = net.kernels();
    let threads = net.threads();
    let arch = net.config().arch();
    let model = net.model()?;
    let dtype = net.weights()?.mats.dtype();
    let plan = arch.plan_for(h, w, threads, dtype);
    let measured = net.with_executor(|exec| -> Result<Measured, quadra_core::Error> {
        let mut arena_buf = AlignedF32::zeros(plan.arena_len());
        let arena = arena_buf.as_mut_slice();
        let input = random(h * w * arch.in_chans, 11);
        let mut logits = vec![0.0f32; arch.num_classes];

        // Whole-model latency, single image.
        for _ in 0..a.warmup {
            model.forward_with(exec, kern, &input, h, w, arena, &mut logits)?;
        }
        let mut times = Vec::with_capacity(a.iters);
        for _ in 0..a.iters {
            let t = Instant::now();
            model.forward_with(exec, kern, &input, h, w, arena, &mut logits)?;
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);

        // Per-layer latency of the model itself.
        let mut layers: Vec<(Layer, Vec<f64>)> = Vec::new();
        for it in 0..a.iters {
            let mut i = 0;
            let mut last = Instant::now();
            model.forward_observed(exec, kern, &input, h, w, arena, &mut logits, &mut |l| {
                let now = Instant::now();
                let dt = (now - last).as_secs_f64();
                last = now;
                if it == 0 {
                    layers.push((l, vec![dt]));
                } else {
                    layers[i].1.push(dt);
                }
                i += 1;
            })?;
        }

        // Candidate blocks of the search space at every stage's shape.
        let mut candidates: Vec<(String, Vec<f64>)> = Vec::new();
        if !a.no_candidates {
            let hw = Arch::stage_hw(h, w);
            for (s, &(sh, sw)) in hw.iter().enumerate() {
                let c = arch.dim(s);
                for k in [3u8, 5, 7] {
                    for e in [2u8, 4] {
                        let spec = BlockSpec::quadra(k, e);
                        let wl = spec.weights_len(c);
                        let wts = random_weights(wl, 13);
                        let bw = BlockWeights::from_weights(c, k as usize, e as usize, wts.view())?;
                        let dims = BlockDims {
                            h: sh,
                            w: sw,
                            c,
                            k: k as usize,
                            e: e as usize,
                        };
                        let (per, total) = run_block_scratch(dims, threads);
                        let mut scratch = AlignedF32::zeros(total);
                        let x0 = random(sh * sw * c, 17);
                        let mut xa = AlignedF32::zeros(x0.len());
                        let x = xa.as_mut_slice();
                        let mut ts = Vec::new();
                        for i in 0..a.iters + a.warmup {
                            x.copy_from_slice(&x0);
                            let t = Instant::now();
                            run_block(exec, kern, dims, &bw, x, scratch.as_mut_slice(), per)?;
                            if i >= a.warmup {
                                ts.push(t.elapsed().as_secs_f64());
                            }
                        }
                        ts.sort_by(f64::total_cmp);
                        candidates.push((block_key((sh, sw), c, spec), ts));
                    }
                }
            }
        }

        Ok(Measured {
            times,
            layers,
            candidates,
        })
    })??;
    let Measured {
        times,
        layers,
        candidates,
    } = measured;
    // The same pass through `Session::run` (its own threads; NCHW input, converted inside):
    // what an embedding app and the C API get.
    let session_times = {
        let mut s = Session::new(&net, h, w, 1)?;
        let input = random(s.input_len(), 11);
        for _ in 0..a.warmup {
            s.run(&input, Layout::Nchw)?;
        }
        let mut ts = Vec::with_capacity(a.iters);
        for _ in 0..a.iters {
            let t = Instant::now();
            s.run(&input, Layout::Nchw)?;
            ts.push(t.elapsed().as_secs_f64());
        }
        ts.sort_by(f64::total_cmp);
        ts
    };
    let session_p50 = percentile(&session_times, 0.5);
    let (p50, p90, min) = (percentile(&times, 0.5), percentile(&times, 0.9), times[0]);
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let mean_of = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let layer_sum: f64 = layers.iter().map(|l| mean_of(&l.1)).sum();
    let macs = arch.macs(h, w);
    let gflops = 2.0 * macs as f64 / p50 / 1e9;
    let peak = fma_peak_gflops(kern.isa());
    let rss = peak_rss_bytes();
    // An unfused, layer-by-layer runtime holds at least the block input, LN2 output,
    // hidden layer and its GELU at once: (2 + 2E)·H·W·C floats in the worst block.
    let hw = Arch::stage_hw(h, w);
    let unfused_peak = (0..4)
        .flat_map(|s| arch.stages[s].blocks.iter().map(move |b| (s, *b)))
        .filter(|(_, b)| !b.is_identity())
        .map(|(s, b)| (2 + 2 * b.expansion as usize) * hw[s].0 * hw[s].1 * arch.dim(s))
        .max()
        .unwrap_or(0);
    let layer_rows: Vec<serde_json::Value> = layers
        .iter()
        .map(|(l, t)| {
            let mut r = stats(t, "model");
            r["layer"] = json!(format!("{l:?}"));
            r["key"] = json!(key(&arch, (h, w), *l));
            r["mean_ms"] = json!(mean_of(t) * 1e3);
            r
        })
        .collect();
    // The latency table: every layer of this network as it ran here (in place in the
    // arena, its own weights, within whole forward passes: layers with the same key pool
    // their runs), identity blocks included; then the candidate blocks of the search space
    // this network lacks, timed alone (their own random weights, warm from run to run).
    let mut pooled: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for (l, t) in &layers {
        pooled.entry(key(&arch, (h, w), *l)).or_default().extend(t);
    }
    let mut lut = serde_json::Map::new();
    for (k, t) in &pooled {
        lut.insert(
            k.clone(),
            stats(t, "model: in place, own weights, whole forward passes"),
        );
    }
    for (k, t) in &candidates {
        if !lut.contains_key(k) {
            lut.insert(k.clone(), stats(t, "candidate: alone, warm random weights"));
        }
    }
    // The search space's identity (skip) block at every stage shape: no work at all.
    if !a.no_candidates {
        for (s, &hw) in Arch::stage_hw(h, w).iter().enumerate() {
            let k = block_key(hw, arch.dim(s), BlockSpec::IDENTITY);
            lut.entry(k).or_insert_with(|| {
                json!({"mean": 0.0, "median": 0.0, "p10": 0.0, "p90": 0.0, "runs": 0,
                       "source": "identity: the block is skipped, no work"})
            });
        }
    }
    // --check: the table summed over this network's layers against the measured latency.
    let lut_sum: f64 = layers
        .iter()
        .map(|(l, _)| {
            lut[&key(&arch, (h, w), *l)]["median"]
                .as_f64()
                .unwrap_or(0.0)
        })
        .sum();
    let report = json!({
        "model": name,
        "input": [h, w],
        "kernel": kern.isa().name(),
        "kernel_path": kern.describe(),
        "dtype": dtype.name(),
        "threads": threads,
        "latency_ms": {"p50": p50 * 1e3, "p90": p90 * 1e3, "min": min * 1e3, "mean": mean * 1e3},
        "session_latency_ms": {"p50": session_p50 * 1e3, "min": session_times[0] * 1e3},
        "images_per_s": 1.0 / mean,
        "multiply_adds": macs,
        "gflops": gflops,
        "fma_peak_gflops_per_core": peak,
        "fraction_of_peak": gflops / (peak * threads as f64),
        "arena_bytes": plan.arena_len() * 4,
        "activation_bytes": plan.act_len * 4,
        "scratch_bytes": plan.scratch_len * 4,
        "largest_activation_bytes": arch.largest_activation(h, w) * 4,
        "unfused_block_peak_bytes": unfused_peak * 4,
        "peak_rss_bytes": rss,
        "layers": layer_rows,
        "layer_sum_ms": layer_sum * 1e3,
        "lut_sum_ms": lut_sum,
        "lut_sum_vs_p50": lut_sum / (p50 * 1e3),
    });
    let write = |p: &std::path::Path, text: String| {
        quadra_cpu::file::write_atomic(p, text.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", p.display()))
    };
    if let Some(p) = &a.lut_json {
        write(p, serde_json::to_string_pretty(&lut)?)?;
    }
    if let Some(p) = &a.lut_yaml {
        write(p, lut_yaml(&lut))?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("model       {name}, {h}x{w}, batch 1");
    println!(
        "kernels     {} , {threads} thread(s), weights {}",
        kern.describe(),
        dtype.name()
    );
    println!(
        "latency     p50 {:.3} ms   p90 {:.3} ms   min {:.3} ms   ({} runs)",
        p50 * 1e3,
        p90 * 1e3,
        min * 1e3,
        times.len()
    );
    println!(
        "session     p50 {:.3} ms   min {:.3} ms   (Session::run, NCHW input)",
        session_p50 * 1e3,
        session_times[0] * 1e3
    );
    println!("throughput  {:.1} images/s", 1.0 / mean);
    println!(
        "compute     {:.3} GFLOP/image, {:.1} GFLOP/s = {:.0}% of the FMA peak ({:.1} GFLOP/s per core x {threads})",
        2.0 * macs as f64 / 1e9,
        gflops,
        100.0 * gflops / (peak * threads as f64),
        peak
    );
    println!(
        "arena       {} bytes = activations {} + scratch {}; largest activation {} ({:.2}x)",
        plan.arena_len() * 4,
        plan.act_len * 4,
        plan.scratch_len * 4,
        arch.largest_activation(h, w) * 4,
        plan.arena_len() as f64 / arch.largest_activation(h, w) as f64
    );
    println!(
        "unfused     a layer-by-layer runtime holds at least {} bytes in its worst block",
        unfused_peak * 4
    );
    if let Some(r) = rss {
        println!("peak RSS    {r} bytes");
    }
    println!("\nper layer (mean ms over {} runs):", a.iters);
    for (l, t) in &layers {
        let t = mean_of(t);
        println!(
            "  {:>9.4}  {:5.1}%  {}",
            t * 1e3,
            100.0 * t / layer_sum,
            key(&arch, (h, w), *l)
        );
    }
    println!(
        "  {:>9.4}  sum of layers ({:.1}% of the whole-model mean)",
        layer_sum * 1e3,
        100.0 * layer_sum / mean
    );
    if !candidates.is_empty() {
        println!("\ncandidate blocks (median ms, alone, warm):");
        for (k, t) in &candidates {
            println!("  {:>9.4}  {k}", percentile(t, 0.5) * 1e3);
        }
    }
    if a.check {
        println!(
            "\ncheck       latency table summed over this network: {lut_sum:.3} ms against the measured p50 {:.3} ms ({:+.1}%)",
            p50 * 1e3,
            100.0 * (lut_sum / (p50 * 1e3) - 1.0)
        );
    }
    Ok(())
}
