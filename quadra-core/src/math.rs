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

/// Half-precision arithmetic as FEAT_FP16 hardware does it (`fmla`, `fmul`, `fadd` on
/// `.8h` vectors: round to nearest even, IEEE 754 subnormals, overflow to infinity), on f16
/// bit patterns: the reference the fp16 kernels are tested against bit for bit.
///
/// An f16 fused multiply-add rounds once: `round_f16(a·b + c)`. Here `a·b` is exact in f64
/// (two 11-bit significands make 22 bits) and `a·b + c` is rounded to f64, then to f16.
/// That second rounding is the only one that matters: a result under 2^16 whose f64 sum is
/// inexact spans more than 53 bits, which (c's lowest bit being 2^-24 or above, the
/// product's 2^-48) needs a product below 2^-15 beside a much larger c; the f64 error,
/// under 2^-53 of c, cannot then move the sum onto or across an f16 rounding boundary of c
/// (those lie on a grid of 2^-11 of c, which the 22-bit product either hits exactly or
/// misses by at least 2^-33 of c); and overflow (|result| >= 65520, an f64 number) is
/// decided the same on both sides of a monotone rounding. `tests::f16` checks the
/// instructions themselves under qemu, on edge cases and millions of random operands.
pub mod f16 {
    /// 2^k, exactly (k within f64's normal exponents).
    fn pow2(k: i32) -> f64 {
        f64::from_bits(((k + 1023) as u64) << 52)
    }

    /// The f16 bit pattern as f64 (exact).
    pub fn to_f64(h: u16) -> f64 {
        let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
        let exp = (h >> 10) & 0x1f;
        let man = (h & 0x3ff) as f64;
        match exp {
            0 => sign * man * pow2(-24),
            0x1f if man == 0.0 => sign * f64::INFINITY,
            0x1f => f64::NAN,
            e => sign * (1024.0 + man) * pow2(e as i32 - 25),
        }
    }

    /// `x` rounded once to the nearest f16 (ties to even; overflow to infinity; NaN to the
    /// default quiet NaN with x's sign). Every bit of x takes part in the rounding.
    pub fn from_f64(x: f64) -> u16 {
        let bits = x.to_bits();
        let sign = ((bits >> 48) & 0x8000) as u16;
        let exp = ((bits >> 52) & 0x7ff) as i32;
        let man = bits & ((1u64 << 52) - 1);
        if exp == 0x7ff {
            return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
        }
        if exp == 0 {
            // Zero, or an f64 subnormal: far below half the smallest f16 subnormal.
            return sign;
        }
        let e = exp - 1023; // x = 1.man · 2^e
        let sig = (1u64 << 52) | man; // 53 bits
                                      // Bits of `sig` below the f16 result's last place: 42 for normal results (10
                                      // fraction bits kept), more for subnormal ones (their last place is 2^-24).
        let shift = if e >= -14 { 42 } else { 42 + (-14 - e) as u32 };
        if shift > 53 {
            // x < 2^-25, half the smallest subnormal: rounds to zero.
            return sign;
        }
        let q = sig >> shift;
        let rem = sig & ((1u64 << shift) - 1);
        let half = 1u64 << (shift - 1);
        let q = q + u64::from(rem > half || (rem == half && q & 1 == 1));
        let mag = if e >= -14 {
            // q holds the hidden bit at 2^10: adding it to the biased exponent less one
            // carries a rounded-up significand into the next binade.
            (((e + 14) as u64) << 10) + q
        } else {
            q // a subnormal, or 0x400 (the smallest normal) when it rounded up to it
        };
        if mag >= 0x7c00 {
            sign | 0x7c00
        } else {
            sign | mag as u16
        }
    }

    /// `round_f16(a·b + c)`, one rounding: `fmla` / `vfmaq_f16`.
    pub fn fma(a: u16, b: u16, c: u16) -> u16 {
        // The product is exact in f64; the sum rounds once to f64 (see the module docs).
        from_f64(to_f64(a) * to_f64(b) + to_f64(c))
    }

    /// `round_f16(a·b)`: `fmul`.
    pub fn mul(a: u16, b: u16) -> u16 {
        from_f64(to_f64(a) * to_f64(b))
    }

    /// `round_f16(a + b)`: `fadd`.
    pub fn add(a: u16, b: u16) -> u16 {
        from_f64(to_f64(a) + to_f64(b))
    }

    /// The half-precision GELU's coefficients, f16 bits: row `j` holds `c_j` of the eight
    /// segments (one 16-byte `tbl` table each). Segments 0-6 are quartics in `d` centred on
    /// `u = 1.75·|x|` = 0, 1, ..., 6; segment 7 (`u >= 6.5`, `|x| >= 3.71`, where `g` rounds to
    /// 0.5 in f16) is the constant 0.5. Fitted by `scripts/fit_gelu_fp16.py` (weighted least
    /// squares, coefficients rounded to f16 highest first, the lower ones refitted): `g`
    /// evaluated as [`gelu`] does is within 2.5 f16 ulps of `0.5·erf(a/√2)` at every f16 `a`.
    pub(crate) const GELU_C: [[u16; 8]; 5] = [
        [
            0x8001, 0x32eb, 0x35fa, 0x374f, 0x37d2, 0x37f7, 0x37ff, 0x3800,
        ],
        [
            0x334c, 0x3232, 0x2f98, 0x2ab7, 0x2448, 0x1be1, 0x113a, 0x0000,
        ],
        [
            0x017a, 0xa80c, 0xa8f5, 0xa694, 0xa198, 0x9a6f, 0x9120, 0x0000,
        ],
        [
            0xa274, 0x9f37, 0x17ba, 0x1d96, 0x1bde, 0x1639, 0x0e4f, 0x0000,
        ],
        [
            0x10f9, 0x1892, 0x1741, 0x03c5, 0x9154, 0x8f3b, 0x88f5, 0x0000,
        ],
    ];
    /// Segments per unit of `|x|` (1.75, f16 bits).
    pub(crate) const GELU_SCALE: u16 = 0x3f00;
    /// The last segment (7.0, f16 bits): `u` is clamped to it.
    pub(crate) const GELU_TOP: u16 = 0x4700;
    /// 1024.0, f16 bits: `u + 1024` is `u` rounded to an integer (f16's step there is 1),
    /// and its bits are `0x6400 + round(u)`.
    pub(crate) const GELU_ROUND: u16 = 0x6400;

    /// GELU in half precision ([`crate::isa::Precision::Fp16`]), bit for bit what the
    /// FEAT_FP16 kernel computes: `GELU(x) = 0.5·x + |x|·g(|x|)` with `g(a) = Φ(a) − 0.5`.
    /// `g` is evaluated in f16 from `x` rounded to f16: `u = min(1.75·|x|, 7)`, segment
    /// `i = round(u)` (`u + 1024` rounds it, to even), `d = u − i` (exact), then Horner over
    /// [`GELU_C`]'s column `i`, one f16 rounding per step (`fmla .8h`); the rest in f32, one
    /// fused rounding (`fmla .4s`): `|x|·g + 0.5·x`. So only `g` is half precision: a value
    /// too large for f16 (where `g` is 0.5) comes out as `x` or `0`, exactly, and the error
    /// is at most `|x|` times `g`'s (about 2 f16 ulps of `g`, 2^-12 near 0.5, plus the
    /// rounding of `x`). NaN in, NaN out.
    pub fn gelu(x: f32) -> f32 {
        let g = to_f64(gelu_g(from_f64(f64::from(x)))) as f32; // exact (`fcvtl`)
        libm::fmaf(x.abs(), g, 0.5 * x)
    }

    /// GELU with its output in half precision (`Precision::Fp16`'s PW1, whose output is
    /// PW2's f16 input): `g` as [`gelu`] evaluates it, then `round_f16(|h|·g + 0.5·h)`, one
    /// rounding (`fmul .8h` of `h` by 0.5, exact but for f16 subnormals, then `fmla .8h`),
    /// `h` being `x` rounded to f16. Against [`gelu`]'s value rounded to f16 it differs by
    /// the rounding of `x` (2^-11 relative) at most. NaN in, NaN out; beyond f16's range
    /// (`|x| >= 65520`, where the fp16 GEMM's own f16 sums overflow as well) `+inf` for
    /// positive `x` and NaN (`inf − inf`) for negative: loud, as [`gelu`]'s `-inf` is.
    pub fn gelu_half(x: f32) -> u16 {
        let h = from_f64(f64::from(x));
        fma(h & 0x7fff, gelu_g(h), mul(h, 0x3800))
    }

    /// `g(|h|)` of [`gelu`], f16 bits, from `x` rounded to f16 (`h`).
    fn gelu_g(h: u16) -> u16 {
        let a = h & 0x7fff; // `fabs`
        let u = mul(a, GELU_SCALE);
        // `fmin(u, 7)`: NaN stays NaN (the comparison is false).
        let u = if to_f64(u) > to_f64(GELU_TOP) {
            GELU_TOP
        } else {
            u
        };
        let t = add(u, GELU_ROUND);
        // The segment: `t`'s bits less 1024's (a NaN's are anything; its `d` is NaN).
        let i = usize::from(t.wrapping_sub(GELU_ROUND) & 7);
        let d = add(u, add(t, GELU_ROUND | 0x8000) ^ 0x8000); // `u − (t − 1024)`, both exact
        let mut p = GELU_C[4][i];
        for c in GELU_C[..4].iter().rev() {
            p = fma(d, p, c[i]);
        }
        p
    }
}
