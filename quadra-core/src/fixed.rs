//! The static-shaped layers: a QDW conv and a QuadraBlock whose channels, kernel and
//! expansion are const generics, so every length (activation, scratch, weights) is checked
//! at compile time. They run the same scheduler as the networks (`block`).

use crate::arch::BlockSpec;
use crate::block::{block_forward, qdw_forward, qdw_scratch_len, BlockDims, BlockWeights};
use crate::error::Error;
use crate::isa::Kernels;
use crate::kernels::{MatData, QdwWeights};
use crate::plan::block_scratch_len;
use crate::weights::{Weights, WeightsLen};

/// A quadratic depthwise conv whose channel count `C` and kernel `K` are part of its type.
#[derive(Clone, Copy, Debug)]
pub struct QuadraDwConv<'w, const C: usize, const K: usize> {
    wts: QdwWeights<'w>,
}

impl<'w, const C: usize, const K: usize> QuadraDwConv<'w, C, K> {
    /// Packed taps length.
    pub const TAPS: usize = QdwWeights::taps_len(K, C);

    /// Wraps packed taps, scales and biases (see `kernels::QdwWeights`); `K` must be 3, 5 or 7
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
    /// `scratch_len::<W>()`, checked at compile time. Every length is fixed by the types,
    /// so no error is expected; any the kernels report is returned, not dropped.
    pub fn forward<const H: usize, const W: usize, const N: usize>(
        &self,
        kern: Kernels,
        x: &mut [[[f32; C]; W]; H],
        scratch: &mut [f32; N],
    ) -> Result<(), Error> {
        const { assert!(N >= qdw_scratch_len(W, C, K), "QDW scratch too small") };
        let x = x.as_flattened_mut().as_flattened_mut();
        qdw_forward(kern, H, W, &self.wts, x, scratch)
    }
}

/// A QuadraBlock whose width `C`, kernel `K` and expansion `E` are part of its type.
#[derive(Clone, Copy, Debug)]
pub struct QuadraBlock<'w, const C: usize, const K: usize, const E: usize> {
    wts: BlockWeights<'w>,
}

impl<'w, const C: usize, const K: usize, const E: usize> QuadraBlock<'w, C, K, E> {
    /// Stream lengths of this block's weights.
    pub const WEIGHTS: WeightsLen = BlockSpec::quadra(K as u8, E as u8).weights_len(C);

    /// Views block weights ([`Self::WEIGHTS`] in the packed model order).
    /// w8a8 weights are refused: their int8 activation rows need more scratch than
    /// [`Self::scratch_len`] gives (run them through [`crate::Model`]).
    pub fn new(weights: Weights<'w>) -> Result<Self, Error> {
        const { assert!(K == 3 || K == 5 || K == 7, "QDW kernel must be 3, 5 or 7") };
        const { assert!(E >= 1 && E <= 8, "expansion must be 1..=8") };
        let wts = BlockWeights::from_weights(C, K, E, weights)?;
        if wts.q8() {
            return Err(Error::Arch(
                "QuadraBlock runs f32, f16 and int8 weights; run w8a8 weights through Model",
            ));
        }
        Ok(QuadraBlock { wts })
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
    ) -> Result<(), Error> {
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
        // Shapes are fixed by the types and checked above: no error is expected, and any
        // the kernels report is returned, not dropped.
        block_forward(kern, d, S, &self.wts, x, scratch)
    }
}
