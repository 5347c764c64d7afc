//! `--op`: one QDW conv or one QuadraBlock, alone, with random or given weights and input.

use std::time::Instant;

use quadra_bench::peak::{fma_peak_gflops, PeakSampler};
use quadra_bench::{random, random_weights};
use quadra_core::arch::BlockSpec;
use quadra_core::block::{BlockDims, BlockWeights};
use quadra_core::kernels::{self, QdwWeights};
use quadra_core::{Isa, Kernels, MatData};
use quadra_cpu::config::ArchConfig;
use quadra_cpu::{dispatch, AlignedF32, Network};
use serde_json::json;

use crate::{Args, Res};
use quadra_bench::lut::percentile;

/// A lone operator's packed weights from a PyTorch state_dict: the tensors are placed as
/// block 0 of a one-block network (the only part packed from the file; the rest is zeros)
/// and the block's stretch of the streams is returned. For `qdw` only the `QuadraConv`
/// tensors are read (keys `conv{1,2,3}.{weight,bias}`), for `block` every block key.
fn op_weights_from(
    path: &std::path::Path,
    qdw_only: bool,
    (c, k, e): (usize, usize, usize),
) -> Res<quadra_cpu::weights::OwnedWeights> {
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
fn read_f32s(path: &std::path::Path, n: usize) -> Res<Vec<f32>> {
    let b = quadra_cpu::file::read_file(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
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

fn write_f32s(path: &std::path::Path, v: &[f32]) -> Res<()> {
    let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    quadra_cpu::file::write_atomic(path, &b)
        .map_err(|e| format!("cannot write {}: {e}", path.display()).into())
}

/// Largest map side `--op` measures (a 4096x4096 map of the widest C is already 1 GiB).
const MAX_OP_SIDE: usize = 4096;

/// A parsed `--op`: `qdw:CxHxK` or `block:CxHxKxE` (E defaults to 4).
struct Op {
    block: bool,
    c: usize,
    h: usize,
    k: usize,
    e: usize,
}

impl Op {
    /// Parses and checks `spec` (what the kernels take) before anything is allocated.
    fn parse(spec: &str, strip: Option<usize>) -> Res<Self> {
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
        let block = match kind {
            "qdw" => false,
            "block" => true,
            _ => return Err(bad().into()),
        };
        if n.contains(&0) {
            return Err(format!("--op '{spec}': every dimension must be at least 1").into());
        }
        let e = n.get(3).copied().unwrap_or(4);
        if strip.is_some() && !block {
            return Err(format!("--op '{spec}': --strip applies to block:CxHxKxE only").into());
        }
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
        Ok(Op { block, c, h, k, e })
    }
}

/// What measuring an operator found (durations in seconds).
#[derive(Default)]
struct Timed {
    /// The operator, sorted.
    op: Vec<f64>,
    /// QDW only: the `qdw_row` kernel alone on rows blocked beforehand, sorted.
    kernel: Vec<f64>,
    /// QDW only: per round, (op, kernel alone) as fractions of the FMA peak sampled then.
    paired: Vec<(f64, f64)>,
    /// The output, when `--op-output` asks for it.
    output: Option<Vec<f32>>,
    flops: u64,
}

/// `--op`: one QDW conv or one QuadraBlock, median of `iters` runs.
pub(crate) fn bench(a: &Args, spec: &str) -> Res<()> {
    let op = Op::parse(spec, a.strip)?;
    let kern = match &a.kernel {
        Some(name) => dispatch::kernels_for(Isa::from_name(name).ok_or_else(|| {
            format!("unknown kernel path '{name}': use scalar, avx2, avx512 or neon")
        })?)?,
        None => dispatch::default_kernels()?,
    };
    let Op { c, h, k, e, block } = op;
    let x0 = match &a.op_input {
        Some(p) => read_f32s(p, h * h * c)?,
        None => random(h * h * c, 5),
    };
    let given = match &a.op_weights {
        Some(p) => Some(op_weights_from(p, !block, (c, k, e))?),
        None => None,
    };
    let mut t = if block {
        bench_block(a, &op, kern, &x0, given)?
    } else {
        bench_qdw(a, &op, kern, &x0, given)?
    };
    if let (Some(p), Some(y)) = (&a.op_output, &t.output) {
        write_f32s(p, y)?;
    }
    t.op.sort_by(f64::total_cmp);
    t.kernel.sort_by(f64::total_cmp);
    report(a, spec, kern, &t)
}

fn bench_qdw(
    a: &Args,
    &Op { c, h, k, e, .. }: &Op,
    kern: Kernels,
    x0: &[f32],
    given: Option<quadra_cpu::weights::OwnedWeights>,
) -> Res<Timed> {
    use quadra_core::block::{qdw_forward, qdw_scratch_len};
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
    let mut t = Timed {
        flops: quadra_bench::qdw_flops(h, h, c, k),
        ..Timed::default()
    };
    // The kernel alone: every input row channel-blocked and padded once (what the ring
    // holds, and inside a block what LayerNorm writes), then only `qdw_row`.
    let prow = kernels::qdw_row_len(h, c, k);
    let mut blocked = AlignedF32::zeros((h + k - 1) * prow);
    for (y, src) in x0.chunks_exact(h * c).enumerate() {
        let dst = &mut blocked[(y + k / 2) * prow..(y + k / 2 + 1) * prow];
        kernels::block_row(kern, src, h, c, k, dst)?;
    }
    let mut out = AlignedF32::zeros(h * h * c);
    let mut op = |x: &mut [f32]| -> Result<f64, quadra_core::Error> {
        x.copy_from_slice(x0);
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
        t.output = Some(xa.to_vec());
    }
    // Rounds of: a ~10 ms sample of the FMA peak, then a share of the op's runs and of the
    // kernel's, so each round's ratios compare numbers taken together.
    let sampler = PeakSampler::new(kern.isa(), 0.01);
    let rounds = a.iters.min(10);
    for r in 0..rounds {
        let n = a.iters * (r + 1) / rounds - a.iters * r / rounds;
        let peak = sampler.sample();
        // One after the other, not interleaved: each keeps its own data in L2.
        let mut t_op = (0..n)
            .map(|_| op(xa.as_mut_slice()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut t_alone = (0..n)
            .map(|_| alone(out.as_mut_slice()))
            .collect::<Result<Vec<_>, _>>()?;
        t.op.extend_from_slice(&t_op);
        t.kernel.extend_from_slice(&t_alone);
        let flops = t.flops;
        let fraction = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            flops as f64 / percentile(v, 0.5) / 1e9 / peak
        };
        t.paired.push((fraction(&mut t_op), fraction(&mut t_alone)));
    }
    Ok(t)
}

fn bench_block(
    a: &Args,
    &Op { c, h, k, e, .. }: &Op,
    kern: Kernels,
    x0: &[f32],
    given: Option<quadra_cpu::weights::OwnedWeights>,
) -> Res<Timed> {
    let spec = BlockSpec::quadra(k as u8, e as u8);
    let wts = match given {
        Some(w) => w,
        None => random_weights(spec.weights_len(c), 3),
    };
    let bw = BlockWeights::from_weights(c, k, e, wts.view())?;
    let dims = BlockDims { h, w: h, c, k, e };
    let mut t = Timed {
        flops: 2 * spec.macs(h, h, c),
        ..Timed::default()
    };
    if let Some(s) = a.strip {
        if s == 0 || s > h {
            return Err(format!("--strip {s}: a strip is 1 to {h} rows").into());
        }
        if a.threads != 1 {
            return Err(format!("--strip {s} runs on one thread: give --threads 1").into());
        }
        let mut scratch = AlignedF32::zeros(quadra_core::plan::block_scratch_len(h, c, k, e, s));
        let mut x = AlignedF32::zeros(x0.len());
        for i in 0..a.iters + a.warmup {
            x.copy_from_slice(x0);
            let start = Instant::now();
            quadra_core::block::block_forward(kern, dims, s, &bw, &mut x, &mut scratch)?;
            if i >= a.warmup {
                t.op.push(start.elapsed().as_secs_f64());
            }
        }
        t.output = a.op_output.is_some().then(|| x.to_vec());
        return Ok(t);
    }
    // The block on the threads of a network (any network: only its executor is used).
    let cfg = ArchConfig::preset("quadranet25-xxs")?;
    let net = Network::new(cfg.clone(), random_weights(cfg.arch().weights_len(), 1))?
        .with_threads(a.threads)?;
    t.op = net.with_executor(|exec| {
        quadra_bench::measure::time_block(&a.opts(), exec, kern, dims, &bw, x0)
    })??;
    if a.op_output.is_some() {
        // The output of one more run, as the timed runs computed it.
        let (per, total) = quadra_core::net::run_block_scratch(dims, net.threads());
        let mut scratch = AlignedF32::zeros(total);
        let mut x = AlignedF32::from(x0.to_vec());
        net.with_executor(|exec| {
            quadra_core::net::run_block(exec, kern, dims, &bw, &mut x, &mut scratch, per)
        })??;
        t.output = Some(x.to_vec());
    }
    Ok(t)
}

fn report(a: &Args, spec: &str, kern: Kernels, t: &Timed) -> Res<()> {
    let p50 = percentile(&t.op, 0.5);
    let gflops = t.flops as f64 / p50 / 1e9;
    let peak = fma_peak_gflops(kern.isa());
    let mut report = json!({"op": spec, "kernel": kern.isa().name(), "op_ms": p50 * 1e3,
        "op_gflops": gflops, "fma_peak_gflops_per_core": peak, "flops": t.flops});
    let kernel = (!t.kernel.is_empty()).then(|| {
        let k50 = percentile(&t.kernel, 0.5);
        (k50, t.flops as f64 / k50 / 1e9)
    });
    if let Some((k50, kg)) = kernel {
        report["qdw_row_only_ms"] = json!(k50 * 1e3);
        report["qdw_row_only_gflops"] = json!(kg);
    }
    // Median over rounds of each round's fraction of the peak sampled with it.
    let paired = (!t.paired.is_empty()).then(|| {
        let median = |f: fn(&(f64, f64)) -> f64| {
            let mut v: Vec<f64> = t.paired.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            percentile(&v, 0.5)
        };
        (median(|p| p.0), median(|p| p.1), t.paired.len())
    });
    if let Some((op, alone, _)) = paired {
        report["op_peak_fraction_paired"] = json!(op);
        report["qdw_row_only_peak_fraction_paired"] = json!(alone);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{spec} on {}: {:.4} ms, {gflops:.1} GFLOP/s ({:.0}% of the {peak:.1} GFLOP/s FMA peak)",
        kern.isa(),
        p50 * 1e3,
        100.0 * gflops / peak
    );
    if let Some((k50, kg)) = kernel {
        println!(
            "  the kernel alone (qdw_row on rows blocked beforehand): {:.4} ms, {kg:.1} GFLOP/s ({:.0}%)",
            k50 * 1e3,
            100.0 * kg / peak
        );
    }
    if let Some((op, alone, n)) = paired {
        println!(
            "  against the peak sampled beside them (median of {n} rounds): op {:.0}%, kernel alone {:.0}%",
            100.0 * op,
            100.0 * alone
        );
    }
    Ok(())
}
