//! The latency lookup table: ProxylessNAS keys, per-entry statistics, and its YAML form.

use quadra_core::arch::{Arch, BlockSpec};
use quadra_core::net::Layer;
use serde_json::{json, Map, Value};

use crate::measure::Measured;

/// The value at quantile `q` of sorted durations (NaN for none).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// The mean of durations (0 for none).
pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// ProxylessNAS latency-table key of one layer.
pub fn key(arch: &Arch<'_>, (h, w): (usize, usize), layer: Layer) -> String {
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

/// The key of a block (a QuadraBlock or an identity) at a stage's shape.
pub fn block_key((h, w): (usize, usize), c: usize, spec: BlockSpec) -> String {
    if spec.is_identity() {
        format!("Identity-input:{h}x{w}x{c}-output:{h}x{w}x{c}-expand:0-kernel:0-stride:1-idskip:1")
    } else {
        format!(
            "QuadraBlock-input:{h}x{w}x{c}-output:{h}x{w}x{c}-expand:{}-kernel:{}-stride:1-idskip:1",
            spec.expansion, spec.kernel
        )
    }
}

/// Mean, median, 10th and 90th percentile (ms) of durations in seconds, as a table entry.
pub fn stats(ts: &[f64], source: &str) -> Value {
    let mut v = ts.to_vec();
    v.sort_by(f64::total_cmp);
    json!({"mean": mean(&v) * 1e3, "median": percentile(&v, 0.5) * 1e3,
           "p10": percentile(&v, 0.1) * 1e3, "p90": percentile(&v, 0.9) * 1e3,
           "runs": v.len(), "source": source})
}

/// The latency table: every layer of this network as it ran here (in place in the arena,
/// its own weights, within whole forward passes: layers with the same key pool their
/// runs), identity blocks included; then the candidate blocks of the search space this
/// network lacks, timed alone (their own random weights, warm from run to run); with
/// `identities`, the identity (skip) block at every stage shape.
pub fn table(
    arch: &Arch<'_>,
    hw: (usize, usize),
    m: &Measured,
    identities: bool,
) -> Map<String, Value> {
    let mut pooled: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for (l, t) in &m.layers {
        pooled.entry(key(arch, hw, *l)).or_default().extend(t);
    }
    let mut lut = Map::new();
    for (k, t) in &pooled {
        lut.insert(
            k.clone(),
            stats(t, "model: in place, own weights, whole forward passes"),
        );
    }
    for (k, t) in &m.candidates {
        if !lut.contains_key(k) {
            lut.insert(k.clone(), stats(t, "candidate: alone, warm random weights"));
        }
    }
    if identities {
        for (s, &shw) in Arch::stage_hw(hw.0, hw.1).iter().enumerate() {
            let k = block_key(shw, arch.dim(s), BlockSpec::IDENTITY);
            lut.entry(k).or_insert_with(|| {
                json!({"mean": 0.0, "median": 0.0, "p10": 0.0, "p90": 0.0, "runs": 0,
                       "source": "identity: the block is skipped, no work"})
            });
        }
    }
    lut
}

/// The table's medians summed over this network's layers (`--check`), in ms.
pub fn sum_over(
    lut: &Map<String, Value>,
    arch: &Arch<'_>,
    hw: (usize, usize),
    m: &Measured,
) -> f64 {
    m.layers
        .iter()
        .map(|(l, _)| lut[&key(arch, hw, *l)]["median"].as_f64().unwrap_or(0.0))
        .sum()
}

/// The latency table as YAML: one mapping per candidate key (ProxylessNAS's
/// `LatencyEstimator` reads `lut[key]['mean']`) holding `mean`, `median`, `p10`, `p90` (ms),
/// `runs` and `source`. Keys and strings are written as double-quoted JSON strings, which
/// YAML reads as the same strings whatever they contain (a plain `a: b` would not parse).
pub fn yaml(lut: &Map<String, Value>) -> String {
    let quote = |s: &str| Value::from(s).to_string();
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
