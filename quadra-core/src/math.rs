//! Scalar math shared by the reference kernels and the non-SIMD parts of the pipeline:
//! exact-erf GELU, the rational erf the SIMD kernels use, and LayerNorm.

/// LayerNorm epsilon of every norm in QuadraNet.
pub const LN_EPS: f32 = 1e-6;

/// Coefficients of the odd rational approximation `erf(x) ≈ x·P(x²)/Q(x²)` on [-4, 4]
/// (outside, erf is ±1 to f32 precision). P has degree 6 in x², Q degree 4.
/// Max abs error: 1e-7 in exact arithmetic, 4.4e-7 when evaluated in f32 (near |x| = 3.9,
/// where erf is within 4e-8 of 1); checked against `libm::erff` over the whole line in the
/// tests. In GELU that is at most ~2 ulp of the result.
pub(crate) const ERF_P: [f32; 7] = [
    -1.609_603_3e-2,
    -2.954_6e-3,
    -7.349_906e-4,
    -5.692_506_4e-5,
    -2.101_024e-6,
    2.770_681_4e-8,
    -2.726_142_3e-10,
];
pub(crate) const ERF_Q: [f32; 5] = [
    -1.426_474e-2,
    -7.373_329e-3,
    -1.682_827e-3,
    -2.133_740_6e-4,
    -1.456_607_2e-5,
];
/// Clamp bound of the rational erf.
pub(crate) const ERF_CLAMP: f32 = 4.0;

/// The rational erf, scalar form of exactly what the SIMD kernels compute.
pub fn erf_rational(x: f32) -> f32 {
    let x = x.clamp(-ERF_CLAMP, ERF_CLAMP);
    let x2 = x * x;
    let mut p = ERF_P[6];
    let mut i = 6;
    while i > 0 {
        i -= 1;
        p = p * x2 + ERF_P[i];
    }
    let mut q = ERF_Q[4];
    let mut i = 4;
    while i > 0 {
        i -= 1;
        q = q * x2 + ERF_Q[i];
    }
    x * p / q
}

/// GELU with the exact erf (PyTorch `nn.GELU()` default): `0.5·x·(1 + erf(x/√2))`.
#[inline]
pub fn gelu_exact(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x * core::f32::consts::FRAC_1_SQRT_2))
}

/// LayerNorm of one pixel's channel vector, `out = (x - mean)/sqrt(var + eps)·w + b`
/// (biased variance, as PyTorch). `x`, `w`, `b`, `out` all have the same length.
#[inline]
pub fn layer_norm(x: &[f32], w: &[f32], b: &[f32], out: &mut [f32]) {
    debug_assert!(w.len() == x.len() && b.len() == x.len() && out.len() == x.len());
    let (mean, rstd) = layer_norm_stats(x);
    for (((o, &v), &w), &b) in out.iter_mut().zip(x).zip(w).zip(b) {
        *o = (v - mean) * rstd * w + b;
    }
}

/// LayerNorm of `pixels` consecutive channel vectors of length `c`.
pub fn layer_norm_rows(x: &[f32], c: usize, w: &[f32], b: &[f32], out: &mut [f32]) {
    for (xi, oi) in x.chunks_exact(c).zip(out.chunks_exact_mut(c)) {
        layer_norm(xi, w, b, oi);
    }
}

/// Mean and `1/sqrt(var + eps)` of one channel vector (two passes, biased variance).
pub fn layer_norm_stats(x: &[f32]) -> (f32, f32) {
    let inv_n = 1.0 / x.len() as f32;
    let mean = x.iter().sum::<f32>() * inv_n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() * inv_n;
    (mean, 1.0 / libm::sqrtf(var + LN_EPS))
}

/// [`layer_norm`] in place (for channel counts too large for a stack buffer).
pub fn layer_norm_inplace(x: &mut [f32], w: &[f32], b: &[f32]) {
    let (mean, rstd) = layer_norm_stats(x);
    for ((v, &w), &b) in x.iter_mut().zip(w).zip(b) {
        *v = (*v - mean) * rstd * w + b;
    }
}
