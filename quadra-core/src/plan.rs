//! The scratch plan: every region of a block's scratch defined once.
//!
//! Each layout is a small struct of region lengths made by a `const fn` (so arena sizes
//! stay compile-time constants that firmware sizes `static`s with); its `len()` is their
//! sum and its `split` carves a slice into exactly those regions, so a length and the
//! carving it pays for cannot drift apart. The strip heights and the grouped-MLP choice,
//! which decide those lengths, live here too. `arch` sums these per layer into a whole
//! arena ([`crate::arch::Plan`]); `block` and `net` only ever split.

use crate::error::{Buffer, Error};
use crate::kernels::{q8, qdw_row_len};
use crate::pad::vec_pad;

/// Hidden channels computed at a time: PW1 produces this many hidden channels for a whole
/// strip, PW2 adds their contribution into the residual, then the next slice. The hidden
/// strip in scratch is `strip·W·HIDDEN_CHUNK` floats whatever the expansion, so strips can
/// be tall and every weight panel is reused across many pixels.
pub const HIDDEN_CHUNK: usize = 128;

/// Width of the hidden slice of a block: `min(E·C, HIDDEN_CHUNK)`.
pub const fn hidden_chunk(c: usize, e: usize) -> usize {
    if e * c < HIDDEN_CHUNK {
        e * c
    } else {
        HIDDEN_CHUNK
    }
}

/// Floats of LN2 rows plus hidden slice a strip may take, per target.
///
/// x86 (320 KB): enough that a 14x14x256 or 7x7x512 block is one strip (its PW weights are
/// read once per image), small enough to stay near a 1 MB L2.
///
/// aarch64 (160 KB), for the Cortex-A76 (64 KB L1D, 256-512 KB L2): chosen with
/// `scripts/a76-cache.sh`, callgrind's cache simulator set to the A76's L1D and L2 over
/// QuadraNet36-T's four block shapes and every strip height. Against 320 KB, the smaller
/// strips miss L1 9% less; L2 misses fall 11% with a 256 KB L2 and rise 8% with a 512 KB
/// one (its 27 14x14x256 blocks then take two strips, reading their weights twice).
/// *Simulated*, not measured on a device.
pub const STRIP_BUDGET: usize = if cfg!(target_arch = "aarch64") {
    40 * 1024
} else {
    80 * 1024
};

/// Rows of a block processed per strip by default: as many as [`STRIP_BUDGET`] allows.
pub const fn default_strip(h: usize, w: usize, c: usize, e: usize) -> usize {
    let s = match STRIP_BUDGET.checked_div(w * (c + hidden_chunk(c, e))) {
        Some(s) => s,
        None => 1,
    };
    if s < 1 {
        1
    } else if s > h {
        if h == 0 {
            1
        } else {
            h
        }
    } else {
        s
    }
}

/// Hidden-slice groups of the grouped channel MLP.
pub const MLP_GROUPS: usize = 2;

/// Does a block of this shape run its channel MLP in [`MLP_GROUPS`] groups of hidden
/// slices (see `block::mlp_group`)? Chosen by shape alone, so every thread count computes
/// the same thing: when the whole map is one strip and the PW weights dwarf the activation
/// (`E·C ≥ 8·H·W`, e.g. 7x7x512), so that splitting rows between threads would only make each
/// thread stream all the weights.
pub const fn grouped_mlp(h: usize, w: usize, c: usize, e: usize) -> bool {
    default_strip(h, w, c, e) >= h && e * c >= MLP_GROUPS * HIDDEN_CHUNK && e * c >= 8 * h * w
}

/// `scratch` holds at least `need` floats.
fn check(need: usize, scratch: &[f32]) -> Result<(), Error> {
    if scratch.len() < need {
        return Err(Error::Length {
            buffer: Buffer::Scratch,
            expected: need,
            found: scratch.len(),
        });
    }
    Ok(())
}

/// Floats for `m` rows of `k` values in f32 or, on aarch64, in half precision in the fp16
/// GEMM's layout (`kernels::half_tiles_floats`: rows in groups of four, k-blocks of eight),
/// whichever takes more. Only tiny shapes differ: `m` and `k` past a group and a block.
const fn rows_len(m: usize, k: usize) -> usize {
    let f32s = m * k;
    let halves = m.div_ceil(4) * 4 * (k.div_ceil(8) * 8);
    if cfg!(target_arch = "aarch64") && halves.div_ceil(2) > f32s {
        halves.div_ceil(2)
    } else {
        f32s
    }
}

/// Scratch of the channel MLP of `m` pixels (`block::mlp_group`): one hidden slice, and for
/// int8 compute the int8 rows of the LN2 input and of the slice, with their scales.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MlpScratch {
    /// The f32 hidden slice, `m` rows of [`hidden_chunk`].
    pub hidden: usize,
    /// The quantised LN2 rows (`q8` only).
    pub ln2_q: usize,
    /// The quantised hidden slice (`q8` only).
    pub hidden_q: usize,
}

impl MlpScratch {
    /// The layout for `m` pixels of `c` channels at expansion `e`; `q8`: the GEMMs may
    /// compute in int8 (a [`crate::Dtype::W8A8`] model).
    pub const fn of(m: usize, c: usize, e: usize, q8: bool) -> Self {
        let hc = hidden_chunk(c, e);
        MlpScratch {
            hidden: vec_pad(rows_len(m, hc)),
            ln2_q: if q8 { q8::scratch_len(m, c) } else { 0 },
            hidden_q: if q8 { q8::scratch_len(m, hc) } else { 0 },
        }
    }

    /// Floats in all.
    pub const fn floats(&self) -> usize {
        self.hidden + self.ln2_q + self.hidden_q
    }

    /// `[hidden, ln2_q, hidden_q]` from the front of `scratch`.
    pub fn split<'s>(&self, scratch: &'s mut [f32]) -> Result<[&'s mut [f32]; 3], Error> {
        check(self.floats(), scratch)?;
        let (hidden, rest) = scratch.split_at_mut(self.hidden);
        let (ln2_q, rest) = rest.split_at_mut(self.ln2_q);
        Ok([hidden, ln2_q, &mut rest[..self.hidden_q]])
    }
}

/// Scratch of one block at strip height `strip`, or of one band of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockScratch {
    /// A ring of `K` zero-padded, channel-blocked LN1 rows.
    pub ring: usize,
    /// One strip of LN2 rows.
    pub ln2: usize,
    /// The channel MLP of one strip.
    pub mlp: MlpScratch,
    /// A band's `(K-1)/2` LN1 rows below it, captured before any band writes (0 unless
    /// the block runs in bands).
    pub below: usize,
}

/// The regions of a [`BlockScratch`].
#[derive(Debug)]
pub struct BlockRegions<'s> {
    /// [`BlockScratch::ring`].
    pub ring: &'s mut [f32],
    /// [`BlockScratch::ln2`].
    pub ln2: &'s mut [f32],
    /// [`BlockScratch::mlp`] (split again by `mlp_group`).
    pub mlp: &'s mut [f32],
    /// [`BlockScratch::below`].
    pub below: &'s mut [f32],
}

impl BlockScratch {
    /// The layout of a block of width `w`, `c` channels, kernel `k`, expansion `e`, at
    /// strip height `strip`; `band`: run as one band of several.
    pub const fn of(
        w: usize,
        c: usize,
        k: usize,
        e: usize,
        strip: usize,
        q8: bool,
        band: bool,
    ) -> Self {
        BlockScratch {
            ring: vec_pad(k * qdw_row_len(w, c, k)),
            ln2: vec_pad(rows_len(strip * w, c)),
            mlp: MlpScratch::of(strip * w, c, e, q8),
            below: if band {
                (k - 1) / 2 * qdw_row_len(w, c, k)
            } else {
                0
            },
        }
    }

    /// Floats in all.
    pub const fn floats(&self) -> usize {
        self.ring + self.ln2 + self.mlp.floats() + self.below
    }

    /// The regions, from the front of `scratch`.
    pub fn split<'s>(&self, scratch: &'s mut [f32]) -> Result<BlockRegions<'s>, Error> {
        check(self.floats(), scratch)?;
        let (ring, rest) = scratch.split_at_mut(self.ring);
        let (ln2, rest) = rest.split_at_mut(self.ln2);
        let (mlp, rest) = rest.split_at_mut(self.mlp.floats());
        Ok(BlockRegions {
            ring,
            ln2,
            mlp,
            below: &mut rest[..self.below],
        })
    }
}

/// Shared scratch of a grouped-MLP block ([`grouped_mlp`]): LN2 of every pixel, one
/// accumulator per extra group, one MLP scratch per group, and a vector of ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupedScratch {
    /// LN2 of all `h·w` pixels; each accumulator is as long.
    pub ln2: usize,
    /// One group's [`MlpScratch`].
    pub per_group: usize,
    /// The ones vector (`c` used).
    pub ones: usize,
}

/// The regions of a [`GroupedScratch`].
#[derive(Debug)]
pub struct GroupedRegions<'s> {
    /// LN2 of every pixel.
    pub ln2: &'s mut [f32],
    /// `MLP_GROUPS - 1` accumulators of [`GroupedScratch::ln2`] floats each.
    pub accs: &'s mut [f32],
    /// `MLP_GROUPS` MLP scratches of [`GroupedScratch::per_group`] floats each.
    pub hiddens: &'s mut [f32],
    /// `c` floats for the ones vector.
    pub ones: &'s mut [f32],
}

impl GroupedScratch {
    /// The layout for an `h x w x c` block at expansion `e`.
    pub const fn of(h: usize, w: usize, c: usize, e: usize, q8: bool) -> Self {
        GroupedScratch {
            ln2: vec_pad(h * w * c),
            per_group: MlpScratch::of(h * w, c, e, q8).floats(),
            ones: vec_pad(c),
        }
    }

    /// Floats in all.
    pub const fn floats(&self) -> usize {
        MLP_GROUPS * self.ln2 + MLP_GROUPS * self.per_group + self.ones
    }

    /// The regions, from the front of `scratch`; the ones vector is `c` floats.
    pub fn split<'s>(&self, scratch: &'s mut [f32], c: usize) -> Result<GroupedRegions<'s>, Error> {
        check(self.floats(), scratch)?;
        let (ln2, rest) = scratch.split_at_mut(self.ln2);
        let (accs, rest) = rest.split_at_mut((MLP_GROUPS - 1) * self.ln2);
        let (hiddens, rest) = rest.split_at_mut(MLP_GROUPS * self.per_group);
        Ok(GroupedRegions {
            ln2,
            accs,
            hiddens,
            ones: &mut rest[..c.min(self.ones)],
        })
    }
}

/// Scratch floats a block needs at strip height `strip`: a ring of `K` zero-padded,
/// channel-blocked LN1 rows (LayerNorm writes them in place), one strip of LN2 rows and
/// one strip of a hidden slice (`plan::BlockScratch`).
pub const fn block_scratch_len(w: usize, c: usize, k: usize, e: usize, strip: usize) -> usize {
    block_scratch_len_for(w, c, k, e, strip, false)
}

/// [`block_scratch_len`] for a block whose pointwise GEMMs may compute in int8 (`q8`:
/// the model is [`crate::Dtype::W8A8`]), which quantises its LN2 rows and hidden slices
/// into int8 rows beside them.
pub const fn block_scratch_len_for(
    w: usize,
    c: usize,
    k: usize,
    e: usize,
    strip: usize,
    q8: bool,
) -> usize {
    BlockScratch::of(w, c, k, e, strip, q8, false).floats()
}

/// Scratch floats of one band of a block run in bands: the block scratch plus `(K-1)/2`
/// LN1 rows below the band (`BlockScratch` with `band`).
pub const fn band_scratch_len(
    w: usize,
    c: usize,
    k: usize,
    e: usize,
    strip: usize,
    q8: bool,
) -> usize {
    BlockScratch::of(w, c, k, e, strip, q8, true).floats()
}

/// Scratch floats of the channel MLP of `m` pixels (`MlpScratch`).
pub const fn mlp_scratch_len(m: usize, c: usize, e: usize, q8: bool) -> usize {
    MlpScratch::of(m, c, e, q8).floats()
}

/// Shared scratch floats of a grouped-MLP block (`GroupedScratch`).
pub const fn grouped_scratch_len(h: usize, w: usize, c: usize, e: usize, q8: bool) -> usize {
    GroupedScratch::of(h, w, c, e, q8).floats()
}

/// Scratch of one block of shape `h x w x c` (kernel `k`, expansion `e`) run in `bands`
/// bands: `(floats per band, floats shared by all bands)`; only grouped-MLP blocks
/// ([`grouped_mlp`]) share any.
pub const fn block_scratch_split(
    h: usize,
    w: usize,
    c: usize,
    k: usize,
    e: usize,
    bands: usize,
    q8: bool,
) -> (usize, usize) {
    let grouped = grouped_mlp(h, w, c, e);
    let strip = if grouped {
        1
    } else {
        default_strip(h, w, c, e)
    };
    let per = vec_pad(BlockScratch::of(w, c, k, e, strip, q8, bands > 1).floats());
    let shared = if grouped {
        grouped_scratch_len(h, w, c, e, q8)
    } else {
        0
    };
    (per, shared)
}
