//! Shared pieces of the benchmarks: deterministic random data, FLOP counts, the unfused
//! baselines the fused kernels are compared against, and measuring a whole network
//! ([`measure`]) into a latency table ([`lut`]).

pub mod baseline;
pub mod lut;
pub mod measure;
pub mod peak;

use quadra_core::kernels::QdwWeights;

/// Deterministic pseudo-random floats in [-1, 1).
pub fn random(n: usize, seed: u64) -> Vec<f32> {
    random_iter(seed).take(n).collect()
}

/// The endless stream [`random`] takes from.
pub fn random_iter(seed: u64) -> impl Iterator<Item = f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    std::iter::repeat_with(move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        ((s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    })
}

/// FLOPs of one QDW conv (3 depthwise convs; a multiply-add is 2 FLOPs, plus the product
/// and the sum of the quadratic term).
pub fn qdw_flops(h: usize, w: usize, c: usize, k: usize) -> u64 {
    (h * w * c) as u64 * (3 * 2 * k * k + 2) as u64
}

/// Random packed QDW weights.
pub fn qdw_weights(k: usize, c: usize) -> (Vec<f32>, Vec<f32>) {
    (
        random(QdwWeights::taps_len(k, c), 1)
            .iter()
            .map(|v| v * 0.1)
            .collect(),
        random(3 * c, 2),
    )
}

/// Random weight streams for `len`: vectors (norm weights, layer scales, scales) around 1,
/// matrices small, so activations stay in a realistic range. Latency does not depend on
/// the values.
pub fn random_weights(
    len: quadra_core::WeightsLen,
    seed: u64,
) -> quadra_cpu::weights::OwnedWeights {
    // Straight into the aligned buffers: one copy of the weights in memory, so the peak
    // RSS `quadra-bench` reports is the model's, not this generator's.
    let fill = |n: usize, seed: u64, f: fn(f32) -> f32| {
        let mut v = quadra_cpu::AlignedF32::zeros(n);
        for (d, r) in v.iter_mut().zip(random_iter(seed)) {
            *d = f(r);
        }
        v
    };
    quadra_cpu::weights::OwnedWeights {
        vecs: fill(len.vecs, seed, |v| 1.0 + 0.3 * v),
        mats: quadra_cpu::weights::OwnedMats::F32(fill(len.mats, seed + 1, |v| 0.05 * v)),
    }
}

/// Peak resident set size of this process in bytes (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
