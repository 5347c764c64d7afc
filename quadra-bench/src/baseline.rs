//! The unfused baselines the fused kernels are measured against, built from the same
//! SIMD kernels so the comparison prices fusion and streaming, not kernel quality:
//! full intermediate tensors, one layer at a time.

use quadra_core::block::BlockWeights;
use quadra_core::kernels::{self, DwConv, Epilogue, MatMut, MatRef, PackedB, QdwWeights};
use quadra_core::{Error, Kernels};

/// Zero-pads an `[h, w, c]` tensor by `p` on every side.
pub fn pad(x: &[f32], h: usize, w: usize, c: usize, p: usize) -> Vec<f32> {
    let pw = w + 2 * p;
    let mut out = vec![0.0; (h + 2 * p) * pw * c];
    for y in 0..h {
        let dst = ((y + p) * pw + p) * c;
        out[dst..dst + w * c].copy_from_slice(&x[y * w * c..(y + 1) * w * c]);
    }
    out
}

/// A plain depthwise conv of a padded tensor into a full `[h, w, c]` output.
pub fn dw_full(
    kern: Kernels,
    conv: &DwConv<'_>,
    padded: &[f32],
    h: usize,
    w: usize,
    out: &mut [f32],
) -> Result<(), Error> {
    let (k, c) = (conv.k, conv.c);
    let prow = (w + k - 1) * c;
    for y in 0..h {
        let rows: Vec<&[f32]> = (0..k)
            .map(|ky| &padded[(y + ky) * prow..(y + ky + 1) * prow])
            .collect();
        kernels::dw_row(kern, conv, &rows, w, &mut out[y * w * c..(y + 1) * w * c])?;
    }
    Ok(())
}

/// Three separate depthwise convs into three full tensors, then `a·b + c`.
pub struct UnfusedQdw {
    /// Filters a, b, c: taps `[K·K·C]` each.
    pub taps: [Vec<f32>; 3],
    /// Biases a, b, c.
    pub bias: [Vec<f32>; 3],
    /// Kernel size.
    pub k: usize,
    /// Channels.
    pub c: usize,
}

impl UnfusedQdw {
    /// The three filters of packed QDW taps ([`QdwWeights::tap_index`], biases
    /// `[f·C + ch]`) as three separate depthwise convs.
    pub fn from_packed(taps: &[f32], bias: &[f32], k: usize, c: usize) -> Self {
        UnfusedQdw {
            taps: [0, 1, 2].map(|f| {
                (0..k * k * c)
                    .map(|i| taps[QdwWeights::tap_index(k, i / c, f, i % c)])
                    .collect()
            }),
            bias: [0, 1, 2].map(|f| bias[f * c..(f + 1) * c].to_vec()),
            k,
            c,
        }
    }

    /// `y = (Wa*x + ba) ⊙ (Wb*x + bb) + (Wc*x + bc)` with full intermediates.
    pub fn run(
        &self,
        kern: Kernels,
        x: &[f32],
        h: usize,
        w: usize,
        y: &mut [f32],
    ) -> Result<(), Error> {
        let padded = pad(x, h, w, self.c, self.k / 2);
        let mut t = [vec![0.0; x.len()], vec![0.0; x.len()], vec![0.0; x.len()]];
        for (f, out) in t.iter_mut().enumerate() {
            let conv = DwConv {
                k: self.k,
                c: self.c,
                taps: &self.taps[f],
                bias: &self.bias[f],
            };
            dw_full(kern, &conv, &padded, h, w, out)?;
        }
        for (((o, a), b), c) in y.iter_mut().zip(&t[0]).zip(&t[1]).zip(&t[2]) {
            *o = a * b + c;
        }
        Ok(())
    }
}

/// The spatial mixer of a block run layer by layer.
pub enum Mixer<'a> {
    /// The quadratic depthwise conv (a QuadraBlock).
    Quadratic,
    /// A plain depthwise conv (a ConvBlock).
    Linear(DwConv<'a>),
    /// None (a SkipBlock: only the channel MLP).
    Skip,
}

fn ln_full(kern: Kernels, x: &[f32], c: usize, w: &[f32], b: &[f32]) -> Result<Vec<f32>, Error> {
    let mut out = vec![0.0; x.len()];
    kernels::layer_norm_rows(kern, x, c, w, b, &mut out)?;
    Ok(out)
}

fn linear(
    kern: Kernels,
    a: &[f32],
    k: usize,
    b: PackedB<'_>,
    bias: &[f32],
) -> Result<Vec<f32>, Error> {
    let (m, n) = (a.len() / k, b.n());
    let mut out = vec![0.0; m * n];
    let am = MatRef::dense(a, m, k);
    let om = MatMut::dense(&mut out, m, n);
    kernels::gemm(kern, am, b, Epilogue::Bias(bias), om)?;
    Ok(out)
}

/// A block run one layer at a time with every intermediate tensor in full, as a
/// layer-by-layer runtime would: LN1, mixer, residual, LN2, PW1, GELU, PW2, residual.
pub fn block_layer_by_layer(
    kern: Kernels,
    wts: &BlockWeights<'_>,
    mixer: &Mixer<'_>,
    (h, w, c): (usize, usize, usize),
    x: &mut [f32],
) -> Result<(), Error> {
    match mixer {
        Mixer::Skip => {}
        Mixer::Quadratic | Mixer::Linear(_) => {
            let n1 = ln_full(kern, x, c, wts.ln1_w, wts.ln1_b)?;
            let k = match mixer {
                Mixer::Linear(conv) => conv.k,
                _ => wts.qdw.k(),
            };
            let mut mixed = vec![0.0; x.len()];
            match mixer {
                Mixer::Linear(conv) => {
                    let padded = pad(&n1, h, w, c, k / 2);
                    dw_full(kern, conv, &padded, h, w, &mut mixed)?
                }
                _ => {
                    // The QDW kernel reads channel-blocked padded rows.
                    let prow = kernels::qdw_row_len(w, c, k);
                    let mut blocked = vec![0.0; (h + k - 1) * prow];
                    for y in 0..h {
                        let dst = &mut blocked[(y + k / 2) * prow..(y + k / 2 + 1) * prow];
                        kernels::block_row(kern, &n1[y * w * c..(y + 1) * w * c], w, c, k, dst)?;
                    }
                    for y in 0..h {
                        let rows: Vec<&[f32]> = (0..k)
                            .map(|ky| &blocked[(y + ky) * prow..(y + ky + 1) * prow])
                            .collect();
                        let out = &mut mixed[y * w * c..(y + 1) * w * c];
                        kernels::qdw_row(kern, &wts.qdw, &rows, w, None, out)?;
                    }
                }
            }
            for (i, (v, m)) in x.iter_mut().zip(&mixed).enumerate() {
                *v += wts.gamma1[i % c] * m;
            }
        }
    }
    let n2 = ln_full(kern, x, c, wts.ln2_w, wts.ln2_b)?;
    let mut hidden = linear(kern, &n2, c, wts.pw1, wts.pw1_b)?;
    kernels::gelu_slice(kern, &mut hidden);
    let o = linear(kern, &hidden, wts.pw1.n(), wts.pw2, wts.pw2_b)?;
    for (i, (v, o)) in x.iter_mut().zip(&o).enumerate() {
        *v += wts.gamma2[i % c] * o;
    }
    Ok(())
}
