//! Network architecture: four stages of QuadraBlocks, each block with its own kernel size
//! and expansion (or an identity), and everything derived from it at compile time —
//! weight count, arena size, FLOPs — as `const fn`s, so firmware can size `static`s.

use crate::error::Error;
use crate::kernels::{Dtype, PackedB, QdwWeights};
use crate::pad::{mat_pad, vec_pad};
pub use crate::plan::{block_scratch_len, block_scratch_len_for};
#[doc(hidden)]
pub use crate::plan::{
    block_scratch_split, default_strip, grouped_mlp, grouped_scratch_len, hidden_chunk,
    mlp_scratch_len, HIDDEN_CHUNK, MLP_GROUPS, STRIP_BUDGET,
};

/// Element counts of the two weight streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct WeightsLen {
    /// f32 vector stream length, in floats.
    pub vecs: usize,
    /// Matrix stream length, in elements.
    pub mats: usize,
}

impl WeightsLen {
    /// Component-wise sum.
    pub const fn add(self, o: WeightsLen) -> WeightsLen {
        WeightsLen {
            vecs: self.vecs + o.vecs,
            mats: self.mats + o.mats,
        }
    }

    /// One GEMM weight: its panels and its column scales.
    pub const fn gemm(k: usize, n: usize) -> WeightsLen {
        WeightsLen {
            vecs: vec_pad(n),
            mats: mat_pad(PackedB::packed_len(k, n)),
        }
    }

    /// `count` vectors of `n` floats.
    pub const fn vecs(count: usize, n: usize) -> WeightsLen {
        WeightsLen {
            vecs: count * vec_pad(n),
            mats: 0,
        }
    }

    /// Bytes when the matrices are stored as `dtype`.
    pub const fn bytes(self, dtype: Dtype) -> usize {
        self.vecs * 4 + self.mats * dtype.size()
    }
}

/// One block of a stage: a QuadraBlock with kernel `kernel` and expansion `expansion`, or an
/// identity (`kernel == 0`), which keeps its index and has no weights.
///
/// `repr(C)` of two bytes, so a model file's block table can be viewed in place.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockSpec {
    /// QDW kernel size (3, 5 or 7), or 0 for an identity block.
    pub kernel: u8,
    /// Hidden expansion E of the channel MLP (hidden = E·C), 0 for an identity block.
    pub expansion: u8,
}

impl BlockSpec {
    /// The identity (skip) block.
    pub const IDENTITY: BlockSpec = BlockSpec {
        kernel: 0,
        expansion: 0,
    };

    /// A QuadraBlock with kernel `kernel` and expansion `expansion`.
    pub const fn quadra(kernel: u8, expansion: u8) -> BlockSpec {
        BlockSpec { kernel, expansion }
    }

    /// Is this an identity block?
    pub const fn is_identity(self) -> bool {
        self.kernel == 0 && self.expansion == 0
    }

    const fn validate(self) -> Result<(), Error> {
        if self.is_identity() {
            return Ok(());
        }
        if !matches!(self.kernel, 3 | 5 | 7) {
            return Err(Error::Arch("block kernel must be 3, 5 or 7"));
        }
        if self.expansion < 1 || self.expansion > 8 {
            return Err(Error::Arch("block expansion must be between 1 and 8"));
        }
        Ok(())
    }

    /// Weight stream lengths of one block at width `c`.
    pub const fn weights_len(self, c: usize) -> WeightsLen {
        if self.is_identity() {
            return WeightsLen { vecs: 0, mats: 0 };
        }
        let (k, e) = (self.kernel as usize, self.expansion as usize);
        // gamma1, ln1 w/b; qdw taps + scales + bias; gamma2, ln2 w/b; pw1 + bias; pw2 + bias
        WeightsLen::vecs(3, c)
            .add(WeightsLen {
                vecs: 2 * vec_pad(3 * c),
                mats: mat_pad(QdwWeights::taps_len(k, c)),
            })
            .add(WeightsLen::vecs(3, c))
            .add(WeightsLen::gemm(c, e * c))
            .add(WeightsLen::vecs(1, e * c))
            .add(WeightsLen::gemm(e * c, c))
            .add(WeightsLen::vecs(1, c))
    }

    /// Trainable parameters of one block at width `c` (as PyTorch counts them).
    pub const fn params(self, c: usize) -> usize {
        if self.is_identity() {
            return 0;
        }
        let (k, e) = (self.kernel as usize, self.expansion as usize);
        2 * c + 4 * c + 3 * (c * k * k + c) + (e * c * c + e * c) + (e * c * c + c)
    }

    /// Multiply-adds of one block on an `h x w` map of width `c` (convs and linears).
    pub const fn macs(self, h: usize, w: usize, c: usize) -> u64 {
        if self.is_identity() {
            return 0;
        }
        let (k, e) = (self.kernel as u64, self.expansion as u64);
        let (hw, c) = ((h * w) as u64, c as u64);
        hw * (3 * k * k * c + 2 * e * c * c)
    }
}

/// Largest input channel count.
pub const MAX_IN_CHANS: usize = 1024;
/// Largest class count.
pub const MAX_CLASSES: usize = 1 << 20;
/// Largest stage width.
pub const MAX_DIM: usize = 1 << 14;
/// Most blocks in a network.
pub const MAX_BLOCKS: usize = 4096;
/// Largest input height or width.
pub const MAX_SIDE: usize = 1 << 15;

/// One stage: its width and its blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage<'a> {
    /// Channels of the stage.
    pub dim: usize,
    /// The blocks, in order.
    pub blocks: &'a [BlockSpec],
}

/// A whole QuadraNet. Everything derived from it is a `const fn`, so firmware sizes its
/// `static`s at compile time:
///
/// ```
/// use quadra_core::arch::presets;
/// const ARCH: quadra_core::Arch<'static> = presets::quadranet36(64); // QuadraNet36-T
/// const ARENA_FLOATS: usize = ARCH.arena_len(224, 224);
/// assert!(ARENA_FLOATS * 4 < 2 << 20); // under 2 MiB for a 224x224 image
/// assert_eq!(ARCH.macs(224, 224) / 100_000_000, 41); // 4.1 G multiply-adds
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arch<'a> {
    /// Input channels (3 for RGB).
    pub in_chans: usize,
    /// Classes of the head.
    pub num_classes: usize,
    /// The four stages.
    pub stages: [Stage<'a>; 4],
}

/// Where everything lives in the arena for one input size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// `(H, W)` of each stage's activation.
    pub hw: [(usize, usize); 4],
    /// Offset of each stage's activation in the activation region.
    pub offsets: [usize; 4],
    /// Floats of the activation region. On one thread all stages share it (blocks run in
    /// place, downsamples write each output row behind the rows still to be read); split
    /// into bands, stages alternate between two regions so downsamples run in bands too.
    pub act_len: usize,
    /// Floats of scratch each band of a split layer gets.
    pub band_scratch: usize,
    /// Floats of scratch after the activation region (the largest any layer needs).
    pub scratch_len: usize,
}

impl Plan {
    /// Total arena floats.
    pub const fn arena_len(&self) -> usize {
        self.act_len + self.scratch_len
    }
}

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

impl<'a> Arch<'a> {
    /// Checks the architecture; the error says what is wrong. Sizes are bounded
    /// ([`MAX_IN_CHANS`], [`MAX_CLASSES`], [`MAX_DIM`], [`MAX_BLOCKS`]) so that every size
    /// derived from them fits a 64-bit `usize`.
    pub const fn validate(&self) -> Result<(), Error> {
        if self.in_chans == 0 || self.in_chans > MAX_IN_CHANS {
            return Err(Error::Arch("in_chans must be between 1 and 1024"));
        }
        if self.num_classes == 0 || self.num_classes > MAX_CLASSES {
            return Err(Error::Arch("num_classes must be between 1 and 1048576"));
        }
        let mut total = 0;
        let mut s = 0;
        while s < 4 {
            if self.stages[s].dim == 0 || self.stages[s].dim > MAX_DIM {
                return Err(Error::Arch("every stage dim must be between 1 and 16384"));
            }
            total += self.stages[s].blocks.len();
            if total > MAX_BLOCKS {
                return Err(Error::Arch("a network may have at most 4096 blocks"));
            }
            let mut b = 0;
            while b < self.stages[s].blocks.len() {
                if let Err(e) = self.stages[s].blocks[b].validate() {
                    return Err(e);
                }
                b += 1;
            }
            s += 1;
        }
        Ok(())
    }

    /// Quadratic (non-identity) blocks in the whole network.
    pub const fn quadratic_blocks(&self) -> usize {
        let mut n = 0;
        let mut s = 0;
        while s < 4 {
            let mut b = 0;
            while b < self.stages[s].blocks.len() {
                if !self.stages[s].blocks[b].is_identity() {
                    n += 1;
                }
                b += 1;
            }
            s += 1;
        }
        n
    }

    /// `dims[i]`.
    pub const fn dim(&self, i: usize) -> usize {
        self.stages[i].dim
    }

    /// Spatial size of each stage for an `h x w` input (stem /4, then /2 per downsample,
    /// flooring like PyTorch's strided convs).
    pub const fn stage_hw(h: usize, w: usize) -> [(usize, usize); 4] {
        let (h0, w0) = (h / 4, w / 4);
        [
            (h0, w0),
            (h0 / 2, w0 / 2),
            (h0 / 4, w0 / 4),
            (h0 / 8, w0 / 8),
        ]
    }

    /// Weight stream lengths of the whole network.
    pub const fn weights_len(&self) -> WeightsLen {
        let c0 = self.dim(0);
        // stem conv, bias, LN w/b
        let mut n = WeightsLen::gemm(16 * self.in_chans, c0).add(WeightsLen::vecs(3, c0));
        let mut s = 0;
        while s < 4 {
            let d = self.dim(s);
            if s > 0 {
                let dp = self.dim(s - 1);
                // LN w/b, conv, bias
                n = n
                    .add(WeightsLen::vecs(2, dp))
                    .add(WeightsLen::gemm(4 * dp, d))
                    .add(WeightsLen::vecs(1, d));
            }
            let mut b = 0;
            while b < self.stages[s].blocks.len() {
                n = n.add(self.stages[s].blocks[b].weights_len(d));
                b += 1;
            }
            s += 1;
        }
        let (d3, nc) = (self.dim(3), self.num_classes);
        n.add(WeightsLen::vecs(2, d3))
            .add(WeightsLen::gemm(d3, nc))
            .add(WeightsLen::vecs(1, nc))
    }

    /// Trainable parameters, as PyTorch counts them.
    pub const fn params(&self) -> usize {
        let c0 = self.dim(0);
        let mut n = 16 * self.in_chans * c0 + 3 * c0;
        let mut s = 0;
        while s < 4 {
            let d = self.dim(s);
            if s > 0 {
                let dp = self.dim(s - 1);
                n += 2 * dp + 4 * dp * d + d;
            }
            let mut b = 0;
            while b < self.stages[s].blocks.len() {
                n += self.stages[s].blocks[b].params(d);
                b += 1;
            }
            s += 1;
        }
        let d3 = self.dim(3);
        n + 2 * d3 + d3 * self.num_classes + self.num_classes
    }

    /// Multiply-adds of one forward pass on an `h x w` image (a multiply-add is 2 FLOPs).
    pub const fn macs(&self, h: usize, w: usize) -> u64 {
        let hw = Self::stage_hw(h, w);
        let mut n = (hw[0].0 * hw[0].1 * 16 * self.in_chans * self.dim(0)) as u64;
        let mut s = 0;
        while s < 4 {
            let (sh, sw) = hw[s];
            let d = self.dim(s);
            if s > 0 {
                n += (sh * sw * 4 * self.dim(s - 1) * d) as u64;
            }
            let mut b = 0;
            while b < self.stages[s].blocks.len() {
                n += self.stages[s].blocks[b].macs(sh, sw, d);
                b += 1;
            }
            s += 1;
        }
        n + (self.dim(3) * self.num_classes) as u64
    }

    /// The arena plan for an `h x w` input run on one thread.
    pub const fn plan(&self, h: usize, w: usize) -> Plan {
        self.plan_with(h, w, 1)
    }

    /// The arena plan for an `h x w` input whose layers are split into `bands` bands run
    /// in parallel (each band has its own scratch).
    pub const fn plan_with(&self, h: usize, w: usize, bands: usize) -> Plan {
        self.plan_for(h, w, bands, Dtype::F32)
    }

    /// [`Arch::plan_with`] for weights stored as `dtype`: a [`Dtype::W8A8`] model's blocks
    /// also need their int8 activation rows ([`block_scratch_len_for`]).
    pub const fn plan_for(&self, h: usize, w: usize, bands: usize, dtype: Dtype) -> Plan {
        let q8 = matches!(dtype, Dtype::W8A8);
        let bands = if bands == 0 { 1 } else { bands };
        let hw = Self::stage_hw(h, w);
        // One thread: all stages share one region. Offsets, last stage first: a downsample
        // writes output row y before reading input rows 2y+2.., so the input must start
        // far enough behind when the output row is longer than two input rows. Several
        // bands: stages alternate between two regions, so downsamples can run in bands.
        let mut offsets = [0usize; 4];
        if bands > 1 {
            let a = vec_pad(max(
                hw[0].0 * hw[0].1 * self.dim(0),
                hw[2].0 * hw[2].1 * self.dim(2),
            ));
            offsets = [0, a, 0, a];
        } else {
            let mut i = 3;
            while i > 0 {
                let row_out = hw[i].1 * self.dim(i);
                let row_in = hw[i - 1].1 * self.dim(i - 1);
                let need = if row_out > 2 * row_in {
                    hw[i].0 * (row_out - 2 * row_in)
                } else {
                    0
                };
                offsets[i - 1] = offsets[i] + vec_pad(need);
                i -= 1;
            }
        }
        let mut act_len = 0;
        // Per band: a stem patch row, and each block's band scratch.
        let mut band = hw[0].1 * 16 * self.in_chans;
        // Serial layers: the downsamples' patch rows and the head.
        let mut serial = 2 * self.dim(3);
        // Grouped-MLP blocks: their band chunks plus the buffers the groups share.
        let mut grouped_total = 0;
        let mut s = 0;
        while s < 4 {
            let (sh, sw) = hw[s];
            let d = self.dim(s);
            act_len = max(act_len, offsets[s] + sh * sw * d);
            if s > 0 {
                // A downsample's patch row: per band when the stages alternate regions.
                let patch = sw * 4 * self.dim(s - 1);
                if bands > 1 {
                    band = max(band, patch);
                } else {
                    serial = max(serial, patch);
                }
            }
            let mut b = 0;
            while b < self.stages[s].blocks.len() {
                let blk = self.stages[s].blocks[b];
                if !blk.is_identity() {
                    let (k, e) = (blk.kernel as usize, blk.expansion as usize);
                    let (per, shared) = block_scratch_split(sh, sw, d, k, e, bands, q8);
                    if shared > 0 {
                        // Its own band chunks, then the shared buffers.
                        grouped_total = max(grouped_total, bands * per + shared);
                    } else {
                        band = max(band, per);
                    }
                }
                b += 1;
            }
            s += 1;
        }
        // Every region starts 64-byte aligned when the arena does (unaligned vector loads
        // that straddle cache lines cost the QDW kernel a third of its speed).
        let band = vec_pad(band);
        Plan {
            hw,
            offsets,
            act_len: vec_pad(act_len),
            band_scratch: band,
            scratch_len: max(max(serial, bands * band), grouped_total),
        }
    }

    /// Arena floats for an `h x w` input: what [`crate::Model::forward`] needs.
    pub const fn arena_len(&self, h: usize, w: usize) -> usize {
        self.plan(h, w).arena_len()
    }

    /// Arena floats for an `h x w` input run `bands` bands wide
    /// ([`crate::Model::forward_with`]).
    pub const fn arena_len_with(&self, h: usize, w: usize, bands: usize) -> usize {
        self.plan_with(h, w, bands).arena_len()
    }

    /// Arena floats for weights stored as `dtype` ([`Arch::plan_for`]); the same as
    /// [`Arch::arena_len_with`] except for [`Dtype::W8A8`].
    pub const fn arena_len_for(&self, h: usize, w: usize, bands: usize, dtype: Dtype) -> usize {
        self.plan_for(h, w, bands, dtype).arena_len()
    }

    /// Floats of the largest single activation tensor for an `h x w` input.
    pub const fn largest_activation(&self, h: usize, w: usize) -> usize {
        let hw = Self::stage_hw(h, w);
        let mut m = 0;
        let mut s = 0;
        while s < 4 {
            m = max(m, hw[s].0 * hw[s].1 * self.dim(s));
            s += 1;
        }
        m
    }
}

/// The named models of the paper, 3 input channels and 1000 classes, kernel 7, E = 4.
pub mod presets {
    use super::{Arch, BlockSpec, Stage};

    const B: BlockSpec = BlockSpec::quadra(7, 4);
    const D2: [BlockSpec; 2] = [B; 2];
    const D3: [BlockSpec; 3] = [B; 3];
    const D18: [BlockSpec; 18] = [B; 18];
    const D27: [BlockSpec; 27] = [B; 27];

    const fn net(c: usize, blocks: [&'static [BlockSpec]; 4]) -> Arch<'static> {
        Arch {
            in_chans: 3,
            num_classes: 1000,
            stages: [
                Stage {
                    dim: c,
                    blocks: blocks[0],
                },
                Stage {
                    dim: 2 * c,
                    blocks: blocks[1],
                },
                Stage {
                    dim: 4 * c,
                    blocks: blocks[2],
                },
                Stage {
                    dim: 8 * c,
                    blocks: blocks[3],
                },
            ],
        }
    }

    /// Depths [2, 3, 18, 2] with base width `c`.
    pub const fn quadranet25(c: usize) -> Arch<'static> {
        net(c, [&D2, &D3, &D18, &D2])
    }

    /// Depths [3, 3, 27, 3] with base width `c`.
    pub const fn quadranet36(c: usize) -> Arch<'static> {
        net(c, [&D3, &D3, &D27, &D3])
    }

    /// Size names of the paper and their base widths.
    pub const SIZES: [(&str, usize); 5] =
        [("xxs", 16), ("xs", 32), ("t", 64), ("s", 96), ("b", 128)];

    /// A preset by name: `quadranet25-xxs` … `quadranet36-b`.
    pub fn by_name(name: &str) -> Option<Arch<'static>> {
        let (family, size) = name.split_once('-')?;
        let c = SIZES.iter().find(|(n, _)| *n == size)?.1;
        match family {
            "quadranet25" => Some(quadranet25(c)),
            "quadranet36" => Some(quadranet36(c)),
            _ => None,
        }
    }
}
