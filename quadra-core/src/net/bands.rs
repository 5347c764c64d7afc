//! Band scheduling: a layer's rows split over an [`Executor`]'s width, each band with its
//! own scratch, and a block's channel MLP run in hidden-slice groups when that pays.

use crate::arch::{block_scratch_split, default_strip, grouped_mlp, MLP_GROUPS};
use crate::block::{
    block_forward, block_prepare_band, block_qdw_band, block_run_band, mlp_group, BlockDims,
    BlockWeights, Ln2,
};
use crate::error::{Buffer, Error};
use crate::exec::{Executor, MAX_BANDS};
use crate::isa::Kernels;
use crate::plan::{GroupedRegions, GroupedScratch};
use crate::weights::vec_pad;

/// One QuadraBlock in place on `x`, its rows split into `exec.width()` bands (each with
/// `band_scratch` floats of `scratch`: [`crate::arch::Plan::band_scratch`], or
/// [`run_block_scratch`]`.0`; `scratch` needs [`run_block_scratch`]`.1` floats). Blocks
/// that [`grouped_mlp`] picks run their channel MLP in hidden-slice groups instead. The
/// result does not depend on `exec.width()`.
pub fn run_block<E: Executor>(
    exec: &E,
    kern: Kernels,
    dims: BlockDims,
    bw: &BlockWeights<'_>,
    x: &mut [f32],
    scratch: &mut [f32],
    band_scratch: usize,
) -> Result<(), Error> {
    let BlockDims { h, w, c, e, .. } = dims;
    if grouped_mlp(h, w, c, e) {
        return run_block_grouped(exec, kern, dims, bw, x, scratch);
    }
    let strip = default_strip(h, w, c, e);
    let nb = exec.width().clamp(1, MAX_BANDS).min(h);
    if nb <= 1 {
        return block_forward(kern, dims, strip, bw, x, scratch);
    }
    // Every band first captures the rows it needs from its neighbours (all bands only
    // read), then all bands run and write their own rows.
    prepare_bands(
        exec,
        kern,
        (dims, strip),
        bw,
        x,
        scratch,
        (nb, band_scratch),
    )?;
    let mut tasks = bands_of(exec, x, w * c, h, nb, scratch, band_scratch)?;
    exec.run_bands(&mut tasks, &|t| {
        t.res = block_run_band(kern, dims, strip, bw, t.x, t.y0, t.scratch)
    });
    finish(&tasks)
}

/// Floats of scratch [`run_block`] needs for `dims` split `bands` wide: `(per band, total)`.
pub const fn run_block_scratch(dims: BlockDims, bands: usize) -> (usize, usize) {
    run_block_scratch_for(dims, bands, false)
}

/// [`run_block_scratch`] for a block whose pointwise GEMMs may compute in int8
/// ([`BlockWeights::q8`]).
pub const fn run_block_scratch_for(dims: BlockDims, bands: usize, q8: bool) -> (usize, usize) {
    let BlockDims { h, w, c, k, e } = dims;
    let (per, shared) = block_scratch_split(h, w, c, k, e, bands, q8);
    (per, bands * per + shared)
}

/// [`run_block`] for a block whose channel MLP runs in hidden-slice groups: bands of rows
/// do the QDW and LN2, then the groups run (one per thread), then the extra groups'
/// accumulators are added into the residual in group order.
fn run_block_grouped<E: Executor>(
    exec: &E,
    kern: Kernels,
    dims: BlockDims,
    bw: &BlockWeights<'_>,
    x: &mut [f32],
    scratch: &mut [f32],
) -> Result<(), Error> {
    let BlockDims { h, w, c, e, .. } = dims;
    let m = h * w;
    let nb = exec.width().clamp(1, MAX_BANDS).min(h).max(1);
    // Band chunks sized for this block (plan: `bands · per + shared`).
    let q8 = bw.q8();
    let band_scratch = run_block_scratch_for(dims, exec.width().clamp(1, MAX_BANDS), q8).0;
    let need = nb * band_scratch + GroupedScratch::of(h, w, c, e, q8).floats();
    let short = |found| Error::Length {
        buffer: Buffer::Scratch,
        expected: need,
        found,
    };
    let found = scratch.len();
    if found < need {
        return Err(short(found));
    }
    let layout = GroupedScratch::of(h, w, c, e, q8);
    let per_group = layout.per_group;
    let (bands_buf, shared) = scratch.split_at_mut(nb * band_scratch);
    let GroupedRegions {
        ln2,
        accs,
        hiddens,
        ones,
    } = layout.split(shared, c)?;
    ones.fill(1.0);
    // Bands: capture neighbours' rows, then QDW + LN2 of their own rows.
    prepare_bands(exec, kern, (dims, 1), bw, x, bands_buf, (nb, band_scratch))?;
    {
        let tasks = bands_of(exec, x, w * c, h, nb, bands_buf, band_scratch)?;
        let mut rest_ln2 = &mut ln2[..m * c];
        let mut paired: heapless::Vec<(Band<'_>, &mut [f32]), MAX_BANDS> = heapless::Vec::new();
        for t in tasks {
            let (head, tail) = core::mem::take(&mut rest_ln2).split_at_mut(t.x.len());
            rest_ln2 = tail;
            if paired.push((t, head)).is_err() {
                return Err(Error::Arch("too many bands"));
            }
        }
        exec.run_bands(&mut paired, &|(t, l)| {
            t.res = block_qdw_band(kern, dims, bw, t.x, t.y0, t.scratch, l)
        });
        paired.iter().try_for_each(|(t, _)| t.res)?;
    }
    // Groups of hidden slices: group 0 into the residual, the others into accumulators.
    let ln2: &[f32] = ln2;
    let ones: &[f32] = ones;
    {
        let mut groups: heapless::Vec<Group<'_>, MLP_GROUPS> = heapless::Vec::new();
        let mut hid = hiddens.chunks_mut(per_group);
        let mut acc = accs.chunks_mut(vec_pad(m * c));
        let first = Group {
            g: 0,
            out: &mut x[..],
            hidden: hid.next().ok_or(short(0))?,
            res: Ok(()),
        };
        if groups.push(first).is_err() {
            return Err(Error::Arch("too many groups"));
        }
        for g in 1..MLP_GROUPS {
            let out = acc.next().ok_or(short(0))?;
            out.fill(0.0);
            let hidden = hid.next().ok_or(short(0))?;
            let group = Group {
                g,
                out,
                hidden,
                res: Ok(()),
            };
            if groups.push(group).is_err() {
                return Err(Error::Arch("too many groups"));
            }
        }
        exec.run(&mut groups, &|t| {
            let groups = (t.g, MLP_GROUPS);
            t.res = mlp_group(
                kern,
                (c, e),
                bw,
                Ln2::F32(ln2),
                m,
                groups,
                t.hidden,
                ones,
                t.out,
            )
        });
        groups.iter().try_for_each(|t| t.res)?;
    }
    // Extra groups into the residual, in group order.
    // Pixel by pixel (no `i % c`), so the compiler vectorises it: this runs on one thread.
    for a in accs.chunks(vec_pad(m * c)) {
        for (xp, ap) in x.chunks_exact_mut(c).zip(a[..m * c].chunks_exact(c)) {
            for ((v, s), g) in xp.iter_mut().zip(ap).zip(bw.gamma2) {
                *v += g * s;
            }
        }
    }
    Ok(())
}

/// Runs [`block_prepare_band`] for `nb` bands (scratch chunks of `per`) through `exec`.
fn prepare_bands<E: Executor>(
    exec: &E,
    kern: Kernels,
    (dims, strip): (BlockDims, usize),
    bw: &BlockWeights<'_>,
    x: &[f32],
    scratch: &mut [f32],
    (nb, per): (usize, usize),
) -> Result<(), Error> {
    let mut prep: heapless::Vec<Band<'_>, MAX_BANDS> = heapless::Vec::new();
    for (i, sc) in scratch.chunks_mut(per).take(nb).enumerate() {
        let (y0, y1) = exec.split(dims.h, nb, i);
        let band = Band {
            x: &mut [],
            y0,
            y1,
            scratch: sc,
            res: Ok(()),
        };
        if prep.push(band).is_err() {
            return Err(Error::Arch("too many bands"));
        }
    }
    exec.run_bands(&mut prep, &|t| {
        t.res = block_prepare_band(kern, dims, strip, bw, x, (t.y0, t.y1), t.scratch)
    });
    finish(&prep)
}

/// One group of the grouped MLP: where it adds, its hidden slice buffer, its outcome.
struct Group<'x> {
    g: usize,
    out: &'x mut [f32],
    hidden: &'x mut [f32],
    res: Result<(), Error>,
}

/// One band of a layer: its rows of the activation, its scratch, and its outcome.
pub(super) struct Band<'x> {
    pub(super) x: &'x mut [f32],
    pub(super) y0: usize,
    pub(super) y1: usize,
    pub(super) scratch: &'x mut [f32],
    pub(super) res: Result<(), Error>,
}

/// Splits `rows` rows of `row` floats into `bands` bands as `exec` splits them
/// ([`Executor::split`]), each with `per` floats of scratch.
pub(super) fn bands_of<'x, E: Executor>(
    exec: &E,
    mut x: &'x mut [f32],
    row: usize,
    rows: usize,
    bands: usize,
    scratch: &'x mut [f32],
    per: usize,
) -> Result<heapless::Vec<Band<'x>, MAX_BANDS>, Error> {
    let nb = bands.clamp(1, MAX_BANDS).min(rows.max(1));
    let mut out = heapless::Vec::new();
    let mut sc = scratch.chunks_mut(per.max(1));
    let mut next = 0;
    for i in 0..nb {
        let (y0, y1) = exec.split(rows, nb, i);
        let last = i + 1 == nb;
        if y0 != next || y1 < y0 || y1 > rows || (last && y1 != rows) {
            return Err(Error::Arch(
                "the executor split rows into bands that do not tile the layer",
            ));
        }
        next = y1;
        let (head, tail) = core::mem::take(&mut x).split_at_mut((y1 - y0) * row);
        x = tail;
        let scratch = sc.next().ok_or(Error::Length {
            buffer: Buffer::Scratch,
            expected: nb * per,
            found: 0,
        })?;
        let band = Band {
            x: head,
            y0,
            y1,
            scratch,
            res: Ok(()),
        };
        if out.push(band).is_err() {
            return Err(Error::Arch("too many bands"));
        }
    }
    Ok(out)
}

/// The first error of any band.
pub(super) fn finish(bands: &[Band<'_>]) -> Result<(), Error> {
    bands.iter().try_for_each(|b| b.res)
}
