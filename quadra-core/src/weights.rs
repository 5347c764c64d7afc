//! How a network's weights are laid out: two streams, read in the same order as the
//! state_dict is visited ([`crate::net::visit_tensors`]).
//!
//! * **vecs** (always f32): biases, norm weights, layer scales, and the per-output-channel
//!   scales of every matrix (1 unless the matrices are int8).
//! * **mats** (f32, f16 or int8): GEMM weight panels and QDW taps.
//!
//! Every tensor starts 64-byte aligned within its stream: vectors are padded to
//! [`VEC_ALIGN`] floats, matrices to [`MAT_ALIGN`] elements.

use crate::arch::Arch;
pub use crate::arch::WeightsLen;
use crate::error::{Buffer, Error};
pub use crate::kernels::FloatBlocks;
use crate::kernels::{MatData, PackedB, QdwWeights};
pub use crate::pad::{mat_pad, vec_pad, MAT_ALIGN, VEC_ALIGN};

/// A network's weights: the f32 vector stream and the matrix stream.
#[derive(Clone, Copy, Debug)]
pub struct Weights<'a> {
    /// Vector stream.
    pub vecs: &'a [f32],
    /// Matrix stream.
    pub mats: MatData<'a>,
}

impl Weights<'_> {
    /// Stream lengths.
    pub const fn len(&self) -> WeightsLen {
        WeightsLen {
            vecs: self.vecs.len(),
            mats: self.mats.len(),
        }
    }
}

/// The parts of [`FloatBlocks`] that depend on the architecture and the stream layout.
impl FloatBlocks<'_> {
    /// f32 floats one block of width `c`, kernel `k` and expansion `e` holds in the stream.
    pub const fn block_len(c: usize, k: usize, e: usize) -> usize {
        mat_pad(QdwWeights::taps_len(k, c))
            + vec_pad(3 * c)
            + WeightsLen::gemm(c, e * c).mats
            + vec_pad(e * c)
            + WeightsLen::gemm(e * c, c).mats
            + vec_pad(c)
    }

    /// Bitmap bytes for `arch`: one bit for the layers and one per quadratic block.
    pub const fn flags_len(arch: &Arch<'_>) -> usize {
        (arch.quadratic_blocks() + 1).div_ceil(8)
    }

    /// Length of the f32 stream the units `flags` marks need in `arch`.
    pub fn stream_len(arch: &Arch<'_>, flags: &[u8]) -> usize {
        let f = FloatBlocks { flags, mats: &[] };
        let mut want = 0usize;
        if f.layers_float() {
            let layer = |k: usize, n: usize| WeightsLen::gemm(k, n).mats + vec_pad(n);
            want += layer(16 * arch.in_chans, arch.dim(0))
                + layer(arch.dim(3), arch.num_classes)
                + (1..4)
                    .map(|s| layer(4 * arch.dim(s - 1), arch.dim(s)))
                    .sum::<usize>();
        }
        let mut i = 0;
        for stage in &arch.stages {
            for b in stage.blocks.iter().filter(|b| !b.is_identity()) {
                if f.is_float(i) {
                    want += Self::block_len(stage.dim, b.kernel as usize, b.expansion as usize);
                }
                i += 1;
            }
        }
        want
    }

    /// Checks the bitmap against `arch` ([`FloatBlocks::flags_len`] bytes, or none; no bit
    /// past the last block) and the f32 stream's length against the flagged units'.
    pub fn check(&self, arch: &Arch<'_>) -> Result<(), Error> {
        let units = arch.quadratic_blocks() + 1;
        if !self.flags.is_empty() && self.flags.len() != Self::flags_len(arch) {
            return Err(Error::Format(
                "float-block bitmap length does not match the architecture",
            ));
        }
        if (units..8 * self.flags.len()).any(|u| self.bit(u)) {
            return Err(Error::Format(
                "float-block bitmap flags a block that does not exist",
            ));
        }
        let want = Self::stream_len(arch, self.flags);
        if want != self.mats.len() {
            return Err(Error::Length {
                buffer: Buffer::Weights,
                expected: want,
                found: self.mats.len(),
            });
        }
        Ok(())
    }
}

/// Reads tensors from both streams, in visit order.
pub(crate) struct Cursor<'a> {
    vecs: &'a [f32],
    mats: MatData<'a>,
    /// Mixed precision: which blocks are f32, and what is left of their f32 stream.
    float: FloatBlocks<'a>,
    /// Index of the next quadratic block, and whether the current one is f32.
    block: usize,
    in_float: bool,
}

fn short(expected: usize, found: usize) -> Error {
    Error::Length {
        buffer: Buffer::Weights,
        expected,
        found,
    }
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(w: Weights<'a>) -> Self {
        Cursor {
            vecs: w.vecs,
            mats: w.mats,
            float: match w.mats {
                MatData::W8A8(_, f) => f,
                _ => FloatBlocks::NONE,
            },
            block: 0,
            in_float: false,
        }
    }

    /// Starts the next quadratic block (whose pointwise GEMMs may be f32 in a mixed w8a8
    /// model).
    pub(crate) fn begin_block(&mut self) {
        self.in_float = self.float.is_float(self.block);
        self.block += 1;
    }

    /// `n` floats of the f32 stream of float blocks.
    fn float_take(&mut self, n: usize) -> Result<&'a [f32], Error> {
        let have = self.float.mats.len();
        if n > have {
            return Err(short(n, have));
        }
        let (head, rest) = self.float.mats.split_at(n);
        self.float.mats = rest;
        Ok(head)
    }

    pub(crate) fn vec(&mut self, n: usize) -> Result<&'a [f32], Error> {
        let padded = vec_pad(n);
        if padded > self.vecs.len() {
            return Err(short(padded, self.vecs.len()));
        }
        let (head, rest) = self.vecs.split_at(padded);
        self.vecs = rest;
        Ok(&head[..n])
    }

    fn mat(&mut self, n: usize) -> Result<MatData<'a>, Error> {
        let padded = mat_pad(n);
        let len = self.mats.len();
        let head = self.mats.sub(0, n).ok_or(short(padded, len))?;
        self.mats = self
            .mats
            .sub(padded, len.saturating_sub(padded))
            .ok_or(short(padded, len))?;
        Ok(head)
    }

    pub(crate) fn gemm(&mut self, k: usize, n: usize) -> Result<PackedB<'a>, Error> {
        let data = self.mat(PackedB::packed_len(k, n))?;
        PackedB::new(data, self.vec(n)?, k, n)
    }

    /// The stem, a downsample or the head conv: as [`Cursor::gemm`], or its f32 weights
    /// when a mixed w8a8 model keeps those layers in f32.
    pub(crate) fn layer(&mut self, k: usize, n: usize) -> Result<PackedB<'a>, Error> {
        if !self.float.layers_float() {
            return self.gemm(k, n);
        }
        self.mat(PackedB::packed_len(k, n))?;
        self.vec(n)?;
        self.float_gemm(k, n)
    }

    /// `k x n` f32 panels and their scales from the float stream.
    fn float_gemm(&mut self, k: usize, n: usize) -> Result<PackedB<'a>, Error> {
        let panels = self.float_take(mat_pad(PackedB::packed_len(k, n)))?;
        let scales = self.float_take(vec_pad(n))?;
        PackedB::new(
            MatData::F32(&panels[..PackedB::packed_len(k, n)]),
            &scales[..n],
            k,
            n,
        )
    }

    /// A block's pointwise GEMM: in a w8a8 stream with `k % 4 == 0`, computed in int8
    /// from the dot-product layout; otherwise as [`Cursor::gemm`].
    pub(crate) fn pointwise(&mut self, k: usize, n: usize) -> Result<PackedB<'a>, Error> {
        if self.in_float {
            // Past the unused int8 copy and its scales, then the f32 weights.
            self.mat(PackedB::packed_len(k, n))?;
            self.vec(n)?;
            return self.float_gemm(k, n);
        }
        if !(matches!(self.mats, MatData::W8A8(..)) && k.is_multiple_of(4)) {
            return self.gemm(k, n);
        }
        match self.mat(PackedB::packed_len(k, n))? {
            MatData::W8A8(data, _) => PackedB::new_dot(data, self.vec(n)?, k, n),
            // A view of a w8a8 stream is w8a8: not reached.
            other => PackedB::new(other, self.vec(n)?, k, n),
        }
    }

    pub(crate) fn qdw(&mut self, k: usize, c: usize) -> Result<QdwWeights<'a>, Error> {
        let mut taps = self.mat(QdwWeights::taps_len(k, c))?;
        let mut scales = self.vec(3 * c)?;
        if self.in_float {
            // The f32 taps and their scales instead of the unused int8 copy.
            let t = self.float_take(mat_pad(QdwWeights::taps_len(k, c)))?;
            taps = MatData::F32(&t[..QdwWeights::taps_len(k, c)]);
            scales = &self.float_take(vec_pad(3 * c))?[..3 * c];
        }
        QdwWeights::new(k, c, taps, scales, self.vec(3 * c)?)
    }

    pub(crate) fn remaining(&self) -> WeightsLen {
        WeightsLen {
            vecs: self.vecs.len(),
            mats: self.mats.len(),
        }
    }
}
