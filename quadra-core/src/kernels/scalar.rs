//! Scalar reference kernels: the plain definition of each contract in `kernels`.
//! Every SIMD path is tested against these.

use super::{Epilogue, PackedB, QdwWeights};
use crate::math::gelu_exact;

/// Reference GEMM: `out[i][j] = epi(sum_kk a[i][kk]·b[kk][j])`, accumulating in `kk` order.
pub fn gemm(
    a: &[f32],
    m: usize,
    lda: usize,
    b: PackedB<'_>,
    epi: Epilogue<'_>,
    out: &mut [f32],
    ldo: usize,
) {
    let (k, n) = (b.k(), b.n());
    for i in 0..m {
        let arow = &a[i * lda..i * lda + k];
        for j in 0..n {
            let mut acc = 0.0f32;
            for (kk, &av) in arow.iter().enumerate() {
                acc += av * b.get(kk, j);
            }
            let o = &mut out[i * ldo + j];
            match epi {
                Epilogue::Bias(bias) => *o = acc + bias[j],
                Epilogue::BiasGelu(bias) => *o = gelu_exact(acc + bias[j]),
                Epilogue::BiasScaleAdd { bias, gamma } => *o += gamma[j] * (acc + bias[j]),
            }
        }
    }
}

/// Reference QDW row (see [`super::qdw_row`] for the contract).
pub fn qdw_row(
    wts: &QdwWeights<'_>,
    rows: &[&[f32]],
    w: usize,
    gamma: Option<&[f32]>,
    out: &mut [f32],
) {
    let (k, c) = (wts.k(), wts.c());
    let (taps, bias) = (wts.taps(), wts.bias());
    for x in 0..w {
        for ch in 0..c {
            let (mut a, mut b, mut cc) = (bias[ch], bias[c + ch], bias[2 * c + ch]);
            for (ky, row) in rows.iter().enumerate() {
                for kx in 0..k {
                    let t = (ky * k + kx) * 3 * c;
                    let v = row[(x + kx) * c + ch];
                    a += taps[t + ch] * v;
                    b += taps[t + c + ch] * v;
                    cc += taps[t + 2 * c + ch] * v;
                }
            }
            let y = a * b + cc;
            let o = &mut out[x * c + ch];
            match gamma {
                None => *o = y,
                Some(g) => *o += g[ch] * y,
            }
        }
    }
}
