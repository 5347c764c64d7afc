//! Helpers shared by the integration tests: fixture paths, the kernel paths to exercise,
//! and the tolerance check against PyTorch.

use std::path::PathBuf;

use quadra_core::Kernels;
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
        match Kernels::first_missing(&v, &req) {
            Ok(None) => {}
            Ok(Some(name)) => panic!("QUADRA_REQUIRE_ISA demands {name}, unavailable here"),
            Err(name) => panic!("QUADRA_REQUIRE_ISA names an unknown ISA: {name}"),
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

pub use quadra_core::compare::cosine;

/// Tolerance of our f32 outputs against PyTorch's, relative to `1 + max|torch|`: the paths
/// agree to about 1e-6 (different summation orders, the rational erf in GELU, a fused
/// multiply-add where PyTorch rounds twice); 1e-5 leaves a factor of 10 for other CPUs.
pub const TORCH_TOL: f32 = 1e-5;

/// The one output comparison of every test crate. Panics, naming `what`, the element and
/// both values, on a length mismatch, on a NaN or infinity in either slice (`f32::max`
/// would silently drop a NaN), or on an element further than `tol · (1 + max|want|)` from
/// `want`. Returns the largest absolute difference.
pub fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (name, v) in [("result", got), ("reference", want)] {
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            panic!("{what}: {name} element {i} is {}", v[i]);
        }
    }
    let limit = tol * (1.0 + want.iter().fold(0.0f32, |m, v| m.max(v.abs())));
    let mut worst = 0.0f32;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        assert!(
            d <= limit,
            "{what}: element {i} is {g}, want {w} (|difference| {d} > tolerance {limit})"
        );
        worst = worst.max(d);
    }
    worst
}

/// [`assert_close`] against PyTorch's output with [`TORCH_TOL`]; returns the max difference.
pub fn assert_matches_torch(ours: &[f32], torch: &[f32], what: &str) -> f32 {
    assert_close(ours, torch, TORCH_TOL, what)
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

#[cfg(test)]
mod tests {
    use super::assert_close;

    fn fails(got: &[f32], want: &[f32], says: &str) {
        let got = got.to_vec();
        let want = want.to_vec();
        let r = std::panic::catch_unwind(move || assert_close(&got, &want, 1e-5, "probe"));
        let msg = r.expect_err("assert_close passed what it must reject");
        let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains(says), "message '{msg}' lacks '{says}'");
    }

    #[test]
    fn the_comparison_rejects_nan_infinity_and_one_element_too_far() {
        let want = [1.0, -2.0, 3.0, 0.5];
        assert_eq!(assert_close(&want, &want, 1e-5, "same"), 0.0);
        fails(&[1.0, f32::NAN, 3.0, 0.5], &want, "result element 1 is NaN");
        fails(
            &[1.0, -2.0, f32::INFINITY, 0.5],
            &want,
            "result element 2 is inf",
        );
        fails(
            &want,
            &[1.0, -2.0, 3.0, f32::NEG_INFINITY],
            "reference element 3 is -inf",
        );
        // Tolerance 1e-5 · (1 + 3) = 4e-5: element 3 off by 1e-4 fails, by 1e-5 passes.
        fails(&[1.0, -2.0, 3.0, 0.5001], &want, "element 3");
        assert!(assert_close(&[1.0, -2.0, 3.0, 0.50001], &want, 1e-5, "near") > 0.0);
        fails(&want[..3], &want, "length");
    }
}
