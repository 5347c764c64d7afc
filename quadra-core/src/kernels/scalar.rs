//! Scalar reference kernels: the plain definition of each contract in `kernels`.
//! Every SIMD path is tested against these.

use super::{Epilogue, PackedB, QdwWeights, CBLOCK};

/// Reference GEMM: `out[i][j] = epi(scale[j]·Σ_kk a[i][kk]·b[kk][j] + bias[j])`,
/// accumulating in `kk` order.
pub fn gemm(
    a: &[f32],
    m: usize,
    lda: usize,
    b: PackedB<'_>,
    epi: Epilogue<'_>,
    out: &mut [f32],
    ldo: usize,
) {
    let (k, n, scales) = (b.k(), b.n(), b.scales());
    for i in 0..m {
        let arow = &a[i * lda..i * lda + k];
        for j in 0..n {
            let mut acc = 0.0f32;
            for (kk, &av) in arow.iter().enumerate() {
                acc += av * b.get(kk, j);
            }
            let o = &mut out[i * ldo + j];
            *o = epi.apply(j, acc * scales[j], *o);
        }
    }
}

/// The half-precision GEMM ([`crate::isa::Precision::Fp16`]), bit for bit what the
/// FEAT_FP16 kernel computes before its epilogue: each activation and weight rounded to
/// f16 (nearest even); for each output, runs of [`crate::isa::FP16_CHUNK`] inner steps
/// summed in f16 from +0, one rounding per step (`fmla .8h`, [`crate::math::f16::fma`]);
/// each run widened exactly and added into an f32 sum (the first run taken as it is).
/// The epilogue is then the f32 GEMM's, on `sum · scale`, but for GELU, whose `g` is
/// evaluated in half precision ([`crate::math::f16::gelu`]).
pub fn gemm_fp16(
    a: &[f32],
    m: usize,
    lda: usize,
    b: PackedB<'_>,
    epi: Epilogue<'_>,
    out: &mut [f32],
    ldo: usize,
) {
    use crate::math::f16;
    let scales = b.scales();
    for i in 0..m {
        let arow = &a[i * lda..i * lda + b.k()];
        for j in 0..b.n() {
            let sum = fp16_sum(arow, b, j);
            let o = &mut out[i * ldo + j];
            *o = match epi {
                Epilogue::BiasGelu(bias) => f16::gelu(sum * scales[j] + bias[j]),
                _ => epi.apply(j, sum * scales[j], *o),
            };
        }
    }
}

/// Reference `kernels::gemm_gelu_half`: [`gemm_fp16`]'s sums, then
/// `f16::gelu_half(sum·scale + bias)` (one rounding: `fmaf`, as the kernel fuses it) into
/// `out` as `m` dense rows of `n` halves ([`set_half`]).
pub fn gemm_fp16_gelu_half(
    a: &[f32],
    m: usize,
    lda: usize,
    b: PackedB<'_>,
    bias: &[f32],
    out: &mut [f32],
) {
    let (n, scales) = (b.n(), b.scales());
    for i in 0..m {
        let arow = &a[i * lda..i * lda + b.k()];
        for j in 0..n {
            let v = libm::fmaf(fp16_sum(arow, b, j), scales[j], bias[j]);
            set_half(out, i * n + j, crate::math::f16::gelu_half(v));
        }
    }
}

/// The fp16 GEMM's sum for one output (see [`gemm_fp16`]): row `arow` times column `j`.
fn fp16_sum(arow: &[f32], b: PackedB<'_>, j: usize) -> f32 {
    use crate::math::f16;
    let h = |x: f32| f16::from_f64(f64::from(x));
    let mut sum = 0.0f32;
    for (c, run) in arow.chunks(crate::isa::FP16_CHUNK).enumerate() {
        let k0 = c * crate::isa::FP16_CHUNK;
        let mut acc = 0u16; // +0
        for (kk, &av) in run.iter().enumerate() {
            acc = f16::fma(h(av), h(b.get(k0 + kk, j)), acc);
        }
        let wide = f16::to_f64(acc) as f32; // exact
        sum = if c == 0 { wide } else { sum + wide };
    }
    sum
}

/// Reference QDW row (see [`super::qdw_row`] for the contract): for each filter
/// `f`, `v_f = scale_f·Σ taps_f·x + bias_f`, then `y = v_a·v_b + v_c`.
pub fn qdw_row(
    wts: &QdwWeights<'_>,
    rows: &[&[f32]],
    w: usize,
    gamma: Option<&[f32]>,
    out: &mut [f32],
) {
    let (k, c) = (wts.k(), wts.c());
    let (taps, scales, bias) = (wts.taps(), wts.scales(), wts.bias());
    let pw = w + k - 1;
    for x in 0..w {
        for ch in 0..c {
            let mut acc = [0.0f32; 3];
            for (ky, row) in rows.iter().enumerate() {
                for kx in 0..k {
                    let t = ky * k + kx;
                    let v = row[((ch / CBLOCK) * pw + x + kx) * CBLOCK + ch % CBLOCK];
                    for (f, a) in acc.iter_mut().enumerate() {
                        *a += taps.get(QdwWeights::tap_index(k, t, f, ch)) * v;
                    }
                }
            }
            let [a, b, cc] = [0, 1, 2].map(|f| acc[f] * scales[f * c + ch] + bias[f * c + ch]);
            let y = a * b + cc;
            let o = &mut out[x * c + ch];
            match gamma {
                None => *o = y,
                Some(g) => *o += g[ch] * y,
            }
        }
    }
}

/// The half-precision QDW row ([`crate::isa::Precision::Fp16`]), bit for bit what the
/// FEAT_FP16 kernel computes, on half-precision rows ([`block_row_fp16`]).
///
/// For each filter `f`: every tap rounded to f16 after its scale is applied in f32
/// (`round_f16(tap·scale_f)`), the sum in f16 from `round_f16(bias_f)` over the taps in
/// row-major order (each an FMA: one rounding), widened exactly to `v_f`; then
/// `y = fma(v_a, v_b, v_c)` in f32 and `out = y` or `out = fma(gamma, y, out)`.
pub fn qdw_row_fp16(
    wts: &QdwWeights<'_>,
    rows: &[&[f32]],
    w: usize,
    gamma: Option<&[f32]>,
    out: &mut [f32],
) {
    use crate::math::f16;
    let (k, c) = (wts.k(), wts.c());
    let (taps, scales, bias) = (wts.taps(), wts.scales(), wts.bias());
    let h = |x: f32| f16::from_f64(f64::from(x));
    let pw = w + k - 1;
    for x in 0..w {
        for ch in 0..c {
            // Each sum starts at its filter's bias, rounded to f16.
            let mut acc = [0, 1, 2].map(|f| h(bias[f * c + ch]));
            for (ky, row) in rows.iter().enumerate() {
                for kx in 0..k {
                    let t = ky * k + kx;
                    let v = half(row, ((ch / CBLOCK) * pw + x + kx) * CBLOCK + ch % CBLOCK);
                    for (f, a) in acc.iter_mut().enumerate() {
                        let tap = taps.get(QdwWeights::tap_index(k, t, f, ch)) * scales[f * c + ch];
                        *a = f16::fma(h(tap), v, *a);
                    }
                }
            }
            let [a, b, cc] = [0, 1, 2].map(|f| f16::to_f64(acc[f]) as f32);
            let y = libm::fmaf(a, b, cc);
            let o = &mut out[x * c + ch];
            *o = match gamma {
                None => y,
                Some(g) => libm::fmaf(g[ch], y, *o),
            };
        }
    }
}

/// Half `i` of a half-precision row held in f32 storage: the two bytes at `2·i` from the
/// row's start (the layout the kernels address through a `u16` pointer).
pub fn half(row: &[f32], i: usize) -> u16 {
    let b = row[i / 2].to_ne_bytes();
    let j = 2 * (i % 2);
    u16::from_ne_bytes([b[j], b[j + 1]])
}

/// Sets half `i` of a half-precision row (see [`half`]).
pub fn set_half(row: &mut [f32], i: usize, v: u16) {
    let mut b = row[i / 2].to_ne_bytes();
    let j = 2 * (i % 2);
    b[j..j + 2].copy_from_slice(&v.to_ne_bytes());
    row[i / 2] = f32::from_ne_bytes(b);
}

/// Reference half-precision blocked row ([`super::block_row`] with an fp16 token): each
/// value rounded to f16 (nearest even) at [`block_row`]'s index, counted in halves.
pub fn block_row_fp16(src: &[f32], w: usize, c: usize, k: usize, dst: &mut [f32]) {
    let (p, pw) = ((k - 1) / 2, w + k - 1);
    for (px, pix) in src.chunks_exact(c.max(1)).take(w).enumerate() {
        for (ch, &v) in pix.iter().enumerate() {
            let at = ((ch / CBLOCK) * pw + p + px) * CBLOCK + ch % CBLOCK;
            set_half(dst, at, crate::math::f16::from_f64(f64::from(v)));
        }
    }
}

/// Reference channel-blocked copy of one row (see [`super::block_row`], which checked the
/// lengths).
pub fn block_row(src: &[f32], w: usize, c: usize, k: usize, dst: &mut [f32]) {
    let (p, pw) = ((k - 1) / 2, w + k - 1);
    for (px, pix) in src.chunks_exact(c.max(1)).take(w).enumerate() {
        for (b, chunk) in pix.chunks(CBLOCK).enumerate() {
            let at = (b * pw + p + px) * CBLOCK;
            dst[at..at + chunk.len()].copy_from_slice(chunk);
        }
    }
}
