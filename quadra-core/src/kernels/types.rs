//! The data the kernels take: weight storage types ([`Dtype`], [`MatData`]), packed GEMM
//! weights ([`PackedB`]) and QDW taps ([`QdwWeights`]), epilogues ([`Epilogue`]) and
//! strided matrix views ([`MatRef`], [`MatMut`]). The kernels and their dispatch are in
//! the parent module.

use super::*;

/// Storage type of the weight matrices (GEMM panels and QDW taps). Vectors (biases, norms,
/// layer scales, quantisation scales) are always f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// 32-bit float.
    F32,
    /// IEEE half precision (stored as its bits).
    F16,
    /// Symmetric int8 with one f32 scale per output channel, widened to f32 in the
    /// kernels (weight-only quantisation).
    I8,
    /// int8 weights as [`Dtype::I8`], and the pointwise GEMMs of every block with
    /// `C % 4 == 0` computed in int8: activations quantised per pixel, int32 sums
    /// (`kernels::q8`). Those GEMMs' panels are stored in the dot-product layout
    /// (`PackedB::dot_index`).
    W8A8,
}

impl Dtype {
    /// Bytes per element.
    #[inline]
    pub const fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 => 2,
            Dtype::I8 | Dtype::W8A8 => 1,
        }
    }

    /// Lower-case name: `f32`, `f16`, `int8`, `w8a8`.
    #[inline]
    pub const fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::I8 => "int8",
            Dtype::W8A8 => "w8a8",
        }
    }

    /// Every dtype, in the order of [`Dtype::name`]'s list.
    pub const ALL: [Dtype; 4] = [Dtype::F32, Dtype::F16, Dtype::I8, Dtype::W8A8];

    /// Parses [`Dtype::name`].
    pub fn from_name(s: &str) -> Option<Dtype> {
        Dtype::ALL.into_iter().find(|d| d.name() == s)
    }
}

/// Weight matrix elements in their storage type.
#[derive(Clone, Copy, Debug)]
pub enum MatData<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// f16 bit patterns.
    F16(&'a [u16]),
    /// int8 values (to be multiplied by the per-channel scale).
    I8(&'a [i8]),
    /// A whole w8a8 matrix stream ([`Dtype::W8A8`]): int8 values, the block pointwise
    /// panels in the dot-product layout, and the blocks kept in f32 (mixed precision, see
    /// [`FloatBlocks`]). Views of single tensors cut from it are [`MatData::I8`] (or a
    /// dot-layout `PackedB`).
    W8A8(&'a [i8], FloatBlocks<'a>),
}

impl<'a> MatData<'a> {
    /// Number of elements.
    #[inline]
    pub const fn len(&self) -> usize {
        match self {
            MatData::F32(v) => v.len(),
            MatData::F16(v) => v.len(),
            MatData::I8(v) | MatData::W8A8(v, _) => v.len(),
        }
    }

    /// Is it empty?
    #[inline]
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Storage type.
    #[inline]
    pub const fn dtype(&self) -> Dtype {
        match self {
            MatData::F32(_) => Dtype::F32,
            MatData::F16(_) => Dtype::F16,
            MatData::I8(_) => Dtype::I8,
            MatData::W8A8(..) => Dtype::W8A8,
        }
    }

    /// Element `i` as f32 (before any scale).
    #[inline]
    pub fn get(&self, i: usize) -> f32 {
        match self {
            MatData::F32(v) => v[i],
            MatData::F16(v) => half::f16::from_bits(v[i]).to_f32(),
            MatData::I8(v) | MatData::W8A8(v, _) => v[i] as f32,
        }
    }

    /// Elements `start..start + len`, or `None` if out of range.
    #[inline]
    pub fn sub(&self, start: usize, len: usize) -> Option<MatData<'a>> {
        let r = start..start.checked_add(len)?;
        Some(match self {
            MatData::F32(v) => MatData::F32(v.get(r)?),
            MatData::F16(v) => MatData::F16(v.get(r)?),
            MatData::I8(v) => MatData::I8(v.get(r)?),
            MatData::W8A8(v, f) => MatData::W8A8(v.get(r)?, *f),
        })
    }
}

/// Weights of a GEMM, `B[k][n]`, packed in panels of [`PANEL`] columns: panel `p` holds
/// rows `0..k` of columns `16p..16p+16` contiguously (zero beyond `n`). Column `j` is
/// multiplied by `scales[j]` (1 for f32 and f16 storage).
///
/// An int8 matrix computed in int8 ([`q8::gemm_q8`]) keeps the same panels in the
/// *dot-product layout* instead: within a panel, four consecutive `kk` of one column sit
/// side by side (`k % 4 == 0`; see [`PackedB::dot_index`]), the operand order of
/// `vpdpbusd` and `sdot`. Same length, same panel offsets.
#[derive(Clone, Copy, Debug)]
pub struct PackedB<'a> {
    pub(super) data: MatData<'a>,
    pub(super) scales: &'a [f32],
    pub(super) k: usize,
    pub(super) n: usize,
    /// Distance between panels (`K·16` of the matrix this view was cut from).
    pub(super) pstride: usize,
    /// Dot-product layout (int8 only).
    pub(super) dot: bool,
}

impl<'a> PackedB<'a> {
    /// Length of the packed form of a `k x n` matrix.
    #[inline]
    pub const fn packed_len(k: usize, n: usize) -> usize {
        k * n.div_ceil(PANEL) * PANEL
    }

    /// Wraps already packed data and its per-column scales.
    pub fn new(data: MatData<'a>, scales: &'a [f32], k: usize, n: usize) -> Result<Self, Error> {
        check_weights_exact(&[(Self::packed_len(k, n), data.len()), (n, scales.len())])?;
        let data = match data {
            MatData::W8A8(d, _) => MatData::I8(d),
            d => d,
        };
        Ok(PackedB {
            data,
            scales,
            k,
            n,
            pstride: k * PANEL,
            dot: false,
        })
    }

    /// Wraps int8 panels packed in the dot-product layout ([`PackedB::dot_index`]), for
    /// [`q8::gemm_q8`]. `k` must be a multiple of 4.
    pub fn new_dot(data: &'a [i8], scales: &'a [f32], k: usize, n: usize) -> Result<Self, Error> {
        if !k.is_multiple_of(4) {
            return Err(Error::Arch(
                "an int8-compute GEMM needs an inner dimension that is a multiple of 4",
            ));
        }
        Ok(PackedB {
            dot: true,
            ..Self::new(MatData::I8(data), scales, k, n)?
        })
    }

    /// Offset of `B[kk][j]` in the dot-product layout of a matrix with inner dimension
    /// `k` (a multiple of 4): `(j/16)·16k + (kk/4)·64 + (j%16)·4 + kk%4`.
    #[inline]
    pub const fn dot_index(k: usize, kk: usize, j: usize) -> usize {
        (j / PANEL) * k * PANEL + (kk / 4) * 4 * PANEL + (j % PANEL) * 4 + kk % 4
    }

    /// Is this the dot-product layout of an int8-compute GEMM?
    #[inline]
    pub const fn is_dot(&self) -> bool {
        self.dot
    }

    /// Columns `j0..j1` (`j0` a multiple of [`PANEL`]): whole panels, no copy.
    #[inline]
    pub fn cols(&self, j0: usize, j1: usize) -> Option<PackedB<'a>> {
        if !j0.is_multiple_of(PANEL) || j0 >= j1 || j1 > self.n {
            return None;
        }
        let panels = (j1 - j0).div_ceil(PANEL);
        let len = (panels - 1) * self.pstride + self.k * PANEL;
        Some(PackedB {
            data: self.data.sub((j0 / PANEL) * self.pstride, len)?,
            scales: self.scales.get(j0..j1)?,
            n: j1 - j0,
            ..*self
        })
    }

    /// Rows `k0..k1` of the inner dimension: the same panels, a shorter k, no copy.
    /// In the dot-product layout `k0` and `k1 - k0` must be multiples of 4.
    #[inline]
    pub fn rows(&self, k0: usize, k1: usize) -> Option<PackedB<'a>> {
        if k0 >= k1 || k1 > self.k {
            return None;
        }
        if self.dot && !(k0.is_multiple_of(4) && (k1 - k0).is_multiple_of(4)) {
            return None;
        }
        let panels = self.n.div_ceil(PANEL);
        let len = (panels - 1) * self.pstride + (k1 - k0) * PANEL;
        Some(PackedB {
            data: self.data.sub(k0 * PANEL, len)?,
            k: k1 - k0,
            ..*self
        })
    }

    /// Distance between panels in the data.
    #[inline]
    pub const fn panel_stride(&self) -> usize {
        self.pstride
    }

    /// Packs `B[kk][j] = src(kk, j)` into `dst` (length [`PackedB::packed_len`]).
    pub fn pack(
        k: usize,
        n: usize,
        dst: &mut [f32],
        mut src: impl FnMut(usize, usize) -> f32,
    ) -> Result<(), Error> {
        let expected = Self::packed_len(k, n);
        if dst.len() != expected {
            return Err(Error::Length {
                buffer: Buffer::Weights,
                expected,
                found: dst.len(),
            });
        }
        for (p, panel) in dst.chunks_exact_mut(k * PANEL).enumerate() {
            for (kk, row) in panel.chunks_exact_mut(PANEL).enumerate() {
                for (jj, v) in row.iter_mut().enumerate() {
                    let j = p * PANEL + jj;
                    *v = if j < n { src(kk, j) } else { 0.0 };
                }
            }
        }
        Ok(())
    }

    /// Output column of element `i` of the packed data of a matrix with inner dimension
    /// `k` (`>= n` for padding).
    #[inline]
    pub const fn column_of(k: usize, i: usize) -> usize {
        (i / (k * PANEL)) * PANEL + i % PANEL
    }

    /// Stored element `B[kk][j]` as f32, before the column scale.
    #[inline]
    pub fn get(&self, kk: usize, j: usize) -> f32 {
        if self.dot {
            let within = (kk / 4) * 4 * PANEL + (j % PANEL) * 4 + kk % 4;
            return self.data.get((j / PANEL) * self.pstride + within);
        }
        self.data
            .get((j / PANEL) * self.pstride + kk * PANEL + j % PANEL)
    }

    /// Inner dimension.
    #[inline]
    pub const fn k(&self) -> usize {
        self.k
    }

    /// Output columns.
    #[inline]
    pub const fn n(&self) -> usize {
        self.n
    }

    /// The packed data.
    #[inline]
    pub const fn data(&self) -> MatData<'a> {
        self.data
    }

    /// Per-column scales.
    #[inline]
    pub const fn scales(&self) -> &'a [f32] {
        self.scales
    }
}

/// What happens to a GEMM tile before it leaves the registers. `acc` is
/// `scales[j]·Σ A·B` for one output element, `j` its column.
#[derive(Clone, Copy, Debug)]
pub enum Epilogue<'a> {
    /// `out = acc + bias[j]`.
    Bias(&'a [f32]),
    /// `out = gelu(acc + bias[j])` (exact-erf GELU in the reference, a rational erf with
    /// max error about 1e-7 in the SIMD kernels).
    BiasGelu(&'a [f32]),
    /// `out += gamma[j]·(acc + bias[j])`: the residual add of a block's PW2.
    BiasScaleAdd {
        /// Bias of the layer.
        bias: &'a [f32],
        /// Per-channel layer scale.
        gamma: &'a [f32],
    },
    /// `out += gamma[j]·acc`: a further slice of the hidden layer added into the
    /// residual (PW2 split over the hidden dimension).
    ScaleAdd {
        /// Per-channel layer scale.
        gamma: &'a [f32],
    },
}

impl Epilogue<'_> {
    /// The reference epilogue of column `j`: the new value of an output element that held
    /// `old`, given its scaled sum `v` (`scales[j]·Σ a·b`).
    #[inline]
    pub fn apply(&self, j: usize, v: f32, old: f32) -> f32 {
        match *self {
            Epilogue::Bias(bias) => v + bias[j],
            Epilogue::BiasGelu(bias) => crate::math::gelu_exact(v + bias[j]),
            Epilogue::BiasScaleAdd { bias, gamma } => old + gamma[j] * (v + bias[j]),
            Epilogue::ScaleAdd { gamma } => old + gamma[j] * v,
        }
    }

    pub(crate) fn check(&self, n: usize) -> Result<(), Error> {
        match self {
            Epilogue::Bias(b) | Epilogue::BiasGelu(b) => check_len(Buffer::Weights, n, b.len()),
            Epilogue::BiasScaleAdd { bias, gamma } => {
                check_len(Buffer::Weights, n, bias.len())?;
                check_len(Buffer::Weights, n, gamma.len())
            }
            Epilogue::ScaleAdd { gamma } => check_len(Buffer::Weights, n, gamma.len()),
        }
    }
}

/// A strided row-major matrix view: row `i` is `data[i*stride .. i*stride + cols]`. Made by
/// [`MatRef::new`] (which checks the extent) or [`MatRef::dense`]; the kernels check the
/// extent again before any pointer reaches a SIMD leaf.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) stride: usize,
}

/// The mutable counterpart of [`MatRef`].
#[derive(Debug)]
pub struct MatMut<'a> {
    pub(crate) data: &'a mut [f32],
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) stride: usize,
}

/// Checks a strided view: `stride >= cols` (when it has more than one row) and
/// `(rows - 1)·stride + cols <= len`, without overflow.
fn check_view(
    buffer: Buffer,
    len: usize,
    rows: usize,
    cols: usize,
    stride: usize,
) -> Result<(), Error> {
    if rows > 1 && stride < cols {
        return Err(Error::Length {
            buffer,
            expected: cols,
            found: stride,
        });
    }
    check_strided(buffer, rows, cols, stride, len)
}

impl<'a> MatRef<'a> {
    /// A `rows x cols` view of `data` whose rows start `stride` apart; an error if the
    /// rows overlap or `data` is too short.
    pub fn new(data: &'a [f32], rows: usize, cols: usize, stride: usize) -> Result<Self, Error> {
        check_view(Buffer::Activation, data.len(), rows, cols, stride)?;
        Ok(MatRef {
            data,
            rows,
            cols,
            stride,
        })
    }

    /// Rows.
    pub const fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub const fn cols(&self) -> usize {
        self.cols
    }

    /// Distance between rows, in floats.
    pub const fn stride(&self) -> usize {
        self.stride
    }

    /// A dense `rows x cols` view (stride = cols) of `data`.
    #[inline]
    pub const fn dense(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            stride: cols,
        }
    }
}

impl<'a> MatMut<'a> {
    /// A `rows x cols` view of `data` whose rows start `stride` apart; an error if the
    /// rows overlap or `data` is too short.
    pub fn new(
        data: &'a mut [f32],
        rows: usize,
        cols: usize,
        stride: usize,
    ) -> Result<Self, Error> {
        check_view(Buffer::Output, data.len(), rows, cols, stride)?;
        Ok(MatMut {
            data,
            rows,
            cols,
            stride,
        })
    }

    /// Rows.
    pub const fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub const fn cols(&self) -> usize {
        self.cols
    }

    /// Distance between rows, in floats.
    pub const fn stride(&self) -> usize {
        self.stride
    }

    /// A dense `rows x cols` view (stride = cols) of `data`.
    #[inline]
    pub fn dense(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        MatMut {
            data,
            rows,
            cols,
            stride: cols,
        }
    }
}

/// `(rows - 1)·stride + cols`, the floats a strided view spans; `None` if that overflows.
pub(crate) const fn strided_len(rows: usize, cols: usize, stride: usize) -> Option<usize> {
    if rows == 0 {
        return Some(0);
    }
    match (rows - 1).checked_mul(stride) {
        Some(n) => n.checked_add(cols),
        None => None,
    }
}

/// `found` holds a strided view of `rows x cols` (overflow-checked).
pub(crate) fn check_strided(
    buffer: Buffer,
    rows: usize,
    cols: usize,
    stride: usize,
    found: usize,
) -> Result<(), Error> {
    match strided_len(rows, cols, stride) {
        Some(n) => check_len(buffer, n, found),
        None => Err(Error::Overflow { buffer }),
    }
}

/// Weights of one quadratic depthwise conv, packed channel-blocked like the activation
/// rows the kernel reads: for each block of [`CBLOCK`] channels, tap by tap, the three
/// filters `f` ∈ {a, b, c} side by side (see [`QdwWeights::tap_index`]; the last block is
/// zero-padded), with `scales[f*C + ch]` (1 unless int8) and `bias[f*C + ch]`. A vector of
/// channels then finds all its `3·K²` weights in one contiguous run (9.4 KB at K = 7 in
/// f32) instead of one cache line every `3C` floats.
#[derive(Clone, Copy, Debug)]
pub struct QdwWeights<'a> {
    pub(super) k: usize,
    pub(super) c: usize,
    pub(super) taps: MatData<'a>,
    pub(super) scales: &'a [f32],
    pub(super) bias: &'a [f32],
}

impl<'a> QdwWeights<'a> {
    /// Length of the packed taps for kernel `k` and `c` channels.
    #[inline]
    pub const fn taps_len(k: usize, c: usize) -> usize {
        k * k * 3 * c.div_ceil(CBLOCK) * CBLOCK
    }

    /// Where the weight of tap `t = ky·K + kx` of filter `f` for channel `ch` sits:
    /// `((ch / CBLOCK · K² + t) · 3 + f) · CBLOCK + ch % CBLOCK`.
    #[inline]
    pub const fn tap_index(k: usize, t: usize, f: usize, ch: usize) -> usize {
        (((ch / CBLOCK) * k * k + t) * 3 + f) * CBLOCK + ch % CBLOCK
    }

    /// Wraps packed taps, scales and biases, checking `k` ∈ {3, 5, 7} and the lengths.
    pub fn new(
        k: usize,
        c: usize,
        taps: MatData<'a>,
        scales: &'a [f32],
        bias: &'a [f32],
    ) -> Result<Self, Error> {
        if !matches!(k, 3 | 5 | 7) {
            return Err(Error::Arch("QDW kernel size must be 3, 5 or 7"));
        }
        let taps = match taps {
            MatData::W8A8(t, _) => MatData::I8(t),
            t => t,
        };
        check_weights_exact(&[
            (Self::taps_len(k, c), taps.len()),
            (3 * c, scales.len()),
            (3 * c, bias.len()),
        ])?;
        Ok(QdwWeights {
            k,
            c,
            taps,
            scales,
            bias,
        })
    }

    /// Kernel size.
    #[inline]
    pub const fn k(&self) -> usize {
        self.k
    }
    /// Channels.
    #[inline]
    pub const fn c(&self) -> usize {
        self.c
    }
    /// Packed taps.
    #[inline]
    pub const fn taps(&self) -> MatData<'a> {
        self.taps
    }
    /// Per (filter, channel) scales.
    #[inline]
    pub const fn scales(&self) -> &'a [f32] {
        self.scales
    }
    /// Packed biases `[ba | bb | bc]`.
    #[inline]
    pub const fn bias(&self) -> &'a [f32] {
        self.bias
    }
}

/// Maximum QDW kernel size.
pub const MAX_K: usize = 7;

/// Channels per block of a QDW input row (see [`qdw_row`]).
pub const CBLOCK: usize = 16;

/// The parts of a w8a8 model kept in f32 (mixed precision, chosen by `quadra convert
/// --min-cosine`): a bitmap (bit `u % 8` of byte `u / 8` for unit `u`) whose bit 0 stands
/// for the stem, downsample and head layers and bit `1 + i` for quadratic (non-identity)
/// block `i` in network order, and an f32 stream holding the flagged units' matrices as
/// the f32 kernels read them, in network order, each followed by its (unit) scales: the
/// stem conv, each block's QDW taps, PW1 and PW2 panels ([`FloatBlocks::block_len`]), each
/// downsample conv, the head. Their int8 copies stay in the int8 stream (unused), so every
/// other tensor keeps its place.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FloatBlocks<'a> {
    /// Bitmap over the units (bit 0 the other layers, bit `1 + i` block `i`); empty when
    /// none is float.
    pub flags: &'a [u8],
    /// The flagged blocks' f32 pointwise weights.
    pub mats: &'a [f32],
}

impl FloatBlocks<'static> {
    /// No block kept in f32: every pointwise GEMM computes in int8.
    pub const NONE: FloatBlocks<'static> = FloatBlocks {
        flags: &[],
        mats: &[],
    };
}

impl FloatBlocks<'_> {
    /// Is quadratic block `i` (counted over non-identity blocks) kept in f32?
    #[inline]
    pub fn is_float(&self, i: usize) -> bool {
        self.bit(1 + i)
    }

    /// Are the stem, downsample and head layers kept in f32?
    #[inline]
    pub fn layers_float(&self) -> bool {
        self.bit(0)
    }

    #[inline]
    pub(crate) fn bit(&self, u: usize) -> bool {
        self.flags
            .get(u / 8)
            .is_some_and(|b| (b >> (u % 8)) & 1 == 1)
    }

    /// How many units (the layers, blocks) are kept in f32.
    #[inline]
    pub fn count(&self) -> usize {
        self.flags.iter().map(|b| b.count_ones() as usize).sum()
    }
}
