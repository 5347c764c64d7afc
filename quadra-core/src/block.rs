//! The streaming tile scheduler: a QuadraBlock (or a lone QDW conv) run in place on its
//! activation, strip of rows by strip of rows.
//!
//! Scratch holds a ring of `K + strip - 1` zero-padded LN1-normalised rows, one strip of
//! LN2 rows and one strip of the hidden layer. Before the rows of a strip are overwritten,
//! the rows the next strips still need are already normalised into the ring, so the block
//! can write its output over its input. The three QDW partial results and the hidden
//! `[H, W, E·C]` tensor never exist in full.

use crate::arch::block_scratch_len;
use crate::error::{Buffer, Error};
use crate::isa::Kernels;
use crate::kernels::{self, Epilogue, MatData, MatMut, MatRef, PackedB, QdwWeights, MAX_K};
use crate::math::layer_norm;
use crate::weights::{Cursor, Weights, WeightsLen};

/// Shape of one block application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockDims {
    /// Rows of the activation.
    pub h: usize,
    /// Columns of the activation.
    pub w: usize,
    /// Channels.
    pub c: usize,
    /// QDW kernel size.
    pub k: usize,
    /// Hidden expansion.
    pub e: usize,
}

/// Weights of one QuadraBlock, as views into a packed weight buffer.
#[derive(Clone, Copy, Debug)]
pub struct BlockWeights<'a> {
    /// Layer scale of the spatial branch.
    pub gamma1: &'a [f32],
    /// LN1 weight.
    pub ln1_w: &'a [f32],
    /// LN1 bias.
    pub ln1_b: &'a [f32],
    /// The quadratic depthwise conv.
    pub qdw: QdwWeights<'a>,
    /// Layer scale of the channel branch.
    pub gamma2: &'a [f32],
    /// LN2 weight.
    pub ln2_w: &'a [f32],
    /// LN2 bias.
    pub ln2_b: &'a [f32],
    /// PW1, `C -> E·C`.
    pub pw1: PackedB<'a>,
    /// PW1 bias.
    pub pw1_b: &'a [f32],
    /// PW2, `E·C -> C`.
    pub pw2: PackedB<'a>,
    /// PW2 bias.
    pub pw2_b: &'a [f32],
}

impl<'a> BlockWeights<'a> {
    /// Views one block's weights (`BlockSpec::weights_len` of both streams, in the
    /// order of the packed model layout).
    pub fn from_weights(c: usize, k: usize, e: usize, w: Weights<'a>) -> Result<Self, Error> {
        let mut cur = Cursor::new(w);
        let bw = Self::read(&mut cur, c, k, e)?;
        let left = cur.remaining();
        if left != WeightsLen::default() {
            let found = w.len();
            return Err(Error::Length {
                buffer: Buffer::Weights,
                expected: found.vecs - left.vecs,
                found: found.vecs,
            });
        }
        Ok(bw)
    }

    pub(crate) fn read(cur: &mut Cursor<'a>, c: usize, k: usize, e: usize) -> Result<Self, Error> {
        Ok(BlockWeights {
            gamma1: cur.vec(c)?,
            ln1_w: cur.vec(c)?,
            ln1_b: cur.vec(c)?,
            qdw: cur.qdw(k, c)?,
            gamma2: cur.vec(c)?,
            ln2_w: cur.vec(c)?,
            ln2_b: cur.vec(c)?,
            pw1: cur.gemm(c, e * c)?,
            pw1_b: cur.vec(e * c)?,
            pw2: cur.gemm(e * c, c)?,
            pw2_b: cur.vec(c)?,
        })
    }

    fn check(&self, d: &BlockDims) -> Result<(), Error> {
        let ok = self.qdw.c() == d.c
            && self.qdw.k() == d.k
            && self.pw1.k() == d.c
            && self.pw1.n() == d.e * d.c
            && self.pw2.k() == d.e * d.c
            && self.pw2.n() == d.c
            && [
                self.gamma1,
                self.ln1_w,
                self.ln1_b,
                self.gamma2,
                self.ln2_w,
                self.ln2_b,
            ]
            .iter()
            .all(|v| v.len() == d.c)
            && self.pw1_b.len() == d.e * d.c
            && self.pw2_b.len() == d.c;
        if ok {
            Ok(())
        } else {
            Err(Error::Arch("block weights do not match the block shape"))
        }
    }
}

/// A ring of zero-padded rows in scratch; input row `y` lives in slot `(y + p) mod slots`.
struct Ring<'s> {
    buf: &'s mut [f32],
    slots: usize,
    row_len: usize,
    p: usize,
}

impl<'s> Ring<'s> {
    fn new(buf: &'s mut [f32], slots: usize, w: usize, c: usize, k: usize) -> Self {
        let row_len = (w + k - 1) * c;
        let buf = &mut buf[..slots * row_len];
        buf.fill(0.0);
        Ring {
            buf,
            slots,
            row_len,
            p: (k - 1) / 2,
        }
    }

    fn slot(&self, y: isize) -> usize {
        ((y + self.p as isize) as usize) % self.slots
    }

    /// Fills the slot of row `y` from `x`, normalised by `ln` if given; zero outside `0..h`.
    fn fill(&mut self, x: &[f32], y: isize, h: usize, c: usize, ln: Option<(&[f32], &[f32])>) {
        let (s, rl, p) = (self.slot(y), self.row_len, self.p);
        let dst = &mut self.buf[s * rl..(s + 1) * rl];
        if y < 0 || y as usize >= h {
            dst.fill(0.0);
            return;
        }
        let w = rl / c - 2 * p;
        let src = &x[y as usize * w * c..(y as usize + 1) * w * c];
        let inner = &mut dst[p * c..(p + w) * c];
        match ln {
            None => inner.copy_from_slice(src),
            Some((lw, lb)) => {
                for (xi, oi) in src.chunks_exact(c).zip(inner.chunks_exact_mut(c)) {
                    layer_norm(xi, lw, lb, oi);
                }
            }
        }
    }

    fn rows(&self, y: usize, k: usize) -> [&[f32]; MAX_K] {
        let mut rows: [&[f32]; MAX_K] = [&[]; MAX_K];
        for (ky, r) in rows.iter_mut().enumerate().take(k) {
            let s = self.slot(y as isize - self.p as isize + ky as isize);
            *r = &self.buf[s * self.row_len..(s + 1) * self.row_len];
        }
        rows
    }
}

/// Scratch floats of a lone QDW conv on rows of width `w`.
pub const fn qdw_scratch_len(w: usize, c: usize, k: usize) -> usize {
    k * (w + k - 1) * c
}

/// A lone quadratic depthwise conv over `x` (`[h, w, c]`, channels-last), in place:
/// `x = (Wa*x + ba) ⊙ (Wb*x + bb) + (Wc*x + bc)`.
pub fn qdw_forward(
    kern: Kernels,
    h: usize,
    w: usize,
    wts: &QdwWeights<'_>,
    x: &mut [f32],
    scratch: &mut [f32],
) -> Result<(), Error> {
    let (c, k) = (wts.c(), wts.k());
    expect_len(Buffer::Activation, h * w * c, x.len(), true)?;
    expect_len(
        Buffer::Scratch,
        qdw_scratch_len(w, c, k),
        scratch.len(),
        false,
    )?;
    if h == 0 || w == 0 || c == 0 {
        return Ok(());
    }
    let p = (k - 1) / 2;
    let mut ring = Ring::new(scratch, k, w, c, k);
    for y in -(p as isize)..p as isize {
        ring.fill(x, y, h, c, None);
    }
    for y in 0..h {
        ring.fill(x, (y + p) as isize, h, c, None);
        let rows = ring.rows(y, k);
        kernels::qdw_row(
            kern,
            wts,
            &rows[..k],
            w,
            None,
            &mut x[y * w * c..(y + 1) * w * c],
        )?;
    }
    Ok(())
}

fn expect_len(buffer: Buffer, expected: usize, found: usize, exact: bool) -> Result<(), Error> {
    if found < expected || (exact && found != expected) {
        Err(Error::Length {
            buffer,
            expected,
            found,
        })
    } else {
        Ok(())
    }
}

/// One QuadraBlock, in place on `x` (`[h, w, c]`, channels-last), `strip` rows at a time:
///
/// ```text
/// x = x + gamma1 ⊙ QDW(LN1(x))
/// x = x + gamma2 ⊙ PW2(GELU(PW1(LN2(x))))
/// ```
///
/// `scratch` needs [`block_scratch_len`]`(w, c, k, e, strip)` floats. The result does not
/// depend on `strip`.
pub fn block_forward(
    kern: Kernels,
    d: BlockDims,
    strip: usize,
    wts: &BlockWeights<'_>,
    x: &mut [f32],
    scratch: &mut [f32],
) -> Result<(), Error> {
    let BlockDims { h, w, c, k, e } = d;
    wts.check(&d)?;
    if strip == 0 {
        return Err(Error::Arch("strip height must be at least 1"));
    }
    expect_len(Buffer::Activation, h * w * c, x.len(), true)?;
    let need = block_scratch_len(w, c, k, e, strip);
    expect_len(Buffer::Scratch, need, scratch.len(), false)?;
    if h == 0 || w == 0 || c == 0 {
        return Ok(());
    }
    let p = (k - 1) / 2;
    let slots = k + strip - 1;
    let (ring_buf, rest) = scratch.split_at_mut(slots * (w + k - 1) * c);
    let (ln2, rest) = rest.split_at_mut(strip * w * c);
    let hidden = &mut rest[..strip * w * e * c];
    let mut ring = Ring::new(ring_buf, slots, w, c, k);
    let ln1 = Some((wts.ln1_w, wts.ln1_b));
    for y in -(p as isize)..p as isize {
        ring.fill(x, y, h, c, ln1);
    }
    let row = w * c;
    let mut y0 = 0;
    while y0 < h {
        let s = strip.min(h - y0);
        // Normalise the rows this strip reaches below itself before any row is overwritten.
        for y in y0 + p..y0 + s + p {
            ring.fill(x, y as isize, h, c, ln1);
        }
        for y in y0..y0 + s {
            let rows = ring.rows(y, k);
            let out = &mut x[y * row..(y + 1) * row];
            kernels::qdw_row(kern, &wts.qdw, &rows[..k], w, Some(wts.gamma1), out)?;
        }
        let xs = &mut x[y0 * row..(y0 + s) * row];
        let m = s * w;
        for (xi, oi) in xs.chunks_exact(c).zip(ln2.chunks_exact_mut(c)) {
            layer_norm(xi, wts.ln2_w, wts.ln2_b, oi);
        }
        let ec = e * c;
        kernels::gemm(
            kern,
            MatRef {
                data: &ln2[..m * c],
                rows: m,
                cols: c,
                stride: c,
            },
            wts.pw1,
            Epilogue::BiasGelu(wts.pw1_b),
            MatMut {
                data: &mut hidden[..m * ec],
                rows: m,
                cols: ec,
                stride: ec,
            },
        )?;
        kernels::gemm(
            kern,
            MatRef {
                data: &hidden[..m * ec],
                rows: m,
                cols: ec,
                stride: ec,
            },
            wts.pw2,
            Epilogue::BiasScaleAdd {
                bias: wts.pw2_b,
                gamma: wts.gamma2,
            },
            MatMut {
                data: xs,
                rows: m,
                cols: c,
                stride: c,
            },
        )?;
        y0 += s;
    }
    Ok(())
}

/// A quadratic depthwise conv whose channel count `C` and kernel `K` are part of its type.
#[derive(Clone, Copy, Debug)]
pub struct QuadraDwConv<'w, const C: usize, const K: usize> {
    wts: QdwWeights<'w>,
}

impl<'w, const C: usize, const K: usize> QuadraDwConv<'w, C, K> {
    /// Packed taps length.
    pub const TAPS: usize = K * K * 3 * C;

    /// Wraps packed taps, scales and biases (see [`QdwWeights`]); `K` must be 3, 5 or 7
    /// (a compile error otherwise).
    pub fn new(taps: MatData<'w>, scales: &'w [f32], bias: &'w [f32]) -> Result<Self, Error> {
        const { assert!(K == 3 || K == 5 || K == 7, "QDW kernel must be 3, 5 or 7") };
        Ok(QuadraDwConv {
            wts: QdwWeights::new(K, C, taps, scales, bias)?,
        })
    }

    /// Scratch floats for rows of width `W`.
    pub const fn scratch_len<const W: usize>() -> usize {
        qdw_scratch_len(W, C, K)
    }

    /// Runs the conv in place on an `[H][W][C]` activation. `N` must be at least
    /// `scratch_len::<W>()`, checked at compile time.
    pub fn forward<const H: usize, const W: usize, const N: usize>(
        &self,
        kern: Kernels,
        x: &mut [[[f32; C]; W]; H],
        scratch: &mut [f32; N],
    ) {
        const { assert!(N >= qdw_scratch_len(W, C, K), "QDW scratch too small") };
        let x = x.as_flattened_mut().as_flattened_mut();
        // Every length is fixed by the types and checked above, so this cannot fail.
        let r = qdw_forward(kern, H, W, &self.wts, x, scratch);
        debug_assert!(r.is_ok());
    }
}

/// A QuadraBlock whose width `C`, kernel `K` and expansion `E` are part of its type.
#[derive(Clone, Copy, Debug)]
pub struct QuadraBlock<'w, const C: usize, const K: usize, const E: usize> {
    wts: BlockWeights<'w>,
}

impl<'w, const C: usize, const K: usize, const E: usize> QuadraBlock<'w, C, K, E> {
    /// Stream lengths of this block's weights.
    pub const WEIGHTS: WeightsLen = crate::arch::BlockSpec::quadra(K as u8, E as u8).weights_len(C);

    /// Views block weights ([`Self::WEIGHTS`] in the packed model order).
    pub fn new(weights: Weights<'w>) -> Result<Self, Error> {
        const { assert!(K == 3 || K == 5 || K == 7, "QDW kernel must be 3, 5 or 7") };
        const { assert!(E >= 1 && E <= 8, "expansion must be 1..=8") };
        Ok(QuadraBlock {
            wts: BlockWeights::from_weights(C, K, E, weights)?,
        })
    }

    /// Scratch floats for rows of width `W` and strip height `S`.
    pub const fn scratch_len<const W: usize, const S: usize>() -> usize {
        block_scratch_len(W, C, K, E, S)
    }

    /// Runs the block in place on an `[H][W][C]` activation, `S` rows per strip. `N` must
    /// be at least `scratch_len::<W, S>()`, checked at compile time.
    pub fn forward<const H: usize, const W: usize, const S: usize, const N: usize>(
        &self,
        kern: Kernels,
        x: &mut [[[f32; C]; W]; H],
        scratch: &mut [f32; N],
    ) {
        const { assert!(S >= 1, "strip height must be at least 1") };
        const {
            assert!(
                N >= block_scratch_len(W, C, K, E, S),
                "block scratch too small"
            )
        };
        let x = x.as_flattened_mut().as_flattened_mut();
        let d = BlockDims {
            h: H,
            w: W,
            c: C,
            k: K,
            e: E,
        };
        // Shapes are fixed by the types and checked above, so this cannot fail.
        let r = block_forward(kern, d, S, &self.wts, x, scratch);
        debug_assert!(r.is_ok());
    }
}
