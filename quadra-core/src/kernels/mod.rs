//! The two hot kernels and their contracts.
//!
//! * **QDW row**: one output row of the quadratic depthwise conv, channels-last, reading
//!   `K` zero-padded input rows once for all three filters.
//! * **GEMM**: `out = epilogue(A·B)` with A the activations (rows = pixels, row-major with a
//!   stride), B the weights packed once into [`PANEL`]-column panels, and the epilogue
//!   (bias, bias+GELU, or gamma-scaled residual add) applied while the tile is in registers.
//!
//! [`scalar`] is the reference and source of truth; `x86_avx2`, `x86_avx512` and
//! `aarch64_neon` instantiate the single generic SIMD body in [`simd`] for their ISA.
//! The safe functions here validate every length, then dispatch on the [`Kernels`] token.

/// The ISA dispatch, written once: `leaf!(kern, f(args..), scalar)` calls `f` in the leaf
/// module of `kern`'s ISA (`x86_avx2`, `x86_avx512`, `aarch64_neon`), or evaluates `scalar`
/// on the scalar path. A macro rather than a generic dispatcher: each leaf is a separate
/// `#[target_feature]` function with its own signature, so a trait would repeat every
/// signature once per ISA, where this keeps each call site one line and the one `unsafe`
/// argument here.
///
/// Callers must have checked every length behind the pointers in `args` (each call site
/// says where).
macro_rules! leaf {
    ($kern:expr, $f:ident($($arg:expr),* $(,)?), $scalar:expr) => {
        match $kern.isa() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a `Kernels` token holding Avx2 proves AVX2+FMA+F16C at run time (it is
            // only made by detection or by `unsafe` constructors with that contract); the
            // caller checked every length behind the arguments.
            $crate::isa::Isa::Avx2 => unsafe { $crate::kernels::x86_avx2::$f($($arg),*) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above, for AVX-512F.
            $crate::isa::Isa::Avx512 => unsafe { $crate::kernels::x86_avx512::$f($($arg),*) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: as above, for NEON (baseline on aarch64).
            $crate::isa::Isa::Neon => unsafe { $crate::kernels::aarch64_neon::$f($($arg),*) },
            // Scalar, or an ISA of another architecture, which no token here can hold.
            #[allow(unreachable_patterns)]
            _ => $scalar,
        }
    };
}

pub mod q8;
pub mod scalar;
pub(crate) mod simd;

#[cfg(target_arch = "aarch64")]
pub(crate) mod aarch64_neon;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx512;

use crate::error::{Buffer, Error};
use crate::isa::{Isa, Kernels};
use crate::weights::FloatBlocks;

/// Width of a packed weight panel, in columns. Every ISA reads the same packed layout.
pub const PANEL: usize = 16;

/// Every `(expected, found)` weight length pair must match exactly.
fn check_weights_exact(pairs: &[(usize, usize)]) -> Result<(), Error> {
    match pairs.iter().find(|(e, f)| e != f) {
        Some(&(expected, found)) => Err(Error::Length {
            buffer: Buffer::Weights,
            expected,
            found,
        }),
        None => Ok(()),
    }
}

pub(crate) fn check_len(buffer: Buffer, expected: usize, found: usize) -> Result<(), Error> {
    if found < expected {
        Err(Error::Length {
            buffer,
            expected,
            found,
        })
    } else {
        Ok(())
    }
}

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
    /// ([`q8`]). Those GEMMs' panels are stored in the dot-product layout
    /// ([`PackedB::dot_index`]).
    W8A8,
}

impl Dtype {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 => 2,
            Dtype::I8 | Dtype::W8A8 => 1,
        }
    }

    /// Lower-case name: `f32`, `f16`, `int8`, `w8a8`.
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
    /// dot-layout [`PackedB`]).
    W8A8(&'a [i8], FloatBlocks<'a>),
}

impl<'a> MatData<'a> {
    /// Number of elements.
    pub const fn len(&self) -> usize {
        match self {
            MatData::F32(v) => v.len(),
            MatData::F16(v) => v.len(),
            MatData::I8(v) | MatData::W8A8(v, _) => v.len(),
        }
    }

    /// Is it empty?
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Storage type.
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
    data: MatData<'a>,
    scales: &'a [f32],
    k: usize,
    n: usize,
    /// Distance between panels (`K·16` of the matrix this view was cut from).
    pstride: usize,
    /// Dot-product layout (int8 only).
    dot: bool,
}

impl<'a> PackedB<'a> {
    /// Length of the packed form of a `k x n` matrix.
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
    pub const fn dot_index(k: usize, kk: usize, j: usize) -> usize {
        (j / PANEL) * k * PANEL + (kk / 4) * 4 * PANEL + (j % PANEL) * 4 + kk % 4
    }

    /// Is this the dot-product layout of an int8-compute GEMM?
    pub const fn is_dot(&self) -> bool {
        self.dot
    }

    /// Columns `j0..j1` (`j0` a multiple of [`PANEL`]): whole panels, no copy.
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
    pub const fn column_of(k: usize, i: usize) -> usize {
        (i / (k * PANEL)) * PANEL + i % PANEL
    }

    /// Stored element `B[kk][j]` as f32, before the column scale.
    pub fn get(&self, kk: usize, j: usize) -> f32 {
        if self.dot {
            let within = (kk / 4) * 4 * PANEL + (j % PANEL) * 4 + kk % 4;
            return self.data.get((j / PANEL) * self.pstride + within);
        }
        self.data
            .get((j / PANEL) * self.pstride + kk * PANEL + j % PANEL)
    }

    /// Inner dimension.
    pub const fn k(&self) -> usize {
        self.k
    }

    /// Output columns.
    pub const fn n(&self) -> usize {
        self.n
    }

    /// The packed data.
    pub const fn data(&self) -> MatData<'a> {
        self.data
    }

    /// Per-column scales.
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
    pub fn apply(&self, j: usize, v: f32, old: f32) -> f32 {
        match *self {
            Epilogue::Bias(bias) => v + bias[j],
            Epilogue::BiasGelu(bias) => crate::math::gelu_exact(v + bias[j]),
            Epilogue::BiasScaleAdd { bias, gamma } => old + gamma[j] * (v + bias[j]),
            Epilogue::ScaleAdd { gamma } => old + gamma[j] * v,
        }
    }

    fn check(&self, n: usize) -> Result<(), Error> {
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

/// A strided row-major matrix view: row `i` is `data[i*stride .. i*stride + cols]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    /// Backing data.
    pub data: &'a [f32],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Distance between rows.
    pub stride: usize,
}

/// The mutable counterpart of [`MatRef`].
#[derive(Debug)]
pub struct MatMut<'a> {
    /// Backing data.
    pub data: &'a mut [f32],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Distance between rows.
    pub stride: usize,
}

impl<'a> MatRef<'a> {
    /// A dense `rows x cols` view (stride = cols) of `data`.
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
    /// A dense `rows x cols` view (stride = cols) of `data`.
    pub fn dense(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        MatMut {
            data,
            rows,
            cols,
            stride: cols,
        }
    }
}

pub(crate) const fn strided_len(rows: usize, cols: usize, stride: usize) -> usize {
    if rows == 0 {
        0
    } else {
        (rows - 1) * stride + cols
    }
}

/// `out` must be an `m x n` view (stride at least `n`) with room for its strided extent.
pub(crate) fn check_out(out: &MatMut<'_>, m: usize, n: usize) -> Result<(), Error> {
    if out.rows != m || out.cols != n || out.stride < n {
        return Err(Error::Length {
            buffer: Buffer::Output,
            expected: n,
            found: out.cols,
        });
    }
    check_len(
        Buffer::Output,
        strided_len(m, n, out.stride),
        out.data.len(),
    )
}

/// `out = epilogue(a · b)`. `a` is `m x k`, `b` is `k x n`, `out` is `m x n`.
pub fn gemm(
    kern: Kernels,
    a: MatRef<'_>,
    b: PackedB<'_>,
    epi: Epilogue<'_>,
    out: MatMut<'_>,
) -> Result<(), Error> {
    let (m, k, n) = (a.rows, b.k, b.n);
    if a.cols != k || a.stride < k {
        return Err(Error::Length {
            buffer: Buffer::Activation,
            expected: k,
            found: a.cols,
        });
    }
    check_out(&out, m, n)?;
    check_len(
        Buffer::Activation,
        strided_len(m, k, a.stride),
        a.data.len(),
    )?;
    epi.check(n)?;
    if b.dot {
        return Err(Error::Arch(
            "w8a8 weights (dot-product layout) need quantised activations: use q8::gemm_q8",
        ));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let (lda, ldo) = (a.stride, out.stride);
    if kern.isa() == Isa::Scalar {
        scalar::gemm(a.data, m, lda, b, epi, out.data, ldo);
        return Ok(());
    }
    let g = simd::GemmArgs {
        a: a.data.as_ptr(),
        m,
        lda,
        k,
        n,
        pstride: b.pstride,
        scales: b.scales.as_ptr(),
        epi: simd::EpiPtrs::new(epi),
        out: out.data.as_mut_ptr(),
        ldo,
    };
    match b.data {
        MatData::F32(d) => simd_gemm(kern, &g, d.as_ptr()),
        MatData::F16(d) => simd_gemm(kern, &g, d.as_ptr()),
        MatData::I8(d) | MatData::W8A8(d, _) => simd_gemm(kern, &g, d.as_ptr()),
    }
    Ok(())
}

fn simd_gemm<W: simd::Elem>(kern: Kernels, g: &simd::GemmArgs, b: *const W) {
    // `gemm` checked every length behind the pointers in `g` and `b`; it runs the scalar path.
    leaf!(kern, gemm(g, b), ())
}

/// Weights of one quadratic depthwise conv, packed channel-blocked like the activation
/// rows the kernel reads: for each block of [`CBLOCK`] channels, tap by tap, the three
/// filters `f` ∈ {a, b, c} side by side (see [`QdwWeights::tap_index`]; the last block is
/// zero-padded), with `scales[f*C + ch]` (1 unless int8) and `bias[f*C + ch]`. A vector of
/// channels then finds all its `3·K²` weights in one contiguous run (9.4 KB at K = 7 in
/// f32) instead of one cache line every `3C` floats.
#[derive(Clone, Copy, Debug)]
pub struct QdwWeights<'a> {
    k: usize,
    c: usize,
    taps: MatData<'a>,
    scales: &'a [f32],
    bias: &'a [f32],
}

impl<'a> QdwWeights<'a> {
    /// Length of the packed taps for kernel `k` and `c` channels.
    pub const fn taps_len(k: usize, c: usize) -> usize {
        k * k * 3 * c.div_ceil(CBLOCK) * CBLOCK
    }

    /// Where the weight of tap `t = ky·K + kx` of filter `f` for channel `ch` sits:
    /// `((ch / CBLOCK · K² + t) · 3 + f) · CBLOCK + ch % CBLOCK`.
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
    pub const fn k(&self) -> usize {
        self.k
    }
    /// Channels.
    pub const fn c(&self) -> usize {
        self.c
    }
    /// Packed taps.
    pub const fn taps(&self) -> MatData<'a> {
        self.taps
    }
    /// Per (filter, channel) scales.
    pub const fn scales(&self) -> &'a [f32] {
        self.scales
    }
    /// Packed biases `[ba | bb | bc]`.
    pub const fn bias(&self) -> &'a [f32] {
        self.bias
    }
}

/// Maximum QDW kernel size.
pub const MAX_K: usize = 7;

/// Channels per block of a QDW input row (see [`qdw_row`]).
pub const CBLOCK: usize = 16;

/// Floats of one zero-padded, channel-blocked QDW input row: `ceil(C/16)` blocks of
/// `(w + K - 1)` pixels of 16 channels.
pub const fn qdw_row_len(w: usize, c: usize, k: usize) -> usize {
    c.div_ceil(CBLOCK) * (w + k - 1) * CBLOCK
}

/// Writes the unpadded channels-last row `src` (`w` pixels of `c`) into the channel-blocked
/// padded row `dst` ([`qdw_row_len`] floats), leaving its padding as it is (zero). The
/// SIMD paths copy a vector at a time (a plain copy loop here cost a quarter of the QDW
/// kernel's time); every path writes the same bits.
pub fn block_row(
    kern: Kernels,
    src: &[f32],
    w: usize,
    c: usize,
    k: usize,
    dst: &mut [f32],
) -> Result<(), Error> {
    check_blocked_row(src, w, c, k, dst)?;
    // Lengths checked above.
    leaf!(
        kern,
        block_row(src.as_ptr(), w, c, k, dst.as_mut_ptr()),
        scalar::block_row(src, w, c, k, dst)
    );
    Ok(())
}

/// The lengths of a channels-last row of `w` pixels and of the blocked QDW row it goes to.
fn check_blocked_row(src: &[f32], w: usize, c: usize, k: usize, dst: &[f32]) -> Result<(), Error> {
    if !matches!(k, 3 | 5 | 7) {
        return Err(Error::Arch("QDW kernel size must be 3, 5 or 7"));
    }
    check_len(Buffer::Activation, w * c, src.len())?;
    check_len(Buffer::Scratch, qdw_row_len(w, c, k), dst.len())
}

/// LayerNorm weight and bias for `c` channels.
fn check_ln_weights(c: usize, w: &[f32], b: &[f32]) -> Result<(), Error> {
    check_len(Buffer::Weights, c, w.len())?;
    check_len(Buffer::Weights, c, b.len())
}

/// One output row of the QDW conv.
///
/// `rows[ky]` is input row `y - p + ky` (p = (K-1)/2), zero-padded by `p` pixels on each side
/// and channel-blocked: channel `ch` of padded pixel `px` is at
/// `((ch / 16)·(w + K - 1) + px)·16 + ch % 16` ([`qdw_row_len`] floats, see [`block_row`]),
/// so neighbouring pixels are a constant 64 bytes apart whatever C is, and the kernels'
/// addresses need no per-pixel arithmetic. `out` is channels-last. With `gamma = None`, `out[x][c]` is set
/// to `(a + ba)(b + bb) + (c + bc)`; with `Some(gamma)` that value is scaled by `gamma[c]` and
/// added to `out` (the residual of a QuadraBlock).
pub fn qdw_row(
    kern: Kernels,
    wts: &QdwWeights<'_>,
    rows: &[&[f32]],
    w: usize,
    gamma: Option<&[f32]>,
    out: &mut [f32],
) -> Result<(), Error> {
    qdw_row_impl(kern, wts, rows, w, gamma, out, None)
}

/// [`qdw_row`] (storing, no `gamma`) and, in the same pass, [`block_row`] of the next
/// input row `next_src` into `next_dst`. The results are those of the two calls; the copy
/// costs almost nothing here, as its loads and stores fill slots the FMA-bound QDW loop
/// leaves free (a separate copy is 5-8% of a lone K = 7 conv).
#[allow(clippy::too_many_arguments)]
pub fn qdw_row_and_block(
    kern: Kernels,
    wts: &QdwWeights<'_>,
    rows: &[&[f32]],
    w: usize,
    out: &mut [f32],
    next_src: &[f32],
    next_dst: &mut [f32],
) -> Result<(), Error> {
    check_blocked_row(next_src, w, wts.c, wts.k, next_dst)?;
    qdw_row_impl(kern, wts, rows, w, None, out, Some((next_src, next_dst)))
}

fn qdw_row_impl(
    kern: Kernels,
    wts: &QdwWeights<'_>,
    rows: &[&[f32]],
    w: usize,
    gamma: Option<&[f32]>,
    out: &mut [f32],
    next: Option<(&[f32], &mut [f32])>,
) -> Result<(), Error> {
    let (k, c) = (wts.k, wts.c);
    if rows.len() != k {
        return Err(Error::Arch("QDW row needs exactly K input rows"));
    }
    for r in rows {
        check_len(Buffer::Scratch, qdw_row_len(w, c, k), r.len())?;
    }
    check_len(Buffer::Activation, w * c, out.len())?;
    if let Some(g) = gamma {
        check_len(Buffer::Weights, c, g.len())?;
    }
    if w == 0 || c == 0 {
        return Ok(());
    }
    if kern.isa() == Isa::Scalar {
        scalar::qdw_row(wts, rows, w, gamma, out);
        if let Some((src, dst)) = next {
            scalar::block_row(src, w, c, k, dst);
        }
        return Ok(());
    }
    let mut ptrs = [core::ptr::null::<f32>(); MAX_K];
    for (p, r) in ptrs.iter_mut().zip(rows) {
        *p = r.as_ptr();
    }
    let (next_src, next_dst) = match next {
        Some((s, d)) => (s.as_ptr(), d.as_mut_ptr()),
        None => (core::ptr::null(), core::ptr::null_mut()),
    };
    let args = simd::QdwArgs {
        rows: ptrs,
        w,
        c,
        scales: wts.scales.as_ptr(),
        bias: wts.bias.as_ptr(),
        gamma: gamma.map_or(core::ptr::null(), |g| g.as_ptr()),
        out: out.as_mut_ptr(),
        next_src,
        next_dst,
    };
    match wts.taps {
        MatData::F32(t) => simd_qdw(kern, k, &args, t.as_ptr()),
        MatData::F16(t) => simd_qdw(kern, k, &args, t.as_ptr()),
        MatData::I8(t) | MatData::W8A8(t, _) => simd_qdw(kern, k, &args, t.as_ptr()),
    }
    Ok(())
}

fn simd_qdw<W: simd::Elem>(kern: Kernels, k: usize, a: &simd::QdwArgs, taps: *const W) {
    // `qdw_row` checked every length behind `a` and `taps`; it runs the scalar path.
    leaf!(kern, qdw_row(k, a, taps), ())
}

/// Applies GELU to every element of `x` with the kernels of `kern` (the SIMD paths use the
/// rational erf; scalar uses libm's `erff`). Used by tests and by unfused baselines.
pub fn gelu_slice(kern: Kernels, x: &mut [f32]) {
    // The pointer/length pair comes from a slice.
    leaf!(
        kern,
        gelu_slice(x.as_mut_ptr(), x.len()),
        x.iter_mut().for_each(|v| *v = crate::math::gelu_exact(*v))
    )
}

/// LayerNorm (eps 1e-6, over channels) of consecutive channel vectors of length `c`:
/// `x` and `out` hold the same number of them. The scalar path is `math::layer_norm`.
pub fn layer_norm_rows(
    kern: Kernels,
    x: &[f32],
    c: usize,
    w: &[f32],
    b: &[f32],
    out: &mut [f32],
) -> Result<(), Error> {
    if c == 0 {
        return Ok(());
    }
    check_ln_weights(c, w, b)?;
    let rows = x.len() / c;
    check_len(Buffer::Output, rows * c, out.len())?;
    if kern.isa() == Isa::Scalar {
        crate::math::layer_norm_rows(&x[..rows * c], c, &w[..c], &b[..c], &mut out[..rows * c]);
        return Ok(());
    }
    ln_simd(kern, x.as_ptr(), rows, c, w, b, out.as_mut_ptr(), None);
    Ok(())
}

/// LayerNorm of one channels-last row of `w` pixels straight into the channel-blocked,
/// padded QDW row `dst` ([`qdw_row_len`] floats, padding left as it is): the same values
/// as [`layer_norm_rows`] followed by [`block_row`], without the intermediate row.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_blocked_row(
    kern: Kernels,
    src: &[f32],
    w: usize,
    c: usize,
    lw: &[f32],
    lb: &[f32],
    k: usize,
    dst: &mut [f32],
) -> Result<(), Error> {
    check_blocked_row(src, w, c, k, dst)?;
    if c == 0 || w == 0 {
        return Ok(());
    }
    check_ln_weights(c, lw, lb)?;
    let (p, pw) = ((k - 1) / 2, w + k - 1);
    if kern.isa() == Isa::Scalar {
        for (px, pix) in src[..w * c].chunks_exact(c).enumerate() {
            let (mean, rstd) = crate::math::layer_norm_stats(pix);
            for (ch, &v) in pix.iter().enumerate() {
                dst[((ch / CBLOCK) * pw + p + px) * CBLOCK + ch % CBLOCK] =
                    (v - mean) * rstd * lw[ch] + lb[ch];
            }
        }
        return Ok(());
    }
    ln_simd(
        kern,
        src.as_ptr(),
        w,
        c,
        lw,
        lb,
        dst.as_mut_ptr(),
        Some((pw, p)),
    );
    Ok(())
}

/// [`layer_norm_rows`] in place.
pub fn layer_norm_rows_inplace(
    kern: Kernels,
    x: &mut [f32],
    c: usize,
    w: &[f32],
    b: &[f32],
) -> Result<(), Error> {
    if c == 0 {
        return Ok(());
    }
    check_ln_weights(c, w, b)?;
    let rows = x.len() / c;
    if kern.isa() == Isa::Scalar {
        let mut tmp = [0.0f32; 64];
        for px in x.chunks_exact_mut(c) {
            if c <= tmp.len() {
                crate::math::layer_norm(px, &w[..c], &b[..c], &mut tmp[..c]);
                px.copy_from_slice(&tmp[..c]);
            } else {
                crate::math::layer_norm_inplace(px, &w[..c], &b[..c]);
            }
        }
        return Ok(());
    }
    let p = x.as_mut_ptr();
    ln_simd(kern, p, rows, c, w, b, p, None);
    Ok(())
}

/// The SIMD LayerNorm leaves; `x` may equal `out` (each element is read before it is
/// written).
#[allow(clippy::too_many_arguments)]
fn ln_simd(
    kern: Kernels,
    xp: *const f32,
    rows: usize,
    c: usize,
    w: &[f32],
    b: &[f32],
    op: *mut f32,
    blocks: Option<(usize, usize)>,
) {
    let a = simd::LnArgs {
        x: xp,
        rows,
        c,
        w: w.as_ptr(),
        b: b.as_ptr(),
        eps: crate::math::LN_EPS,
        out: op,
        blocks,
    };
    // The callers checked `rows·c` floats behind `xp` (and the output layout's behind `op`)
    // and `c` behind `w` and `b`; they run the scalar path.
    leaf!(kern, layer_norm_rows(&a), ())
}

/// A plain (linear) depthwise KxK conv: `taps[(ky·K + kx)·C + ch]`, `bias[ch]`.
#[derive(Clone, Copy, Debug)]
pub struct DwConv<'a> {
    /// Kernel size (3, 5 or 7).
    pub k: usize,
    /// Channels.
    pub c: usize,
    /// Taps, `K·K·C`.
    pub taps: &'a [f32],
    /// Bias, `C`.
    pub bias: &'a [f32],
}

/// One output row of a plain depthwise conv: `out[x][ch] = bias[ch] +
/// Σ taps[(ky·K + kx)·C + ch] · rows[ky][(x + kx)·C + ch]`, rows zero-padded as for
/// [`qdw_row`]. Not part of QuadraNet: the baselines that price the quadratic term use it.
pub fn dw_row(
    kern: Kernels,
    conv: &DwConv<'_>,
    rows: &[&[f32]],
    w: usize,
    out: &mut [f32],
) -> Result<(), Error> {
    let DwConv { k, c, taps, bias } = *conv;
    if !matches!(k, 3 | 5 | 7) || rows.len() != k {
        return Err(Error::Arch(
            "depthwise conv needs K in {3, 5, 7} and K rows",
        ));
    }
    check_len(Buffer::Weights, k * k * c, taps.len())?;
    check_len(Buffer::Weights, c, bias.len())?;
    for r in rows {
        check_len(Buffer::Scratch, (w + k - 1) * c, r.len())?;
    }
    check_len(Buffer::Activation, w * c, out.len())?;
    if kern.isa() == Isa::Scalar || w == 0 || c == 0 {
        for x in 0..w {
            for ch in 0..c {
                let mut acc = bias[ch];
                for (ky, row) in rows.iter().enumerate() {
                    for kx in 0..k {
                        acc += taps[(ky * k + kx) * c + ch] * row[(x + kx) * c + ch];
                    }
                }
                out[x * c + ch] = acc;
            }
        }
        return Ok(());
    }
    let mut ptrs = [core::ptr::null::<f32>(); MAX_K];
    for (p, r) in ptrs.iter_mut().zip(rows) {
        *p = r.as_ptr();
    }
    let a = simd::DwArgs {
        rows: ptrs,
        w,
        c,
        taps: taps.as_ptr(),
        bias: bias.as_ptr(),
        out: out.as_mut_ptr(),
    };
    // Every length behind `a` checked above; the scalar path returned earlier.
    leaf!(kern, dw_row(k, &a), ());
    Ok(())
}
