//! The two hot kernels and their contracts.
//!
//! * **QDW row**: one output row of the quadratic depthwise conv, channels-last, reading
//!   `K` zero-padded input rows once for all three filters.
//! * **GEMM**: `out = epilogue(A·B)` with A the activations (rows = pixels, row-major with a
//!   stride), B the weights packed once into [`PANEL`]-column panels, and the epilogue
//!   (bias, bias+GELU, or gamma-scaled residual add) applied while the tile is in registers.
//!
//! [`scalar`] is the reference and source of truth; `x86_avx2`, `x86_avx512` and
//! `aarch64_neon` instantiate the single generic SIMD body in `simd` for their ISA.
//! The safe functions here validate every length, then dispatch on the [`Kernels`] token.
// On an architecture without SIMD leaves (Cortex-M, RISC-V, ...) only the scalar reference
// runs: the raw arguments built for the leaves go unused there, and that is expected.
#![cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(unused_variables, unused_imports, dead_code)
)]

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
mod types;

#[cfg(target_arch = "aarch64")]
pub(crate) mod aarch64_neon;
#[cfg(target_arch = "aarch64")]
mod neon_fp16;
#[cfg(target_arch = "aarch64")]
mod neon_fp16_qdw;
#[cfg(target_arch = "aarch64")]
mod neon_qdw;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx512;

use crate::error::{Buffer, Error};
use crate::isa::{Isa, Kernels};

pub(crate) use types::check_strided;
pub use types::{
    Dtype, Epilogue, FloatBlocks, MatData, MatMut, MatRef, PackedB, QdwWeights, CBLOCK, MAX_K,
};

/// Deepest inner dimension whose half-precision rows the fp16 GEMM reads in place
/// ([`half_rows`]), and of the f16 and int8 panels NEON's f32 GEMM widens once per call.
/// Every pointwise layer of the presets up to QuadraNet36-T fits.
#[doc(hidden)]
pub const WIDE_K: usize = simd::WIDE_K;

/// Deepest inner dimension the half-precision GEMM takes from f32 rows (its f32 or int8
/// weight panels are converted into a stack copy that deep); deeper ones run the f32 GEMM.
/// Every layer of the presets up to QuadraNet36-T fits (its last downsample has 1024).
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))] // the NEON fp16 GEMM's, and tests'
pub(crate) const FP16_MAX_K: usize = 2 * WIDE_K;

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

/// `out` must be an `m x n` view (stride at least `n`) with room for its strided extent.
pub(crate) fn check_out(out: &MatMut<'_>, m: usize, n: usize) -> Result<(), Error> {
    if out.rows != m || out.cols != n || out.stride < n {
        return Err(Error::Length {
            buffer: Buffer::Output,
            expected: n,
            found: out.cols,
        });
    }
    check_strided(Buffer::Output, m, n, out.stride, out.data.len())
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
    check_strided(Buffer::Activation, m, k, a.stride, a.data.len())?;
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
    #[cfg(target_arch = "aarch64")]
    if kern.fp16() {
        // SAFETY: a token with `fp16` set holds NEON and proves FEAT_FP16 (it is only made
        // by `with_fp16_unchecked`, whose contract that is, or by `with_precision` when the
        // build enables it); every length behind `g` and `b` is checked above, and `takes`
        // each time.
        let done = unsafe {
            match b.data {
                // Deeper than the stack copies: the f32 GEMM.
                _ if !neon_fp16::takes(k) => return Ok(simd_gemm_any(kern, &g, b.data)),
                MatData::F32(d) => aarch64_neon::gemm_fp16(&g, d.as_ptr()),
                MatData::F16(d) => aarch64_neon::gemm_fp16(&g, d.as_ptr()),
                MatData::I8(d) | MatData::W8A8(d, _) => aarch64_neon::gemm_fp16(&g, d.as_ptr()),
            }
        };
        return Ok(done);
    }
    simd_gemm_any(kern, &g, b.data);
    Ok(())
}

/// Can [`gemm_half_rows`] run a GEMM with weights `b` on `kern`: an fp16 token (aarch64 with
/// FEAT_FP16), float weights (not w8a8's dot layout) and `k <= WIDE_K`? Where it can, the
/// GEMM's input rows may be kept in half precision ([`layer_norm_rows_half`]), which saves
/// the GEMM rounding them again at every call (PW1 is called once per hidden slice).
pub(crate) fn half_rows(kern: Kernels, b: &PackedB<'_>) -> bool {
    kern.fp16() && !b.dot && b.k <= WIDE_K
}

/// The layout of the half-precision rows [`layer_norm_rows_half`] and [`gemm_gelu_half`]
/// write and [`gemm_half_rows`] reads (`Precision::Fp16`'s LN2 -> PW1 -> PW2): `m` rows of
/// `k` halves in groups of four rows; within a group, k-block `b` (columns `8b..8b + 8`)
/// holds the eight halves of row 0, then those of rows 1, 2 and 3, so a group is
/// `4·ceil(k/8)·8` halves. The fp16 GEMM's 4-row tile loads a k-block of its rows with one
/// instruction, so it reads these rows where they are (dense rows were copied into this
/// layout at every call). Halves in the padding (rows past `m`, columns past `k`) are
/// neither written nor read. Floats the layout takes (two halves to a float), or `None` if
/// that overflows.
pub(crate) fn half_tiles_floats(m: usize, k: usize) -> Option<usize> {
    let halves = m
        .div_ceil(4)
        .checked_mul(4)?
        .checked_mul(k.div_ceil(8).checked_mul(8)?)?;
    Some(halves.div_ceil(2))
}

/// The index, in halves, of row `r`, column `j` in the layout of [`half_tiles_floats`] for
/// rows of `k` values.
pub(crate) const fn half_tiles_at(r: usize, j: usize, k: usize) -> usize {
    (r / 4) * 4 * k.div_ceil(8) * 8 + (j / 8) * 32 + (r % 4) * 8 + j % 8
}

/// [`half_tiles_floats`] or the overflow error for `buffer`.
fn half_tiles_len(buffer: Buffer, m: usize, k: usize) -> Result<usize, Error> {
    half_tiles_floats(m, k).ok_or(Error::Overflow { buffer })
}

/// What [`gemm_half_rows`] and [`gemm_gelu_half`] return where [`half_rows`] is false.
const NO_HALF_ROWS: Error =
    Error::Arch("half-precision GEMM rows need an fp16 token and float weights with k <= WIDE_K");

/// The raw arguments of a GEMM on `m` dense activation rows of `b.k` values (halves or
/// floats) at `a`, into `out` (`ldo` apart); the caller checks every length.
#[cfg(target_arch = "aarch64")]
fn dense_args(
    a: &[f32],
    m: usize,
    b: &PackedB<'_>,
    epi: Epilogue<'_>,
    out: *mut f32,
    ldo: usize,
) -> simd::GemmArgs {
    simd::GemmArgs {
        a: a.as_ptr(),
        m,
        lda: b.k,
        k: b.k,
        n: b.n,
        pstride: b.pstride,
        scales: b.scales.as_ptr(),
        epi: simd::EpiPtrs::new(epi),
        out,
        ldo,
    }
}

/// [`gemm`] with an fp16 token on activations held in half precision: `a` holds `m` rows
/// of `b.k` halves (two to a float, see [`scalar::half`]) in the layout of
/// [`half_tiles_floats`], as [`layer_norm_rows_half`] and [`gemm_gelu_half`] write them.
/// The result is [`gemm`]'s with the same token on any f32 rows that round to these halves.
/// Errors unless [`half_rows`].
pub(crate) fn gemm_half_rows(
    kern: Kernels,
    a: &[f32],
    m: usize,
    b: PackedB<'_>,
    epi: Epilogue<'_>,
    out: MatMut<'_>,
) -> Result<(), Error> {
    if !half_rows(kern, &b) {
        return Err(NO_HALF_ROWS);
    }
    let (k, n) = (b.k, b.n);
    check_out(&out, m, n)?;
    check_len(
        Buffer::Activation,
        half_tiles_len(Buffer::Activation, m, k)?,
        a.len(),
    )?;
    epi.check(n)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    #[cfg(target_arch = "aarch64")]
    {
        let g = dense_args(a, m, &b, epi, out.data.as_mut_ptr(), out.stride);
        // SAFETY: `half_rows` holds: the token proves NEON and FEAT_FP16 and `k <= WIDE_K`;
        // every length behind `g` and `b` is checked above.
        unsafe {
            match b.data {
                MatData::F32(d) => aarch64_neon::gemm_fp16_half_rows(&g, d.as_ptr()),
                MatData::F16(d) => aarch64_neon::gemm_fp16_half_rows(&g, d.as_ptr()),
                MatData::I8(d) | MatData::W8A8(d, _) => {
                    aarch64_neon::gemm_fp16_half_rows(&g, d.as_ptr())
                }
            }
        }
        Ok(())
    }
    // `half_rows` is false off aarch64.
    #[cfg(not(target_arch = "aarch64"))]
    Err(Error::Arch("half-precision GEMM rows need aarch64"))
}

/// PW1 of `Precision::Fp16` with its output in half precision, as PW2 reads it through
/// [`gemm_half_rows`]: `out` gets `m` rows of `b.n` halves (two to a float) in the layout
/// of [`half_tiles_floats`], each [`crate::math::f16::gelu_half`] of `sum·scale + bias`
/// (one rounding), `sum` the fp16 GEMM's ([`scalar::gemm_fp16_gelu_half`] is the
/// definition). `a` holds `m` dense rows of `b.k` floats, or with `a_half` `m` rows of
/// `b.k` halves in that layout ([`layer_norm_rows_half`]'s). Saves the f32 GELU's widening
/// and PW2 rounding its input again. Errors unless [`half_rows`].
pub(crate) fn gemm_gelu_half(
    kern: Kernels,
    (a, a_half): (&[f32], bool),
    m: usize,
    b: PackedB<'_>,
    bias: &[f32],
    out: &mut [f32],
) -> Result<(), Error> {
    if !half_rows(kern, &b) {
        return Err(NO_HALF_ROWS);
    }
    let (k, n) = (b.k, b.n);
    let a_len = if a_half {
        half_tiles_len(Buffer::Activation, m, k)?
    } else {
        m.checked_mul(k).ok_or(Error::Overflow {
            buffer: Buffer::Activation,
        })?
    };
    check_len(Buffer::Activation, a_len, a.len())?;
    check_len(
        Buffer::Output,
        half_tiles_len(Buffer::Output, m, n)?,
        out.len(),
    )?;
    let epi = Epilogue::BiasGelu(bias);
    epi.check(n)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    #[cfg(target_arch = "aarch64")]
    {
        let g = dense_args(a, m, &b, epi, out.as_mut_ptr(), n);
        // SAFETY: `half_rows` holds: the token proves NEON and FEAT_FP16 and `k <= WIDE_K`;
        // every length behind `g` and `b` is checked above (`out` holds the layout's halves
        // for `m` rows of `n`).
        unsafe {
            use aarch64_neon::gemm_fp16_gelu_half as run;
            match (b.data, a_half) {
                (MatData::F32(d), false) => run::<_, false>(&g, d.as_ptr()),
                (MatData::F32(d), true) => run::<_, true>(&g, d.as_ptr()),
                (MatData::F16(d), false) => run::<_, false>(&g, d.as_ptr()),
                (MatData::F16(d), true) => run::<_, true>(&g, d.as_ptr()),
                (MatData::I8(d) | MatData::W8A8(d, _), false) => run::<_, false>(&g, d.as_ptr()),
                (MatData::I8(d) | MatData::W8A8(d, _), true) => run::<_, true>(&g, d.as_ptr()),
            }
        }
        Ok(())
    }
    // `half_rows` is false off aarch64.
    #[cfg(not(target_arch = "aarch64"))]
    Err(Error::Arch("half-precision GEMM rows need aarch64"))
}

fn simd_gemm_any(kern: Kernels, g: &simd::GemmArgs, data: MatData<'_>) {
    match data {
        MatData::F32(d) => simd_gemm(kern, g, d.as_ptr()),
        MatData::F16(d) => simd_gemm(kern, g, d.as_ptr()),
        MatData::I8(d) | MatData::W8A8(d, _) => simd_gemm(kern, g, d.as_ptr()),
    }
}

fn simd_gemm<W: simd::Elem>(kern: Kernels, g: &simd::GemmArgs, b: *const W) {
    // `gemm` checked every length behind the pointers in `g` and `b`; it runs the scalar path.
    leaf!(kern, gemm(g, b), ())
}

/// Floats of one zero-padded, channel-blocked QDW input row: `ceil(C/16)` blocks of
/// `(w + K - 1)` pixels of 16 channels.
pub const fn qdw_row_len(w: usize, c: usize, k: usize) -> usize {
    c.div_ceil(CBLOCK) * (w + k - 1) * CBLOCK
}

/// Writes the unpadded channels-last row `src` (`w` pixels of `c`) into the channel-blocked
/// padded row `dst` ([`qdw_row_len`] floats), leaving its padding as it is (zero). The
/// SIMD paths copy a vector at a time (a plain copy loop here cost a quarter of the QDW
/// kernel's time); every path writes the same bits.
///
/// With an fp16 token ([`crate::isa::Precision::Fp16`]) the row is half precision: each
/// value rounded to f16 (nearest even) at the same index counted in halves from `dst`'s
/// start ([`scalar::block_row_fp16`]), which is what [`qdw_row`] then reads.
pub fn block_row(
    kern: Kernels,
    src: &[f32],
    w: usize,
    c: usize,
    k: usize,
    dst: &mut [f32],
) -> Result<(), Error> {
    check_blocked_row(src, w, c, k, dst)?;
    #[cfg(target_arch = "aarch64")]
    if kern.fp16() {
        // SAFETY: an fp16 token holds NEON; the lengths are checked above (the half row
        // needs half of them).
        unsafe { aarch64_neon::block_row_half(src.as_ptr(), w, c, k, dst.as_mut_ptr().cast()) };
        return Ok(());
    }
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
///
/// With an fp16 token ([`crate::isa::Precision::Fp16`]) the rows are half precision, as
/// [`block_row`] writes them with that token, and the conv runs in half precision:
/// [`scalar::qdw_row_fp16`] defines it.
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
    #[cfg(target_arch = "aarch64")]
    if kern.fp16() {
        // SAFETY: a token with `fp16` set holds NEON and proves FEAT_FP16 (see `gemm`);
        // every length behind `args` and the taps is checked above.
        unsafe {
            match wts.taps {
                MatData::F32(t) => aarch64_neon::qdw_row_fp16(k, &args, t.as_ptr()),
                MatData::F16(t) => aarch64_neon::qdw_row_fp16(k, &args, t.as_ptr()),
                MatData::I8(t) | MatData::W8A8(t, _) => {
                    aarch64_neon::qdw_row_fp16(k, &args, t.as_ptr())
                }
            }
        }
        return Ok(());
    }
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
/// rational erf; scalar uses libm's `erff`; a token with `fp16` evaluates GELU's `g` in
/// half precision, [`crate::math::f16::gelu`]). Used by tests and by unfused baselines.
pub fn gelu_slice(kern: Kernels, x: &mut [f32]) {
    #[cfg(target_arch = "aarch64")]
    if kern.fp16() {
        // SAFETY: a token with `fp16` set holds NEON and proves FEAT_FP16 (see `gemm`); the
        // pointer and length come from a slice.
        return unsafe { aarch64_neon::gelu_fp16_slice(x.as_mut_ptr(), x.len()) };
    }
    // The pointer/length pair comes from a slice.
    leaf!(
        kern,
        gelu_slice(x.as_mut_ptr(), x.len()),
        x.iter_mut().for_each(|v| *v = crate::math::gelu_exact(*v))
    )
}

/// The rows of a LayerNorm call (`x.len() / c`), after the checks every entry point makes:
/// `c` weights and biases, and an output of at least `floats(rows, c)` floats (`found`).
/// `None` for `c = 0` (nothing to do).
fn ln_rows(
    x: &[f32],
    c: usize,
    w: &[f32],
    b: &[f32],
    found: usize,
    floats: fn(usize, usize) -> Result<usize, Error>,
) -> Result<Option<usize>, Error> {
    if c == 0 {
        return Ok(None);
    }
    check_ln_weights(c, w, b)?;
    let rows = x.len() / c;
    check_len(Buffer::Output, floats(rows, c)?, found)?;
    Ok(Some(rows))
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
    let Some(rows) = ln_rows(x, c, w, b, out.len(), |rows, c| Ok(rows * c))? else {
        return Ok(());
    };
    if kern.isa() == Isa::Scalar {
        crate::math::layer_norm_rows(&x[..rows * c], c, &w[..c], &b[..c], &mut out[..rows * c]);
        return Ok(());
    }
    ln_simd(kern, x.as_ptr(), rows, c, w, b, out.as_mut_ptr(), None);
    Ok(())
}

/// LayerNorm of one channels-last row of `w` pixels straight into the channel-blocked,
/// padded QDW row `dst` ([`qdw_row_len`] floats, padding left as it is): the same values
/// as [`layer_norm_rows`] followed by [`block_row`], without the intermediate row (with an
/// fp16 token, a half-precision row as [`block_row`] writes it then).
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
    let blocks = Some((pw, p));
    #[cfg(target_arch = "aarch64")]
    if kern.fp16() {
        let a = ln_args(src.as_ptr(), w, c, lw, lb, dst.as_mut_ptr(), blocks);
        // SAFETY: an fp16 token holds NEON; `check_blocked_row` and `check_ln_weights`
        // checked the lengths behind `a` (the half row needs half of them).
        unsafe { aarch64_neon::layer_norm_rows_half(&a) };
        return Ok(());
    }
    ln_simd(kern, src.as_ptr(), w, c, lw, lb, dst.as_mut_ptr(), blocks);
    Ok(())
}

/// [`layer_norm_rows`] into half-precision rows for [`gemm_half_rows`]: each value the f32
/// LayerNorm computes, rounded to f16 (nearest even), stored as the halves of `out` (two to
/// a float) in the layout of [`half_tiles_floats`]. Needs an fp16 token.
pub(crate) fn layer_norm_rows_half(
    kern: Kernels,
    x: &[f32],
    c: usize,
    w: &[f32],
    b: &[f32],
    out: &mut [f32],
) -> Result<(), Error> {
    let tiles = |rows, c| half_tiles_len(Buffer::Output, rows, c);
    let Some(rows) = ln_rows(x, c, w, b, out.len(), tiles)? else {
        return Ok(());
    };
    #[cfg(target_arch = "aarch64")]
    if kern.fp16() {
        let a = ln_args(x.as_ptr(), rows, c, w, b, out.as_mut_ptr(), None);
        // SAFETY: an fp16 token holds NEON; the lengths behind `a` are checked above.
        unsafe { aarch64_neon::layer_norm_rows_half(&a) };
        return Ok(());
    }
    let _ = (kern, rows);
    Err(Error::Arch("half-precision rows need an fp16 token"))
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
    let a = ln_args(xp, rows, c, w, b, op, blocks);
    // The callers checked `rows·c` floats behind `xp` (and the output layout's behind `op`)
    // and `c` behind `w` and `b`; they run the scalar path.
    leaf!(kern, layer_norm_rows(&a), ())
}

fn ln_args(
    xp: *const f32,
    rows: usize,
    c: usize,
    w: &[f32],
    b: &[f32],
    op: *mut f32,
    blocks: Option<(usize, usize)>,
) -> simd::LnArgs {
    simd::LnArgs {
        x: xp,
        rows,
        c,
        w: w.as_ptr(),
        b: b.as_ptr(),
        eps: crate::math::LN_EPS,
        out: op,
        blocks,
    }
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
