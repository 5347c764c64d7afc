//! The streaming tile scheduler: a QuadraBlock (or a lone QDW conv) run in place on its
//! activation, strip of rows by strip of rows.
//!
//! Scratch holds a ring of `K` zero-padded LN1-normalised rows, one strip of LN2 rows and
//! one strip of a slice of the hidden layer. Each row is normalised into the ring before
//! the row `K/2` above it is overwritten, so the block writes its output over its input.
//! The three QDW partial results and the hidden `[H, W, E·C]` tensor never exist in full.

use crate::error::{Buffer, Error};
use crate::isa::Kernels;
use crate::kernels::{
    self, q8, qdw_row_len, Epilogue, MatMut, MatRef, PackedB, QdwWeights, CBLOCK, MAX_K,
};
#[doc(hidden)]
pub use crate::plan::band_scratch_len;
use crate::plan::{hidden_chunk, BlockScratch, MlpScratch};
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
        cur.begin_block();
        Ok(BlockWeights {
            gamma1: cur.vec(c)?,
            ln1_w: cur.vec(c)?,
            ln1_b: cur.vec(c)?,
            qdw: cur.qdw(k, c)?,
            gamma2: cur.vec(c)?,
            ln2_w: cur.vec(c)?,
            ln2_b: cur.vec(c)?,
            pw1: cur.pointwise(c, e * c)?,
            pw1_b: cur.vec(e * c)?,
            pw2: cur.pointwise(e * c, c)?,
            pw2_b: cur.vec(c)?,
        })
    }

    /// Does either pointwise GEMM compute in int8 (w8a8 weights in the dot-product layout),
    /// so that the block's scratch holds int8 activation rows too?
    pub const fn q8(&self) -> bool {
        self.pw1.is_dot() || self.pw2.is_dot()
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
    kern: Kernels,
    slots: usize,
    row_len: usize,
    w: usize,
    c: usize,
    k: usize,
    p: usize,
}

impl<'s> Ring<'s> {
    /// A ring over `buf`; `clear` zeroes the padding columns, which must be zero (every
    /// slot's pixels are written before they are read). The rows are those `kern` writes
    /// and reads: half precision with an fp16 token (`kernels::block_row`), in the first
    /// half of each slot, whose padding is then what is cleared.
    fn new(
        buf: &'s mut [f32],
        slots: usize,
        (w, c, k): (usize, usize, usize),
        kern: Kernels,
        clear: bool,
    ) -> Self {
        let row_len = qdw_row_len(w, c, k);
        let buf = &mut buf[..slots * row_len];
        if clear {
            let (p, pw) = ((k - 1) / 2, w + k - 1);
            // Floats per pixel of a block: 16, or 8 holding 16 halves.
            let (px, used) = if kern.fp16() {
                (CBLOCK / 2, row_len / 2)
            } else {
                (CBLOCK, row_len)
            };
            for slot in buf.chunks_exact_mut(row_len) {
                for block in slot[..used].chunks_exact_mut(pw * px) {
                    block[..p * px].fill(0.0);
                    block[(p + w) * px..].fill(0.0);
                }
            }
        }
        Ring {
            buf,
            kern,
            slots,
            row_len,
            w,
            c,
            k,
            p: (k - 1) / 2,
        }
    }

    fn slot(&self, y: isize) -> usize {
        ((y + self.p as isize) as usize) % self.slots
    }

    fn slot_mut(&mut self, y: isize) -> &mut [f32] {
        let (s, rl) = (self.slot(y), self.row_len);
        &mut self.buf[s * rl..(s + 1) * rl]
    }

    /// Fills the slot of row `y` from the unpadded channels-last row `src` (normalised by
    /// `ln` on the way, if given), channel-blocked with the ring's kernels (so in the
    /// precision its QDW reads); with no source (outside the image) the row is zero.
    fn fill(&mut self, y: isize, src: Option<&[f32]>, ln: Option<Ln<'_>>) -> Result<(), Error> {
        let (w, c, k, kern) = (self.w, self.c, self.k, self.kern);
        let dst = self.slot_mut(y);
        let Some(src) = src else {
            dst.fill(0.0);
            return Ok(());
        };
        match ln {
            None => kernels::block_row(kern, src, w, c, k, dst)?,
            Some((lw, lb)) => kernels::layer_norm_blocked_row(kern, src, w, c, lw, lb, k, dst)?,
        }
        Ok(())
    }

    /// The `k` rows around output row `y` (as [`Ring::rows`]) and, beside them, the slot of
    /// input row `next`, which must not be one of them (the ring needs `k + 1` slots).
    fn rows_and_slot(&mut self, y: usize, k: usize, next: isize) -> ([&[f32]; MAX_K], &mut [f32]) {
        let (first, dst_slot, slots) = (
            self.slot(y as isize - self.p as isize),
            self.slot(next),
            self.slots,
        );
        let mut rows: [&[f32]; MAX_K] = [&[]; MAX_K];
        let mut dst: &mut [f32] = &mut [];
        for (s, chunk) in self.buf.chunks_exact_mut(self.row_len).enumerate() {
            let ky = (s + slots - first) % slots;
            if s == dst_slot {
                dst = chunk;
            } else if ky < k {
                rows[ky] = chunk;
            }
        }
        (rows, dst)
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

/// A LayerNorm to apply: weight, bias.
type Ln<'w> = (&'w [f32], &'w [f32]);

/// Row `y` of an `[h, row]` tensor, or `None` outside `0..h`.
fn row_of(x: &[f32], y: isize, h: usize, row: usize) -> Option<&[f32]> {
    (y >= 0 && (y as usize) < h).then(|| &x[y as usize * row..(y as usize + 1) * row])
}

/// Scratch floats of a lone QDW conv on rows of width `w`: `K + 1` channel-blocked rows
/// (the kernel fills the spare one with the next input row as it runs).
pub const fn qdw_scratch_len(w: usize, c: usize, k: usize) -> usize {
    (k + 1) * qdw_row_len(w, c, k)
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
    let row = w * c;
    // k + 1 slots: the kernel blocks the next input row into the spare one as it runs.
    let mut ring = Ring::new(scratch, k + 1, (w, c, k), kern, true);
    for y in -(p as isize)..=p as isize {
        ring.fill(y, row_of(x, y, h, row), None)?;
    }
    for y in 0..h {
        // Input row `next` goes into the spare slot while row `y` is computed.
        let next = y + p + 1;
        let (done, rest) = x.split_at_mut(next.min(h) * row);
        let out = &mut done[y * row..(y + 1) * row];
        let (rows, dst) = ring.rows_and_slot(y, k, next as isize);
        match rest.get(..row) {
            Some(src) if next < h => {
                kernels::qdw_row_and_block(kern, wts, &rows[..k], w, out, src, dst)?
            }
            _ => {
                dst.fill(0.0);
                kernels::qdw_row(kern, wts, &rows[..k], w, None, out)?
            }
        }
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
/// `scratch` needs [`crate::arch::block_scratch_len`]`(w, c, k, e, strip)` floats. The result does not
/// depend on `strip`.
pub fn block_forward(
    kern: Kernels,
    d: BlockDims,
    strip: usize,
    wts: &BlockWeights<'_>,
    x: &mut [f32],
    scratch: &mut [f32],
) -> Result<(), Error> {
    block_prepare_band(kern, d, strip, wts, x, (0, d.h), scratch)?;
    block_run_band(kern, d, strip, wts, x, 0, scratch)
}

/// The default strip height of a block of shape `d` (see [`crate::plan::default_strip`]).
pub const fn default_strip_for(d: &BlockDims) -> usize {
    crate::plan::default_strip(d.h, d.w, d.c, d.e)
}

struct BandScratch<'s> {
    ring: &'s mut [f32],
    ln2: &'s mut [f32],
    hidden: &'s mut [f32],
    below: &'s mut [f32],
}

fn split_scratch<'s>(
    d: &BlockDims,
    strip: usize,
    scratch: &'s mut [f32],
    band: bool,
    q8: bool,
) -> Result<BandScratch<'s>, Error> {
    let BlockDims { w, c, k, e, .. } = *d;
    let r = BlockScratch::of(w, c, k, e, strip, q8, band).split(scratch)?;
    Ok(BandScratch {
        ring: r.ring,
        ln2: r.ln2,
        hidden: r.mlp,
        below: r.below,
    })
}

fn check_block(d: &BlockDims, strip: usize, wts: &BlockWeights<'_>) -> Result<(), Error> {
    wts.check(d)?;
    if strip == 0 {
        return Err(Error::Arch("strip height must be at least 1"));
    }
    Ok(())
}

/// First half of running rows `y0..y1` (`band`) of a block as an independent band:
/// normalises, from the still unmodified full activation `x`, the `(K-1)/2` rows on each
/// side of the band that neighbouring bands own into the band's scratch. Every band must be prepared before
/// any band runs; then the bands can run in parallel and give exactly the result of
/// [`block_forward`]. With `y0 = 0, y1 = h` the below-band rows are not needed, and
/// [`crate::arch::block_scratch_len`] suffices.
#[doc(hidden)]
pub fn block_prepare_band(
    kern: Kernels,
    d: BlockDims,
    strip: usize,
    wts: &BlockWeights<'_>,
    x: &[f32],
    (y0, y1): (usize, usize),
    scratch: &mut [f32],
) -> Result<(), Error> {
    check_block(&d, strip, wts)?;
    let BlockDims { h, w, c, k, .. } = d;
    expect_len(Buffer::Activation, h * w * c, x.len(), true)?;
    if y0 > y1 || y1 > h {
        return Err(Error::Arch("band rows must lie inside the activation"));
    }
    let sc = split_scratch(&d, strip, scratch, y1 < h, wts.q8())?;
    if w == 0 || c == 0 {
        return Ok(());
    }
    let p = (k - 1) / 2;
    let ln1 = Some((wts.ln1_w, wts.ln1_b));
    let row = w * c;
    // Only rows other bands own are captured here; the band normalises its own rows
    // when it runs.
    let mut ring = Ring::new(sc.ring, k, (w, c, k), kern, true);
    for y in y0 as isize - p as isize..y0 as isize {
        ring.fill(y, row_of(x, y, h, row), ln1)?;
    }
    if y1 < h {
        let mut below = Ring::new(sc.below, p, (w, c, k), kern, true);
        for y in y1..y1 + p {
            below.fill(y as isize, row_of(x, y as isize, h, row), ln1)?;
        }
    }
    Ok(())
}

/// The end row of a band of whole rows starting at `y0`, which must lie inside the
/// activation; `None` for rows of no floats (nothing to do).
fn band_end(d: &BlockDims, x_band: &[f32], y0: usize) -> Result<Option<usize>, Error> {
    let row = d.w * d.c;
    if row == 0 {
        return Ok(None);
    }
    if !x_band.len().is_multiple_of(row) || y0 + x_band.len() / row > d.h {
        return Err(Error::Arch("band rows must lie inside the activation"));
    }
    Ok(Some(y0 + x_band.len() / row))
}

/// Second half of a band (see [`block_prepare_band`]): runs rows `y0..y0 + rows` of the
/// block in place on `x_band`, which holds exactly those rows.
#[doc(hidden)]
pub fn block_run_band(
    kern: Kernels,
    d: BlockDims,
    strip: usize,
    wts: &BlockWeights<'_>,
    x_band: &mut [f32],
    y0: usize,
    scratch: &mut [f32],
) -> Result<(), Error> {
    check_block(&d, strip, wts)?;
    let BlockDims { w, c, e, .. } = d;
    let row = w * c;
    let Some(y1) = band_end(&d, x_band, y0)? else {
        return Ok(());
    };
    let mut sc = split_scratch(&d, strip, scratch, y1 < d.h, wts.q8())?;
    let (ln2, hidden) = (
        core::mem::take(&mut sc.ln2),
        core::mem::take(&mut sc.hidden),
    );
    let mut qdw = BandQdw::start(kern, &d, wts, sc, x_band, (y0, y1))?;
    let mut s0 = y0;
    while s0 < y1 {
        let s = strip.min(y1 - s0);
        for y in s0..s0 + s {
            qdw.row(kern, wts, x_band, y)?;
        }
        let xs = &mut x_band[(s0 - y0) * row..(s0 - y0 + s) * row];
        let m = s * w;
        let rows = ln2_rows(kern, wts, xs, c, ln2, true)?;
        // The hidden layer a slice at a time: PW1 + GELU into the slice, then PW2 adds
        // the slice's contribution into the residual (bias with the first slice).
        mlp_group(kern, (c, e), wts, rows, m, (0, 1), hidden, &[], xs)?;
        s0 += s;
    }
    Ok(())
}

/// The spatial half of a block on band rows `y0..` (`x_band`), for the grouped channel MLP
/// ([`crate::arch::grouped_mlp`]): `x = x + gamma1 ⊙ QDW(LN1(x))` in place, then `LN2(x)` of
/// the band's rows into `ln2_out`. Prepare the band with [`block_prepare_band`] at strip 1;
/// `scratch` needs its scratch at strip 1.
#[doc(hidden)]
pub fn block_qdw_band(
    kern: Kernels,
    d: BlockDims,
    wts: &BlockWeights<'_>,
    x_band: &mut [f32],
    y0: usize,
    scratch: &mut [f32],
    ln2_out: &mut [f32],
) -> Result<(), Error> {
    check_block(&d, 1, wts)?;
    let Some(y1) = band_end(&d, x_band, y0)? else {
        return Ok(());
    };
    expect_len(Buffer::Scratch, x_band.len(), ln2_out.len(), false)?;
    let c = d.c;
    let sc = split_scratch(&d, 1, scratch, y1 < d.h, wts.q8())?;
    let mut qdw = BandQdw::start(kern, &d, wts, sc, x_band, (y0, y1))?;
    for y in y0..y1 {
        qdw.row(kern, wts, x_band, y)?;
    }
    // f32 rows: the grouped MLP reads all bands' rows as one matrix, and each band's share
    // of `ln2_out` starts where its f32 rows do.
    ln2_rows(kern, wts, x_band, c, &mut ln2_out[..x_band.len()], false).map(|_| ())
}

/// LN2's rows as [`mlp_group`] reads them: `m` rows of `c`.
#[derive(Clone, Copy, Debug)]
#[doc(hidden)]
pub enum Ln2<'a> {
    /// f32 rows.
    F32(&'a [f32]),
    /// Half-precision rows (two halves to a float, in the fp16 GEMM's layout:
    /// [`kernels::gemm_half_rows`]), for PW1 in `Precision::Fp16`: rounded once, not again
    /// at every hidden slice.
    Half(&'a [f32]),
}

/// LN2 of the rows `x` into `out` (at least as long as `x`; with half precision, as
/// `kernels::half_tiles_floats` says, which `plan::BlockScratch` provides): half precision
/// where `half_ok` and PW1 can read such rows ([`kernels::half_rows`]: an fp16 token, float
/// weights), else f32.
fn ln2_rows<'o>(
    kern: Kernels,
    wts: &BlockWeights<'_>,
    x: &[f32],
    c: usize,
    out: &'o mut [f32],
    half_ok: bool,
) -> Result<Ln2<'o>, Error> {
    if half_ok && kernels::half_rows(kern, &wts.pw1) {
        kernels::layer_norm_rows_half(kern, x, c, wts.ln2_w, wts.ln2_b, out)?;
        Ok(Ln2::Half(out))
    } else {
        kernels::layer_norm_rows(kern, x, c, wts.ln2_w, wts.ln2_b, out)?;
        Ok(Ln2::F32(out))
    }
}

/// The channel MLP of `m` pixels (LN2 rows in `ln2`), a 128-channel hidden slice at a time:
/// for slices `group, group + groups, …`, PW1 + GELU into the slice, then PW2 added into
/// `out`. Group 0 adds `gamma2 ⊙ (… + bias)` into the residual (`out` = the activation
/// rows); with several groups (the grouped MLP, `arch::grouped_mlp`) the others add the raw
/// products into their own zeroed accumulators (`gamma = ones`), combined afterwards in
/// group order, so the result does not depend on how groups are spread over threads.
///
/// `scratch` holds the slice ([`crate::plan::MlpScratch`]): with w8a8 weights
/// ([`BlockWeights::q8`]) also the int8 LN2 rows (quantised once, per pixel) and the int8
/// slice (quantised per pixel and slice, so each slice's int32 sums are dequantised with
/// their own scale).
#[allow(clippy::too_many_arguments)]
#[doc(hidden)]
pub fn mlp_group(
    kern: Kernels,
    (c, e): (usize, usize),
    wts: &BlockWeights<'_>,
    ln2: Ln2<'_>,
    m: usize,
    (group, groups): (usize, usize),
    scratch: &mut [f32],
    ones: &[f32],
    out: &mut [f32],
) -> Result<(), Error> {
    let (ec, hc) = (e * c, hidden_chunk(c, e));
    let q8 = wts.q8();
    let [hidden, ln2_q, hid_q] = MlpScratch::of(m, c, e, q8).split(scratch)?;
    let (ln2, half) = match ln2 {
        Ln2::F32(r) => (r, false),
        Ln2::Half(r) => (r, true),
    };
    let mut ln2_q = if wts.pw1.is_dot() {
        let mut q = q8::rows_in(ln2_q, m, c)?;
        q8::quantize_rows(kern, &ln2[..m * c], c, &mut q)?;
        Some(q)
    } else {
        None
    };
    let mut slice = group;
    let mut first = true;
    while slice * hc < ec {
        let (j0, j1) = (slice * hc, ((slice + 1) * hc).min(ec));
        let nh = j1 - j0;
        let (Some(pw1), Some(pw2)) = (wts.pw1.cols(j0, j1), wts.pw2.rows(j0, j1)) else {
            return Err(Error::Arch("hidden slice outside the PW weights"));
        };
        let pw1_b = &wts.pw1_b[j0..j1];
        // `Precision::Fp16` with float weights (`half_rows`: never w8a8's): PW1's GELU writes
        // the slice in half precision, which PW2 reads as it is.
        let half_hidden = kernels::half_rows(kern, &pw1) && kernels::half_rows(kern, &pw2);
        // ... and with w8a8 weights both ways (the int8 GEMMs), PW1's GELU writes the slice
        // in half precision too, which PW2 quantises in half precision.
        let half_q8 = kern.fp16() && pw1.is_dot() && pw2.is_dot();
        if half_hidden {
            // In the fp16 GEMM's layout, as PW2 reads it (`plan::MlpScratch` sizes it).
            kernels::gemm_gelu_half(kern, (ln2, half), m, pw1, pw1_b, hidden)?;
        } else if let (true, Some(q)) = (half_q8, ln2_q.as_mut()) {
            q8::gemm_q8_gelu_half(kern, q.as_ref(), pw1, pw1_b, hidden)?;
        } else {
            let h_out = MatMut::dense(&mut hidden[..m * nh], m, nh);
            let gelu = Epilogue::BiasGelu(pw1_b);
            match ln2_q.as_mut() {
                Some(q) => q8::gemm_q8(kern, q.as_ref(), pw1, gelu, h_out)?,
                None if half => kernels::gemm_half_rows(kern, ln2, m, pw1, gelu, h_out)?,
                None => kernels::gemm(kern, MatRef::dense(&ln2[..m * c], m, c), pw1, gelu, h_out)?,
            }
        }
        let epi = match (group, first) {
            (0, true) => Epilogue::BiasScaleAdd {
                bias: wts.pw2_b,
                gamma: wts.gamma2,
            },
            (0, false) => Epilogue::ScaleAdd { gamma: wts.gamma2 },
            _ => Epilogue::ScaleAdd { gamma: ones },
        };
        let res = MatMut::dense(&mut out[..m * c], m, c);
        let hid = MatRef::dense(&hidden[..m * nh], m, nh);
        if half_hidden {
            kernels::gemm_half_rows(kern, hidden, m, pw2, epi, res)?;
        } else if half_q8 && ln2_q.is_some() {
            let mut q = q8::rows_in(hid_q, m, nh)?;
            q8::quantize_rows_half(kern, hidden, &mut q)?;
            q8::gemm_q8(kern, q.as_ref(), pw2, epi, res)?;
        } else if pw2.is_dot() {
            let mut q = q8::rows_in(hid_q, m, nh)?;
            q8::quantize_rows(kern, hid.data, nh, &mut q)?;
            q8::gemm_q8(kern, q.as_ref(), pw2, epi, res)?;
        } else {
            kernels::gemm(kern, hid, pw2, epi, res)?;
        }
        first = false;
        slice += groups;
    }
    Ok(())
}

/// The QDW half of a band: its ring (and the rows captured below it), walked row by row.
struct BandQdw<'s, 'w> {
    ring: Ring<'s>,
    below: Option<Ring<'s>>,
    ln1: Option<Ln<'w>>,
    rows: (usize, usize, usize),
}

impl<'s, 'w> BandQdw<'s, 'w> {
    /// Over a band's prepared scratch; normalises the band's first `K/2` rows into the ring.
    fn start(
        kern: Kernels,
        d: &BlockDims,
        wts: &BlockWeights<'w>,
        sc: BandScratch<'s>,
        x_band: &[f32],
        (y0, y1): (usize, usize),
    ) -> Result<Self, Error> {
        let (k, p) = (d.k, (d.k - 1) / 2);
        let mut b = BandQdw {
            ring: Ring::new(sc.ring, k, (d.w, d.c, k), kern, false),
            below: (y1 < d.h).then(|| Ring::new(sc.below, p, (d.w, d.c, k), kern, false)),
            ln1: Some((wts.ln1_w, wts.ln1_b)),
            rows: (y0, y1, d.h),
        };
        for y in y0..y0 + p {
            b.fill(x_band, y)?;
        }
        Ok(b)
    }

    fn fill(&mut self, x_band: &[f32], y: usize) -> Result<(), Error> {
        fill_band_row(
            &mut self.ring,
            x_band,
            self.below.as_ref(),
            y,
            self.rows,
            self.ln1,
        )
    }

    /// Normalises the row `K/2` below `y` (still untouched) into the ring, whose `K` slots
    /// then hold exactly the rows output row `y` reads, and overwrites row `y` in place.
    fn row(
        &mut self,
        kern: Kernels,
        wts: &BlockWeights<'_>,
        x_band: &mut [f32],
        y: usize,
    ) -> Result<(), Error> {
        let (k, w) = (self.ring.k, self.ring.w);
        self.fill(x_band, y + self.ring.p)?;
        let taps = self.ring.rows(y, k);
        let row = w * self.ring.c;
        let y0 = self.rows.0;
        let out = &mut x_band[(y - y0) * row..(y - y0 + 1) * row];
        kernels::qdw_row(kern, &wts.qdw, &taps[..k], w, Some(wts.gamma1), out)
    }
}

/// Row `y` (at or below the band `rows = (y0, y1, h)`) into the ring: from the band itself,
/// from the rows captured below it, or zero past the bottom.
fn fill_band_row(
    ring: &mut Ring<'_>,
    x_band: &[f32],
    below: Option<&Ring<'_>>,
    y: usize,
    (y0, y1, h): (usize, usize, usize),
    ln1: Option<Ln<'_>>,
) -> Result<(), Error> {
    let row = x_band.len() / (y1 - y0).max(1);
    if y < y1 {
        let src = row_of(x_band, (y - y0) as isize, y1 - y0, row);
        ring.fill(y as isize, src, ln1)
    } else if let (true, Some(b)) = (y < h, below) {
        let p = ring.p;
        ring.slot_mut(y as isize)
            .copy_from_slice(b.rows(y + p, 1)[0]);
        Ok(())
    } else {
        ring.fill(y as isize, None, None)
    }
}
