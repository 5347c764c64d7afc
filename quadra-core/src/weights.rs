//! How a network's weights are laid out: two streams, read in the same order as the
//! state_dict is visited ([`crate::net::visit_tensors`]).
//!
//! * **vecs** (always f32): biases, norm weights, layer scales, and the per-output-channel
//!   scales of every matrix (1 unless the matrices are int8).
//! * **mats** (f32, f16 or int8): GEMM weight panels and QDW taps.
//!
//! Every tensor starts 64-byte aligned within its stream: vectors are padded to
//! [`VEC_ALIGN`] floats, matrices to [`MAT_ALIGN`] elements.

use crate::error::{Buffer, Error};
use crate::kernels::{Dtype, MatData, PackedB, QdwWeights};

/// Vector padding, in floats (64 bytes).
pub const VEC_ALIGN: usize = 16;
/// Matrix padding, in elements (at least 64 bytes for every dtype).
pub const MAT_ALIGN: usize = 64;

/// `n` rounded up to [`VEC_ALIGN`].
pub const fn vec_pad(n: usize) -> usize {
    n.div_ceil(VEC_ALIGN) * VEC_ALIGN
}

/// `n` rounded up to [`MAT_ALIGN`].
pub const fn mat_pad(n: usize) -> usize {
    n.div_ceil(MAT_ALIGN) * MAT_ALIGN
}

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

/// Reads tensors from both streams, in visit order.
pub(crate) struct Cursor<'a> {
    vecs: &'a [f32],
    mats: MatData<'a>,
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
        }
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

    /// A block's pointwise GEMM: in a w8a8 stream with `k % 4 == 0`, computed in int8
    /// from the dot-product layout; otherwise as [`Cursor::gemm`].
    pub(crate) fn pointwise(&mut self, k: usize, n: usize) -> Result<PackedB<'a>, Error> {
        if !(matches!(self.mats, MatData::W8A8(_)) && k.is_multiple_of(4)) {
            return self.gemm(k, n);
        }
        match self.mat(PackedB::packed_len(k, n))? {
            MatData::W8A8(data) => PackedB::new_dot(data, self.vec(n)?, k, n),
            // A view of a w8a8 stream is w8a8: not reached.
            other => PackedB::new(other, self.vec(n)?, k, n),
        }
    }

    pub(crate) fn qdw(&mut self, k: usize, c: usize) -> Result<QdwWeights<'a>, Error> {
        let taps = self.mat(QdwWeights::taps_len(k, c))?;
        let scales = self.vec(3 * c)?;
        QdwWeights::new(k, c, taps, scales, self.vec(3 * c)?)
    }

    pub(crate) fn remaining(&self) -> WeightsLen {
        WeightsLen {
            vecs: self.vecs.len(),
            mats: self.mats.len(),
        }
    }
}
