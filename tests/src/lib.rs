//! Helpers shared by the integration tests: fixture paths, the kernel paths to exercise,
//! and the tolerance check against PyTorch.

use std::path::PathBuf;

use quadra_core::{Isa, Kernels};
use quadra_cpu::checkpoint::{StateDict, Tensor};

/// `tests/fixtures/`.
pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// A fixture's weights, its `input`/`output` tensors and its JSON description.
pub struct Fixture {
    /// Weights in the official key names.
    pub weights: StateDict,
    /// `input`, NCHW.
    pub input: Tensor,
    /// `output` of the official PyTorch definition.
    pub output: Tensor,
    /// Contents of `NAME.json`.
    pub meta: String,
}

/// Loads fixture `name`.
pub fn fixture(name: &str) -> Fixture {
    let d = fixture_dir();
    let weights = StateDict::load(d.join(format!("{name}.weights.safetensors"))).unwrap();
    let mut io = StateDict::load(d.join(format!("{name}.io.safetensors"))).unwrap();
    let meta = std::fs::read_to_string(d.join(format!("{name}.json"))).unwrap();
    Fixture {
        weights,
        input: io.tensors.remove("input").expect("fixture has input"),
        output: io.tensors.remove("output").expect("fixture has output"),
        meta,
    }
}

/// Every kernel path this CPU runs (with its int8 dot-product extension where the CPU has
/// it). `QUADRA_REQUIRE_ISA=avx2,avx512` (or `neon`; `avx512+vnni`, `neon+dotprod` for the
/// extension) makes the run fail if a named path is missing, so a skipped path cannot pass
/// unnoticed.
pub fn kernel_paths() -> Vec<Kernels> {
    let v = quadra_cpu::dispatch::available();
    if let Ok(req) = std::env::var("QUADRA_REQUIRE_ISA") {
        for name in req.split(',').filter(|s| !s.is_empty()) {
            let (isa, dot) = name.split_once('+').unwrap_or((name, ""));
            let isa = Isa::from_name(isa).expect("QUADRA_REQUIRE_ISA names an unknown ISA");
            assert!(
                v.iter()
                    .any(|k| k.isa() == isa && (dot.is_empty() || k.int8_dot())),
                "QUADRA_REQUIRE_ISA demands {name}, unavailable here"
            );
        }
    }
    v
}

/// [`kernel_paths`], plus each path with an int8 dot-product extension also without it:
/// every int8 GEMM this CPU can run.
pub fn kernel_paths_q8() -> Vec<Kernels> {
    let mut v = kernel_paths();
    let plain: Vec<Kernels> = v
        .iter()
        .filter(|k| k.int8_dot())
        .map(|k| k.without_int8_dot())
        .collect();
    v.extend(plain);
    v
}

/// Cosine similarity (f64 sums); NaN if either vector holds a NaN.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Asserts `max |ours - torch| <= 1e-4 · (1 + max |torch|)`; returns the max difference.
pub fn assert_matches_torch(ours: &[f32], torch: &[f32], what: &str) -> f32 {
    assert_eq!(ours.len(), torch.len(), "{what}: output length");
    let scale = 1.0 + torch.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let diff = ours
        .iter()
        .zip(torch)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        diff.is_finite() && diff <= 1e-4 * scale,
        "{what}: max |ours - torch| = {diff}, tolerance {}",
        1e-4 * scale
    );
    diff
}

/// NCHW `[1, C, H, W]` data to channels-last `[H, W, C]`.
pub fn nchw_to_hwc(x: &[f32], c: usize, h: usize, w: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for ch in 0..c {
        for i in 0..h * w {
            out[i * c + ch] = x[ch * h * w + i];
        }
    }
    out
}
