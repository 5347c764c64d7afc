//! What `quadra-bench` prints about a measured network: a JSON report or tables.

use quadra_bench::{peak::fma_peak_gflops, peak_rss_bytes};
use quadra_core::arch::Arch;
use quadra_cpu::Network;
use serde_json::{json, Map, Value};

use crate::{Args, Res};
use quadra_bench::lut::{self, key, mean, percentile};
use quadra_bench::measure::Measured;

/// The numbers every report shows, derived once.
struct Summary {
    p50: f64,
    p90: f64,
    min: f64,
    mean: f64,
    session_p50: f64,
    layer_sum: f64,
    macs: u64,
    gflops: f64,
    peak: f64,
    /// What an unfused, layer-by-layer runtime holds at least in its worst block (floats).
    unfused_peak: usize,
    lut_sum: f64,
}

impl Summary {
    fn of(a: &Args, net: &Network, m: &Measured, table: &Map<String, Value>) -> Self {
        let (h, w) = a.input_size;
        let arch = net.config().arch();
        let t = &m.times;
        let p50 = percentile(t, 0.5);
        let macs = arch.macs(h, w);
        // The block input, LN2 output, hidden layer and its GELU at once: (2 + 2E)·H·W·C.
        let hw = Arch::stage_hw(h, w);
        let unfused_peak = (0..4)
            .flat_map(|s| arch.stages[s].blocks.iter().map(move |b| (s, *b)))
            .filter(|(_, b)| !b.is_identity())
            .map(|(s, b)| (2 + 2 * b.expansion as usize) * hw[s].0 * hw[s].1 * arch.dim(s))
            .max()
            .unwrap_or(0);
        Summary {
            p50,
            p90: percentile(t, 0.9),
            min: t[0],
            mean: mean(t),
            session_p50: percentile(&m.session, 0.5),
            layer_sum: m.layers.iter().map(|l| mean(&l.1)).sum(),
            macs,
            gflops: 2.0 * macs as f64 / p50 / 1e9,
            peak: fma_peak_gflops(net.kernels().isa()),
            unfused_peak,
            lut_sum: lut::sum_over(table, &arch, (h, w), m),
        }
    }
}

/// Prints the report `--json` or the tables.
pub(crate) fn print(
    a: &Args,
    net: &Network,
    name: &str,
    m: &Measured,
    table: &Map<String, Value>,
) -> Res<()> {
    let s = Summary::of(a, net, m, table);
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json(a, net, name, m, &s)?)?
        );
    } else {
        text(a, net, name, m, &s)?;
    }
    Ok(())
}

fn json(a: &Args, net: &Network, name: &str, m: &Measured, s: &Summary) -> Res<Value> {
    let (h, w) = a.input_size;
    let arch = net.config().arch();
    let kern = net.kernels();
    let threads = net.threads();
    let layers: Vec<Value> = m
        .layers
        .iter()
        .map(|(l, t)| {
            let mut r = lut::stats(t, "model");
            r["layer"] = json!(format!("{l:?}"));
            r["key"] = json!(key(&arch, (h, w), *l));
            r["mean_ms"] = json!(mean(t) * 1e3);
            r
        })
        .collect();
    let plan = &m.plan;
    Ok(json!({
        "model": name,
        "input": [h, w],
        "kernel": kern.isa().name(),
        "kernel_path": kern.describe(),
        "precision": kern.precision().name(),
        "dtype": net.weights()?.mats.dtype().name(),
        "threads": threads,
        "cores": m.placement.cores,
        "pinned": m.placement.pinned,
        "cores_policy": a.cores.name(),
        "bands": m.placement.bands,
        "band_weights": m.placement.weights,
        "placement": m.placement.describe,
        "latency_ms": {"p50": s.p50 * 1e3, "p90": s.p90 * 1e3, "min": s.min * 1e3,
                       "mean": s.mean * 1e3},
        "session_latency_ms": {"p50": s.session_p50 * 1e3, "min": m.session[0] * 1e3},
        "images_per_s": 1.0 / s.mean,
        "multiply_adds": s.macs,
        "gflops": s.gflops,
        "fma_peak_gflops_per_core": s.peak,
        // w8a8 does its pointwise layers in int8 and fp16 in half precision, which the f32
        // FMA peak does not bound.
        "fraction_of_peak": (net.weights()?.mats.dtype() != quadra_core::Dtype::W8A8
            && !kern.fp16())
            .then(|| s.gflops / (s.peak * threads as f64)),
        "arena_bytes": plan.arena_len() * 4,
        "activation_bytes": plan.act_len * 4,
        "scratch_bytes": plan.scratch_len * 4,
        "largest_activation_bytes": arch.largest_activation(h, w) * 4,
        "unfused_block_peak_bytes": s.unfused_peak * 4,
        "peak_rss_bytes": peak_rss_bytes(),
        "layers": layers,
        "layer_sum_ms": s.layer_sum * 1e3,
        "lut_sum_ms": s.lut_sum,
        "lut_sum_vs_p50": s.lut_sum / (s.p50 * 1e3),
    }))
}

fn text(a: &Args, net: &Network, name: &str, m: &Measured, s: &Summary) -> Res<()> {
    let (h, w) = a.input_size;
    let arch = net.config().arch();
    let threads = net.threads();
    let plan = &m.plan;
    println!("model       {name}, {h}x{w}, batch 1");
    println!(
        "kernels     {}, weights {}",
        m.placement.describe,
        net.weights()?.mats.dtype().name()
    );
    println!(
        "latency     p50 {:.3} ms   p90 {:.3} ms   min {:.3} ms   ({} runs)",
        s.p50 * 1e3,
        s.p90 * 1e3,
        s.min * 1e3,
        m.times.len()
    );
    println!(
        "session     p50 {:.3} ms   min {:.3} ms   (Session::run, NCHW input)",
        s.session_p50 * 1e3,
        m.session[0] * 1e3
    );
    println!("throughput  {:.1} images/s", 1.0 / s.mean);
    let dtype = net.weights()?.mats.dtype();
    if dtype == quadra_core::Dtype::W8A8 {
        // Most multiply-adds are int8 dot products, which the f32 FMA peak does not bound.
        println!(
            "compute     {:.3} G multiply-adds x 2 per image, {:.1} G/s (the pointwise layers in int8: not comparable with the f32 FMA peak of {:.1} GFLOP/s per core)",
            2.0 * s.macs as f64 / 1e9,
            s.gflops,
            s.peak
        );
    } else if net.kernels().fp16() {
        // The pointwise layers run `fmla .8h`: twice the f32 FMA rate.
        println!(
            "compute     {:.3} G multiply-adds x 2 per image, {:.1} G/s (the pointwise layers in half precision: not comparable with the f32 FMA peak of {:.1} GFLOP/s per core)",
            2.0 * s.macs as f64 / 1e9,
            s.gflops,
            s.peak
        );
    } else {
        println!(
            "compute     {:.3} GFLOP/image, {:.1} GFLOP/s = {:.0}% of the FMA peak ({:.1} GFLOP/s per core x {threads})",
            2.0 * s.macs as f64 / 1e9,
            s.gflops,
            100.0 * s.gflops / (s.peak * threads as f64),
            s.peak
        );
    }
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
        s.unfused_peak * 4
    );
    if let Some(r) = peak_rss_bytes() {
        println!("peak RSS    {r} bytes");
    }
    println!("\nper layer (mean ms over {} runs):", a.iters);
    for (l, t) in &m.layers {
        let t = mean(t);
        println!(
            "  {:>9.4}  {:5.1}%  {}",
            t * 1e3,
            100.0 * t / s.layer_sum,
            key(&arch, (h, w), *l)
        );
    }
    println!(
        "  {:>9.4}  sum of layers ({:.1}% of the whole-model mean)",
        s.layer_sum * 1e3,
        100.0 * s.layer_sum / s.mean
    );
    if !m.candidates.is_empty() {
        println!("\ncandidate blocks (median ms, alone, warm):");
        for (k, t) in &m.candidates {
            println!("  {:>9.4}  {k}", percentile(t, 0.5) * 1e3);
        }
    }
    if a.check {
        println!(
            "\ncheck       latency table summed over this network: {:.3} ms against the measured p50 {:.3} ms ({:+.1}%)",
            s.lut_sum,
            s.p50 * 1e3,
            100.0 * (s.lut_sum / (s.p50 * 1e3) - 1.0)
        );
    }
    Ok(())
}
