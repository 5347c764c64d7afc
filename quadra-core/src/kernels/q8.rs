//! int8 compute for the pointwise GEMMs (the `w8a8` dtype): activations quantised per row
//! (one scale per pixel), int8 × int8 products summed exactly in int32, and the f32
//! epilogue of [`super::gemm`] applied while the tile is still hot.
//!
//! The contract, which [`quantize_rows_ref`] and [`gemm_q8_ref`] define and every ISA
//! reproduces bit for bit in its integers:
//!
//! * **Quantise** a row `x` of `k` floats: `amax = max|x|`, `scale = amax / 127`,
//!   `q = clamp(rint(x · (127 / amax)), -127, 127)` (round half to even), `sum = Σ q`. A row
//!   of zeros gets scale 0, and so does one whose `127 / amax` overflows (`amax` below
//!   about 3.7e-37); a row holding a NaN or an infinity gets scale NaN, so every
//!   output computed from it is NaN rather than silently finite (its int8 values are then
//!   unspecified: the ISAs' clamps treat NaN differently).
//! * **Multiply**: `acc[i][j] = Σ_kk q[i][kk] · B[kk][j]`, exact in int32 for every `k` the
//!   architecture allows (`|acc| <= 131072 · 127 · 127 < 2^31`). Weights must lie in
//!   `-127..=127` (symmetric quantisation never gives -128, and loading a w8a8 file checks
//!   it): the AVX2 path relies on it.
//! * **Epilogue**: `v = ((acc as f32) · scale[i]) · colscale[j]`, then the [`Epilogue`]
//!   exactly as the f32 GEMM applies it to its `Σ a·b` (bias, GELU, layer scale, residual).
//!
//! How each ISA gets the exact int32 sums:
//!
//! | path | instruction | scheme |
//! |---|---|---|
//! | AVX-512 VNNI | `vpdpbusd` (64 MACs) | weights offset to u8 (`b ^ 0x80` = `b + 128`) on load, activations s8 broadcast from memory; the accumulators start at `-128 · Σ q`, so the offset cancels (wrapping int32 arithmetic is exact modulo 2^32, and the true sum fits) |
//! | AVX-VNNI (`avx2+vnni`) | `vpdpbusd ymm` (32 MACs) | the AVX-512 VNNI scheme at 256 bits; tested here through its EVEX twin ([`gemm_q8_vnni_ymm`]), the same tiles in the AVX-512 VL encoding |
//! | AVX2 (and AVX-512 without VNNI), `128 <= k <= 512` | `vpmaddwd` (16 MACs) | each 16-column weight panel sign-extended to i16 once per call (a stack copy), the four activations of a k-group sign-extended and broadcast; i16 x i16 pairs are exact in i32 |
//! | AVX2, other `k` | `vpmaddubsw` + `vpmaddwd` (32 MACs) | the sign moves onto the weights: `|a|` (u8, at most 127) times `b · sign(a)` (s8, at most 127 in magnitude), so a pair sums to at most `2 · 127 · 127 = 32258` and never saturates (with u8 `a + 128` it would); `vpmaddwd` by ones widens the pairs to int32 |
//! | NEON + DotProd | `sdot` (16 MACs) | s8 · s8 directly |
//! | NEON | `smull` + `addp` + `sadalp` | i8 · i8 products in i16, pairs added in i16 (`|2 · 127 · 128| < 2^15`), widened into i32 |
//!
//! The weights are stored in the dot-product layout ([`PackedB::dot_index`]): four
//! consecutive `kk` of a column side by side, so one 32-bit lane of a vector holds what
//! one `vpdpbusd`/`sdot` lane consumes.

use super::simd::{self, EpiPtrs, Simd, TILE_COLS};
use super::{check_len, check_strided, Epilogue, Kernels, MatMut, PackedB, PANEL};
use crate::error::{Buffer, Error};
use crate::isa::Isa;
use crate::pad::vec_pad;

/// Largest inner dimension of an int8 GEMM: the int32 sums stay exact up to here.
pub const MAX_K: usize = 1 << 17;

/// Scratch floats for `rows` quantised rows of `cols` ([`rows_in`]): the scales, the sums,
/// and the int8 values four to a float.
pub const fn scratch_len(rows: usize, cols: usize) -> usize {
    2 * vec_pad(rows) + vec_pad((rows * cols).div_ceil(4))
}

/// Carves [`QRowsMut`] for `rows x cols` out of f32 scratch (at least
/// [`scratch_len`]`(rows, cols)` floats).
pub fn rows_in(buf: &mut [f32], rows: usize, cols: usize) -> Result<QRowsMut<'_>, Error> {
    let n = dense_len(Buffer::Scratch, rows, cols)?;
    // An upper bound of `scratch_len` (padding adds less than VEC_ALIGN a region): if it
    // does not overflow, neither does `scratch_len`.
    (rows.checked_add(crate::pad::VEC_ALIGN))
        .and_then(|r| r.checked_mul(2))
        .and_then(|r| r.checked_add(n.div_ceil(4) + crate::pad::VEC_ALIGN))
        .ok_or(Error::Overflow {
            buffer: Buffer::Scratch,
        })?;
    check_len(Buffer::Scratch, scratch_len(rows, cols), buf.len())?;
    let (scales, rest) = buf.split_at_mut(vec_pad(rows));
    let (sums, rest) = rest.split_at_mut(vec_pad(rows));
    let q = &mut rest[..vec_pad((rows * cols).div_ceil(4))];
    // SAFETY: i32 has the size and alignment of f32 and every bit pattern of either is a
    // valid value of the other; the new slice covers exactly the floats of `sums`, whose
    // borrow it takes over.
    let sums = unsafe { core::slice::from_raw_parts_mut(sums.as_mut_ptr().cast::<i32>(), rows) };
    // SAFETY: i8 has alignment 1 and every bit pattern is valid; `rows·cols <= 4·q.len()`
    // bytes lie inside `q`, whose borrow the new slice takes over.
    let q = unsafe { core::slice::from_raw_parts_mut(q.as_mut_ptr().cast::<i8>(), rows * cols) };
    Ok(QRowsMut {
        q,
        scales: &mut scales[..rows],
        sums,
        rows,
        cols,
    })
}

/// Quantised activation rows (dense, `rows x cols`), their scales and their sums.
#[derive(Clone, Copy, Debug)]
pub struct QRows<'a> {
    /// `rows · cols` int8 values, row-major.
    pub q: &'a [i8],
    /// Per-row scale (`max|x| / 127`).
    pub scales: &'a [f32],
    /// Per-row sum of `q`.
    pub sums: &'a [i32],
    /// Rows.
    pub rows: usize,
    /// Columns (the GEMM's inner dimension).
    pub cols: usize,
}

/// The mutable counterpart of [`QRows`], written by [`quantize_rows`].
#[derive(Debug)]
pub struct QRowsMut<'a> {
    /// `rows · cols` int8 values, row-major.
    pub q: &'a mut [i8],
    /// Per-row scale.
    pub scales: &'a mut [f32],
    /// Per-row sum of `q`.
    pub sums: &'a mut [i32],
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
}

impl QRowsMut<'_> {
    /// The read-only view.
    pub fn as_ref(&self) -> QRows<'_> {
        QRows {
            q: self.q,
            scales: self.scales,
            sums: self.sums,
            rows: self.rows,
            cols: self.cols,
        }
    }

    fn check(&self) -> Result<(), Error> {
        check_len(
            Buffer::Scratch,
            dense_len(Buffer::Scratch, self.rows, self.cols)?,
            self.q.len(),
        )?;
        check_len(Buffer::Scratch, self.rows, self.scales.len())?;
        check_len(Buffer::Scratch, self.rows, self.sums.len())
    }
}

impl QRows<'_> {
    fn check(&self) -> Result<(), Error> {
        check_len(
            Buffer::Activation,
            dense_len(Buffer::Activation, self.rows, self.cols)?,
            self.q.len(),
        )?;
        check_len(Buffer::Activation, self.rows, self.scales.len())?;
        check_len(Buffer::Activation, self.rows, self.sums.len())
    }
}

/// `rows · cols`, or [`Error::Overflow`] (a wrapped product would pass a length check).
fn dense_len(buffer: Buffer, rows: usize, cols: usize) -> Result<usize, Error> {
    rows.checked_mul(cols).ok_or(Error::Overflow { buffer })
}

/// The scale and inverse scale of a row from its `max|x|` and whether it held a NaN or an
/// infinity: `(amax / 127, 127 / amax)`, `(0, 0)` for zeros, `(NaN, 0)` if not finite.
/// A row whose `amax` is so small (below `127 / f32::MAX`, about 3.7e-37) that `127 / amax`
/// overflows counts as zeros: an infinite inverse would turn its zeros into `0 · inf` = NaN,
/// which each ISA's clamp maps differently.
#[inline(always)]
pub(crate) fn row_scale(amax: f32, finite: bool) -> (f32, f32) {
    if !finite || !amax.is_finite() {
        (f32::NAN, 0.0)
    } else if amax == 0.0 || !(127.0 / amax).is_finite() {
        (0.0, 0.0)
    } else {
        (amax / 127.0, 127.0 / amax)
    }
}

/// Reference quantisation of one row (see the module docs); returns `(scale, sum)`.
pub fn quantize_row_ref(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let (scale, inv) = row_scale(amax, x.iter().all(|v| v.is_finite()));
    let mut sum = 0i32;
    for (o, &v) in q.iter_mut().zip(x) {
        let r = libm::rintf(v * inv).clamp(-127.0, 127.0) as i32;
        *o = r as i8;
        sum += r;
    }
    (scale, sum)
}

/// Reference [`quantize_rows`].
pub fn quantize_rows_ref(a: &[f32], lda: usize, out: &mut QRowsMut<'_>) {
    let (m, k) = (out.rows, out.cols);
    for i in 0..m {
        let (s, sum) = quantize_row_ref(&a[i * lda..i * lda + k], &mut out.q[i * k..(i + 1) * k]);
        out.scales[i] = s;
        out.sums[i] = sum;
    }
}

/// Quantises the `rows x cols` f32 rows of `a` (row `i` at `a[i·lda..]`) into `out`.
pub fn quantize_rows(
    kern: Kernels,
    a: &[f32],
    lda: usize,
    out: &mut QRowsMut<'_>,
) -> Result<(), Error> {
    out.check()?;
    let (m, k) = (out.rows, out.cols);
    if lda < k {
        return Err(Error::Length {
            buffer: Buffer::Activation,
            expected: k,
            found: lda,
        });
    }
    check_strided(Buffer::Activation, m, k, lda, a.len())?;
    if m == 0 {
        return Ok(());
    }
    let q = QuantArgs {
        a: a.as_ptr(),
        lda,
        m,
        k,
        q: out.q.as_mut_ptr(),
        scales: out.scales.as_mut_ptr(),
        sums: out.sums.as_mut_ptr(),
    };
    // Every length behind `q` checked above.
    leaf!(kern, quantize_rows(&q), quantize_rows_ref(a, lda, out));
    Ok(())
}

/// The largest inverse scale [`quantize_rows_half`] multiplies by in half precision (f16's
/// largest finite value): rows whose `127 / max|x|` is larger (`max|x|` under about 0.0019)
/// are quantised in f32.
const HALF_INV_MAX: f32 = 65504.0;

/// 1536 in f16: `round_f16(y + 1536)` for `|y| < 512` is 1536 plus `y` rounded to an
/// integer, ties to even (f16's step is 1 in [1024, 2048)).
pub(crate) const MAGIC_1536: u16 = 0x6600;

/// Reference quantisation of one row of halves ([`quantize_rows_half`]); returns
/// `(scale, sum)`. `max|x|` and the scale as [`quantize_row_ref`]'s on the halves' values;
/// then, where `0 < inv <= 65504`, each value is `round_f16(x · round_f16(inv) + 1536) −
/// 1536`: the exact product rounded once to the nearest integer (ties to even; it is within
/// 127.13, so the clamp to ±127 is a no-op); otherwise as [`quantize_row_ref`] in f32. The
/// int8 values of a row with a NaN or an infinity are unspecified (its scale is NaN).
pub fn quantize_row_half_ref(x: &[u16], q: &mut [i8]) -> (f32, i32) {
    use crate::math::f16;
    let xf = || x.iter().map(|&h| f16::to_f64(h) as f32);
    let amax = xf().fold(0.0f32, |m, v| m.max(v.abs()));
    let (scale, inv) = row_scale(amax, xf().all(|v| v.is_finite()));
    let mut sum = 0i32;
    let half = inv > 0.0 && inv <= HALF_INV_MAX;
    let inv16 = f16::from_f64(f64::from(inv));
    for (o, (&h, v)) in q.iter_mut().zip(x.iter().zip(xf())) {
        let p = if half {
            (f16::to_f64(f16::fma(h, inv16, MAGIC_1536)) - 1536.0) as f32
        } else {
            v * inv
        };
        let r = libm::rintf(p).clamp(-127.0, 127.0) as i32;
        *o = r as i8;
        sum += r;
    }
    (scale, sum)
}

/// Quantises `out.rows` rows of `out.cols` halves (`h`: dense, two halves to a float, as
/// [`gemm_q8_gelu_half`] writes them) into `out`, in half precision where the row's scale
/// allows ([`quantize_row_half_ref`] is the definition): PW2's input in a w8a8 model with
/// `Precision::Fp16`. Needs an fp16 token.
pub(crate) fn quantize_rows_half(
    kern: Kernels,
    h: &[f32],
    out: &mut QRowsMut<'_>,
) -> Result<(), Error> {
    out.check()?;
    let (m, k) = (out.rows, out.cols);
    let halves = dense_len(Buffer::Activation, m, k)?;
    check_len(Buffer::Activation, halves.div_ceil(2), h.len())?;
    if !kern.fp16() {
        return Err(Error::Arch("half-precision rows need an fp16 token"));
    }
    if m == 0 {
        return Ok(());
    }
    #[cfg(target_arch = "aarch64")]
    {
        let q = QuantArgs {
            a: h.as_ptr(),
            lda: k,
            m,
            k,
            q: out.q.as_mut_ptr(),
            scales: out.scales.as_mut_ptr(),
            sums: out.sums.as_mut_ptr(),
        };
        // SAFETY: an fp16 token proves NEON and FEAT_FP16; every length behind `q` is
        // checked above (`q.a` holds `m·k` halves).
        unsafe { super::aarch64_neon::quantize_rows_half(&q) };
        Ok(())
    }
    #[cfg(not(target_arch = "aarch64"))]
    Err(Error::Arch("half-precision rows need aarch64"))
}

/// Reference [`gemm_q8_gelu_half`]: the int32 sums of [`gemm_q8_i32_ref`], then
/// `gelu_half(fma(sum·row_scale, col_scale, bias))` ([`crate::math::f16::gelu_half`]) as
/// halves, row `i` at half `i·n` of `out`.
pub fn gemm_q8_gelu_half_ref(a: QRows<'_>, b: PackedB<'_>, bias: &[f32], out: &mut [f32]) {
    let (m, n, cs) = (a.rows, b.n(), b.scales());
    for i in 0..m {
        for j in 0..n {
            let acc = dot_ref(&a, &b, i, j);
            let x = libm::fmaf(acc as f32 * a.scales[i], cs[j], bias[j]);
            super::scalar::set_half(out, i * n + j, crate::math::f16::gelu_half(x));
        }
    }
}

/// PW1 of a w8a8 model with `Precision::Fp16`: [`gemm_q8`] with a `BiasGelu` epilogue whose
/// GELU runs all in half precision after rounding its input and writes halves, `out`
/// getting `m` dense rows of `b.n` halves (two to a float), PW2's input for
/// [`quantize_rows_half`] ([`gemm_q8_gelu_half_ref`] is the definition). Needs an fp16 token.
pub(crate) fn gemm_q8_gelu_half(
    kern: Kernels,
    a: QRows<'_>,
    b: PackedB<'_>,
    bias: &[f32],
    out: &mut [f32],
) -> Result<(), Error> {
    check_q8(&a, &b)?;
    let (m, n) = (a.rows, b.n());
    check_len(
        Buffer::Output,
        dense_len(Buffer::Output, m, n)?.div_ceil(2),
        out.len(),
    )?;
    Epilogue::BiasGelu(bias).check(n)?;
    if !kern.fp16() {
        return Err(Error::Arch("half-precision rows need an fp16 token"));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    #[cfg(target_arch = "aarch64")]
    {
        let g = Q8Args::new(
            &a,
            &b,
            Q8Out::Half {
                out: out.as_mut_ptr().cast(),
                ldo: n,
                bias: bias.as_ptr(),
            },
        );
        dispatch(Leaf::Token(kern), &g);
        Ok(())
    }
    // An fp16 token exists on aarch64 only.
    #[cfg(not(target_arch = "aarch64"))]
    Err(Error::Arch("half-precision rows need aarch64"))
}

/// `Σ_kk q[i][kk]·B[kk][j]`, exactly: the references' int32 sum of row `i`, column `j`.
fn dot_ref(a: &QRows<'_>, b: &PackedB<'_>, i: usize, j: usize) -> i32 {
    let k = a.cols;
    (0..k)
        .map(|kk| a.q[i * k + kk] as i32 * b.get(kk, j) as i32)
        .sum()
}

/// Reference int32 product `acc[i][j] = Σ q[i][kk]·B[kk][j]` (dense `m x n` output).
pub fn gemm_q8_i32_ref(a: QRows<'_>, b: PackedB<'_>, out: &mut [i32]) {
    let (m, n) = (a.rows, b.n());
    for i in 0..m {
        for j in 0..n {
            let acc = dot_ref(&a, &b, i, j);
            out[i * n + j] = acc;
        }
    }
}

/// Reference [`gemm_q8`]: the int32 sums of [`gemm_q8_i32_ref`], then the epilogue in the
/// order the module docs give.
pub fn gemm_q8_ref(a: QRows<'_>, b: PackedB<'_>, epi: Epilogue<'_>, out: &mut [f32], ldo: usize) {
    let (m, n, cs) = (a.rows, b.n(), b.scales());
    for i in 0..m {
        for j in 0..n {
            let acc = dot_ref(&a, &b, i, j);
            let v = (acc as f32 * a.scales[i]) * cs[j];
            let o = &mut out[i * ldo + j];
            *o = epi.apply(j, v, *o);
        }
    }
}

fn check_q8(a: &QRows<'_>, b: &PackedB<'_>) -> Result<(), Error> {
    a.check()?;
    if !b.is_dot() {
        return Err(Error::Arch(
            "the int8 GEMM needs w8a8 weights packed in the dot-product layout",
        ));
    }
    if a.cols != b.k() {
        return Err(Error::Length {
            buffer: Buffer::Activation,
            expected: b.k(),
            found: a.cols,
        });
    }
    if b.k() > MAX_K {
        return Err(Error::Arch("int8 GEMM inner dimension above 131072"));
    }
    Ok(())
}

/// `out = epilogue(int8 A · int8 B)` (see the module docs): `a` quantised by
/// [`quantize_rows`], `b` in the dot-product layout.
pub fn gemm_q8(
    kern: Kernels,
    a: QRows<'_>,
    b: PackedB<'_>,
    epi: Epilogue<'_>,
    out: MatMut<'_>,
) -> Result<(), Error> {
    run_f32(Leaf::Token(kern), a, b, epi, out)
}

/// The int32 sums alone (`out` dense `m x n`): what every ISA must agree on bit for bit.
pub fn gemm_q8_i32(
    kern: Kernels,
    a: QRows<'_>,
    b: PackedB<'_>,
    out: &mut [i32],
) -> Result<(), Error> {
    run_i32(Leaf::Token(kern), a, b, out)
}

/// [`gemm_q8`] on the 256-bit VNNI tiles of the AVX-VNNI leaf, compiled for the EVEX
/// (AVX-512 VL) encoding of the same `vpdpbusd`: the AVX-VNNI arithmetic, tested and
/// measured on AVX-512 VNNI CPUs, which do not have AVX-VNNI itself. Test and bench support.
///
/// # Safety
/// The CPU must have AVX-512F, VL, BW and VNNI, and AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[doc(hidden)]
pub unsafe fn gemm_q8_vnni_ymm(
    a: QRows<'_>,
    b: PackedB<'_>,
    epi: Epilogue<'_>,
    out: MatMut<'_>,
) -> Result<(), Error> {
    run_f32(Leaf::VnniYmm, a, b, epi, out)
}

/// [`gemm_q8_i32`] on the EVEX twin of the AVX-VNNI tiles (see [`gemm_q8_vnni_ymm`]).
///
/// # Safety
/// As [`gemm_q8_vnni_ymm`].
#[cfg(target_arch = "x86_64")]
#[doc(hidden)]
pub unsafe fn gemm_q8_i32_vnni_ymm(
    a: QRows<'_>,
    b: PackedB<'_>,
    out: &mut [i32],
) -> Result<(), Error> {
    run_i32(Leaf::VnniYmm, a, b, out)
}

/// Which int8 GEMM runs: the one a kernel token selects, or the EVEX twin of the
/// AVX-VNNI tiles (whose callers promise the CPU features, see [`gemm_q8_vnni_ymm`]).
#[derive(Clone, Copy)]
enum Leaf {
    Token(Kernels),
    #[cfg(target_arch = "x86_64")]
    VnniYmm,
}

impl Leaf {
    fn is_scalar(self) -> bool {
        matches!(self, Leaf::Token(k) if k.isa() == Isa::Scalar)
    }
}

fn run_f32(
    leaf: Leaf,
    a: QRows<'_>,
    b: PackedB<'_>,
    epi: Epilogue<'_>,
    out: MatMut<'_>,
) -> Result<(), Error> {
    check_q8(&a, &b)?;
    let (m, n) = (a.rows, b.n());
    super::check_out(&out, m, n)?;
    epi.check(n)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if leaf.is_scalar() {
        gemm_q8_ref(a, b, epi, out.data, out.stride);
        return Ok(());
    }
    let g = Q8Args::new(
        &a,
        &b,
        Q8Out::F32 {
            out: out.data.as_mut_ptr(),
            ldo: out.stride,
            epi: EpiPtrs::new(epi),
        },
    );
    dispatch(leaf, &g);
    Ok(())
}

fn run_i32(leaf: Leaf, a: QRows<'_>, b: PackedB<'_>, out: &mut [i32]) -> Result<(), Error> {
    check_q8(&a, &b)?;
    let (m, n) = (a.rows, b.n());
    check_len(Buffer::Output, m * n, out.len())?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if leaf.is_scalar() {
        gemm_q8_i32_ref(a, b, out);
        return Ok(());
    }
    let g = Q8Args::new(
        &a,
        &b,
        Q8Out::I32 {
            out: out.as_mut_ptr(),
            ldo: n,
        },
    );
    dispatch(leaf, &g);
    Ok(())
}

fn dispatch(leaf: Leaf, g: &Q8Args) {
    let kern = match leaf {
        Leaf::Token(k) => k,
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the callers of `gemm_q8_vnni_ymm` / `gemm_q8_i32_vnni_ymm` promise
        // AVX-512F/VL/BW/VNNI with AVX2, FMA and F16C; lengths checked by `run_*`.
        Leaf::VnniYmm => return unsafe { super::x86_avx2::gemm_q8_vnni_ymm(g) },
    };
    match (kern.isa(), kern.int8_dot()) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the token proves AVX2+FMA+F16C (an AVX-512 token without VNNI: AVX-512F,
        // and every AVX-512F CPU has AVX2, FMA and F16C, which `quadra-cpu` checks too);
        // `gemm_q8`/`gemm_q8_i32` checked every length behind the pointers in `g`.
        (Isa::Avx2, false) | (Isa::Avx512, false) => unsafe { super::x86_avx2::gemm_q8(g) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the token proves AVX2, FMA and F16C with AVX-VNNI; lengths checked by
        // the caller.
        (Isa::Avx2, true) => unsafe { super::x86_avx2::gemm_q8_avxvnni(g) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the token proves AVX-512F with VNNI and BW; lengths checked by the caller.
        (Isa::Avx512, true) => unsafe { super::x86_avx512::gemm_q8_vnni(g) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: the token proves NEON with FEAT_DotProd and FEAT_FP16; lengths checked by
        // the caller.
        (Isa::Neon, true) if kern.fp16() => unsafe { super::aarch64_neon::gemm_q8_sdot_fp16(g) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: the token proves NEON with FEAT_FP16; lengths checked by the caller.
        (Isa::Neon, false) if kern.fp16() => unsafe { super::aarch64_neon::gemm_q8_fp16(g) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: the token proves NEON with FEAT_DotProd; lengths checked by the caller.
        (Isa::Neon, true) => unsafe { super::aarch64_neon::gemm_q8_sdot(g) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: the token proves NEON; lengths checked by the caller.
        (Isa::Neon, false) => unsafe { super::aarch64_neon::gemm_q8(g) },
        // Scalar is handled by the callers; an ISA of another architecture cannot be held.
        _ => {}
    }
}

/// Raw form of one quantisation call, built by [`quantize_rows`] after validation.
pub(crate) struct QuantArgs {
    pub a: *const f32,
    pub lda: usize,
    pub m: usize,
    pub k: usize,
    pub q: *mut i8,
    pub scales: *mut f32,
    pub sums: *mut i32,
}

/// Quantises every row (the contract of [`quantize_rows_ref`]), a vector at a time. The
/// rounded values are integers of magnitude at most 127, so their f32 sum is exact for
/// `k <= 2^17` (below 2^24).
///
/// # Safety
/// Pointers as checked by [`quantize_rows`]; the leaf's ISA available.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn quantize<S: Simd>(g: &QuantArgs) {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        let l = S::LANES;
        for i in 0..g.m {
            let x = g.a.add(i * g.lda);
            let mut amax = S::zero();
            // `x - x` is 0 for a finite x and NaN otherwise: one NaN poisons the sum.
            let mut bad = S::zero();
            let mut c = 0;
            while c < g.k {
                let n = (g.k - c).min(l);
                let v = simd::ld_any::<S>(x.add(c), n);
                amax = S::max(amax, S::abs(v));
                bad = S::add(bad, S::sub(v, v));
                c += n;
            }
            let (scale, inv) = row_scale(S::reduce_max(amax), S::reduce_add(bad) == 0.0);
            let (inv, lo, hi) = (S::splat(inv), S::splat(-127.0), S::splat(127.0));
            let q = g.q.add(i * g.k);
            let mut sum = S::zero();
            let mut c = 0;
            while c < g.k {
                let n = (g.k - c).min(l);
                let v = simd::ld_any::<S>(x.add(c), n);
                let r = S::min(S::max(S::round_even(S::mul(v, inv)), lo), hi);
                sum = S::add(sum, r);
                if n == l {
                    S::store_i8(q.add(c), r);
                } else {
                    let mut tmp = [0i8; 16];
                    S::store_i8(tmp.as_mut_ptr(), r);
                    core::ptr::copy_nonoverlapping(tmp.as_ptr(), q.add(c), n);
                }
                c += n;
            }
            *g.scales.add(i) = scale;
            *g.sums.add(i) = S::reduce_add(sum) as i32;
        }
    }
}

/// Where an int8 GEMM's results go.
#[derive(Clone, Copy)]
pub(crate) enum Q8Out {
    /// The raw int32 sums, row `i` at `out + i·ldo`.
    I32 { out: *mut i32, ldo: usize },
    /// Dequantised and through the epilogue.
    F32 {
        out: *mut f32,
        ldo: usize,
        epi: EpiPtrs,
    },
    /// Dequantised, `+ bias` and GELU in half precision, stored as halves (row `i` at
    /// `out + i·ldo`): [`gemm_q8_gelu_half`], NEON's FEAT_FP16 leaves only.
    #[cfg(target_arch = "aarch64")]
    Half {
        out: *mut u16,
        ldo: usize,
        bias: *const f32,
    },
}

/// Raw form of one int8 GEMM, built by [`gemm_q8`] / [`gemm_q8_i32`] after validation.
pub(crate) struct Q8Args {
    pub a: *const i8,
    pub a_scales: *const f32,
    pub a_sums: *const i32,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub b: *const i8,
    pub pstride: usize,
    pub b_scales: *const f32,
    pub out: Q8Out,
}

impl Q8Args {
    fn new(a: &QRows<'_>, b: &PackedB<'_>, out: Q8Out) -> Self {
        let bp = match b.data() {
            super::MatData::I8(d) | super::MatData::W8A8(d, _) => d.as_ptr(),
            // `PackedB::new_dot` only wraps int8.
            _ => core::ptr::null(),
        };
        Q8Args {
            a: a.q.as_ptr(),
            a_scales: a.scales.as_ptr(),
            a_sums: a.sums.as_ptr(),
            m: a.rows,
            k: a.cols,
            n: b.n(),
            b: bp,
            pstride: b.panel_stride(),
            b_scales: b.scales().as_ptr(),
            out,
        }
    }
}

/// One ISA's int8 dot-product step: an accumulator vector of int32 sums for `COLS`
/// columns, fed four `kk` at a time.
///
/// # Safety
/// Only callable where the ISA is available (inside its leaf); pointers valid for the
/// bytes each method reads or writes.
pub(crate) unsafe trait Dot {
    type Acc: Copy;
    type A: Copy;
    type B: Copy;
    /// Columns one B vector covers (`4·COLS` bytes of a dot-layout panel).
    const COLS: usize;
    /// Does [`Dot::dot`] sum `(b + 128)·a`, so that the accumulators must start at
    /// `-128·Σa` ([`Dot::init`])?
    const OFFSET: bool;
    /// The accumulator at the start of a row: `v` in every column (only used with
    /// `OFFSET`), else zero.
    unsafe fn init(v: i32) -> Self::Acc;
    /// Four int8 activations of one row, ready to meet every column.
    unsafe fn bcast_a(p: *const i8) -> Self::A;
    /// `4·COLS` bytes of a dot-layout panel.
    unsafe fn load_b(p: *const i8) -> Self::B;
    /// `acc + Σ_{t<4} a[t]·b[col][t]` for each of the `COLS` columns.
    unsafe fn dot(acc: Self::Acc, a: Self::A, b: Self::B) -> Self::Acc;
    /// Does the ISA have a by-element form ([`Dot::load_a4`], [`Dot::dot_lane`]): one load
    /// of 16 activations serving four k-groups, instead of a broadcast per group?
    const LANES4: bool = false;
    /// Sixteen int8 activations of one row (four k-groups), for [`Dot::dot_lane`].
    unsafe fn load_a4(p: *const i8) -> Self::A {
        // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
        // lengths documented above) is what the body relies on.
        unsafe { Self::bcast_a(p) }
    }
    /// [`Dot::dot`] with the activations of k-group `lane` of a [`Dot::load_a4`] vector.
    unsafe fn dot_lane<const LANE: usize>(acc: Self::Acc, a: Self::A, b: Self::B) -> Self::Acc {
        // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
        // lengths documented above) is what the body relies on.
        unsafe { Self::dot(acc, a, b) }
    }
    /// Writes the `COLS` int32 sums.
    unsafe fn store(p: *mut i32, acc: Self::Acc);
    /// The ISA's vector of `COLS` floats (its `Simd::V`).
    type F: Copy;
    /// The `COLS` sums dequantised by the row scale, `(acc as f32) · scale` in each lane:
    /// the first step of the f32 epilogue, done while they are in registers.
    unsafe fn scaled(acc: Self::Acc, scale: f32) -> Self::F;
    /// Does the tile apply PW2's residual epilogue (`ScaleAdd`) from its registers where its
    /// columns are whole (`simd::residual`), rather than park the dequantised sums for
    /// [`finish`]'s epilogue? (NEON: in the A76 model the parked tile's stores and reloads
    /// were most of that epilogue's cost, which PW2 pays once per hidden slice.)
    const RESIDUAL: bool = false;
    /// The inner loop of a whole 5 x 16 tile (5 rows of four `COLS`-column vectors), `n`
    /// times sixteen steps, where the ISA has a version of its own (NEON with DotProd:
    /// assembly, `aarch64_neon::sdot_5x16`): `a`, the five rows' activations, and `b`, the
    /// tile's panel, both at the first step. Returns false, having done nothing, where not.
    unsafe fn sdot_5x16(
        _acc: &mut [[Self::Acc; 4]; 5],
        _a: [*const i8; 5],
        _b: *const i8,
        _n: usize,
    ) -> bool {
        false
    }
    /// PW2's residual epilogue of a whole 5 x 16 tile (5 rows of four `COLS`-column
    /// vectors) straight from its registers, bit for bit as [`simd::residual`] computes it,
    /// where the ISA has a version of its own (NEON: assembly,
    /// `aarch64_neon::residual_5x16`) and the inner dimension `k` suits it. Returns false,
    /// having done nothing, where not. `rs`: the 5 row scales; `cs`, `ra` (bias, or null,
    /// and gamma): 16 columns'; `out`: 5 rows of 16, `ldo` floats apart.
    unsafe fn residual_5x16(
        _acc: [[Self::Acc; 4]; 5],
        _k: usize,
        _rs: *const f32,
        _cs: *const f32,
        _ra: (*const f32, *const f32),
        _out: *mut f32,
        _ldo: usize,
    ) -> bool {
        false
    }
    /// The parking of a 5 x 16 tile for the epilogue (`tile`'s `park!`) where the ISA has a
    /// version of its own (NEON: assembly, `aarch64_neon::park_5x16`): each sum times its
    /// row's scale, `(acc as f32)·rs`, stored as f32 at `tp`, rows [`TILE_COLS`] floats
    /// apart. Returns false, having done nothing, where not.
    unsafe fn park_5x16(
        _acc: [[Self::Acc; 4]; 5],
        _k: usize,
        _rs: *const f32,
        _tp: *mut f32,
    ) -> bool {
        false
    }
    /// Is GELU's `g` evaluated in half precision in the epilogue (`Precision::Fp16`: NEON
    /// with FEAT_FP16 enabled in the leaf, `neon_fp16`)?
    const HALF_GELU: bool = false;
}

/// The int8 GEMM: column tiles of `NV` vectors (`NV·COLS` columns, whole panels) outer,
/// row tiles of `MR` rows inner, the weights of a column tile staying in L1 while the
/// activation rows stream through.
///
/// # Safety
/// Pointers as checked by [`gemm_q8`]; `D` and `S` available; `NV·COLS <= 64` and a
/// multiple of [`PANEL`].
#[inline(always)]
pub(crate) unsafe fn gemm<D: Dot, S: Simd<V = D::F>, const MR: usize, const NV: usize>(g: &Q8Args) {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        let tile_cols = NV * D::COLS;
        let mut j0 = 0;
        while j0 < g.n {
            let cols = (g.n - j0).min(tile_cols);
            // Whole panels: the stack tile then holds whole vectors of every width.
            match cols.div_ceil(PANEL) * (PANEL / D::COLS) {
                1 if NV > 1 => gemm_cols::<D, S, MR, 1>(g, j0, cols),
                2 if NV > 2 => gemm_cols::<D, S, MR, 2>(g, j0, cols),
                3 if NV > 3 => gemm_cols::<D, S, MR, 3>(g, j0, cols),
                _ => gemm_cols::<D, S, MR, NV>(g, j0, cols),
            }
            j0 += cols;
        }
    }
}

#[inline(always)]
unsafe fn gemm_cols<D: Dot, S: Simd<V = D::F>, const MR: usize, const NV: usize>(
    g: &Q8Args,
    j0: usize,
    cols: usize,
) {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        let mut i0 = 0;
        while i0 + MR <= g.m {
            tile::<D, S, MR, NV>(g, i0, j0, cols);
            i0 += MR;
        }
        if MR > 4 && i0 + 4 <= g.m {
            tile::<D, S, 4, NV>(g, i0, j0, cols);
            i0 += 4;
        }
        if MR > 2 && i0 + 2 <= g.m {
            tile::<D, S, 2, NV>(g, i0, j0, cols);
            i0 += 2;
        }
        while i0 < g.m {
            tile::<D, S, 1, NV>(g, i0, j0, cols);
            i0 += 1;
        }
    }
}

/// One `M x (NV·COLS)` tile: the int32 sums in registers over the whole inner dimension,
/// then either dequantised on their way out of the registers (straight into PW2's residual
/// where [`Dot::RESIDUAL`], else parked for the epilogue) or parked and copied out.
#[inline(always)]
unsafe fn tile<D: Dot, S: Simd<V = D::F>, const M: usize, const NV: usize>(
    g: &Q8Args,
    i0: usize,
    j0: usize,
    cols: usize,
) {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        let a: [*const i8; M] = core::array::from_fn(|i| g.a.add((i0 + i) * g.k));
        let mut acc: [[D::Acc; NV]; M] = core::array::from_fn(|i| {
            let v = if D::OFFSET {
                (*g.a_sums.add(i0 + i)).wrapping_mul(-128)
            } else {
                0
            };
            [D::init(v); NV]
        });
        // Vector `j` of this tile: column `j0 + j·COLS`, its bytes for k-group `kg` at
        // `bcol[j] + kg·64`.
        let bcol: [*const i8; NV] = core::array::from_fn(|j| {
            let col = j0 + j * D::COLS;
            g.b.add((col / PANEL) * g.pstride + (col % PANEL) * 4)
        });
        let mut kk = 0;
        if M == 5 && NV == 4 && g.k >= 16 {
            // (The identity on the 5 x 16 tile, whose 16 columns are one panel: vector `j`
            // at `bcol[0] + 16·j`.)
            let mut a5 = five_by_four(&acc);
            let rows = core::array::from_fn(|i| a[i % M]);
            if D::sdot_5x16(&mut a5, rows, bcol[0], g.k / 16) {
                acc = core::array::from_fn(|i| core::array::from_fn(|j| a5[i % 5][j % 4]));
                kk = g.k / 16 * 16;
            }
        }
        if D::LANES4 {
            // Sixteen k at a time: one activation load per row, then four k-groups by lane.
            while kk + 16 <= g.k {
                let av: [D::A; M] = core::array::from_fn(|i| D::load_a4(a[i].add(kk)));
                macro_rules! group {
                    ($lane:literal) => {{
                        let off = (kk + 4 * $lane) * PANEL;
                        let bv: [D::B; NV] = core::array::from_fn(|j| D::load_b(bcol[j].add(off)));
                        for (row, &a) in acc.iter_mut().zip(av.iter()) {
                            for (acc, &b) in row.iter_mut().zip(bv.iter()) {
                                *acc = D::dot_lane::<$lane>(*acc, a, b);
                            }
                        }
                    }};
                }
                group!(0);
                group!(1);
                group!(2);
                group!(3);
                kk += 16;
            }
        }
        while kk < g.k {
            let off = kk * PANEL;
            let bv: [D::B; NV] = core::array::from_fn(|j| D::load_b(bcol[j].add(off)));
            for (i, row) in acc.iter_mut().enumerate() {
                let av = D::bcast_a(a[i].add(kk));
                for (acc, &b) in row.iter_mut().zip(bv.iter()) {
                    *acc = D::dot(*acc, av, b);
                }
            }
            kk += 4;
        }
        let mut t = core::mem::MaybeUninit::<[[i32; TILE_COLS]; 12]>::uninit();
        let tp = t.as_mut_ptr().cast::<i32>();
        // Dequantised by the row scales on their way out of the registers, then the
        // epilogue (one pass over the parked tile rather than two).
        // (A macro: a closure borrowing `acc` made LLVM spill in the sdot loop.)
        macro_rules! park {
            ($tp:expr) => {{
                let fp = $tp.cast::<f32>();
                let whole = M == 5
                    && NV == 4
                    && D::park_5x16(five_by_four(&acc), g.k, g.a_scales.add(i0), fp);
                if !whole {
                    for (i, row) in acc.iter().enumerate() {
                        let rs = *g.a_scales.add(i0 + i);
                        for (j, v) in row.iter().enumerate() {
                            S::store(fp.add(i * TILE_COLS + j * D::COLS), D::scaled(*v, rs));
                        }
                    }
                }
                fp
            }};
        }
        if let Q8Out::F32 { out, ldo, epi } = g.out {
            if D::RESIDUAL && cols == NV * D::COLS {
                if let Some(ra) = epi.offset(j0).scale_add() {
                    // PW2's residual from the registers, the sums dequantised on the way.
                    debug_assert_eq!(D::COLS, S::LANES);
                    let out = out.add(i0 * ldo + j0);
                    let (rs, cs) = (g.a_scales.add(i0), g.b_scales.add(j0));
                    if M == 5
                        && NV == 4
                        && D::residual_5x16(five_by_four(&acc), g.k, rs, cs, ra, out, ldo)
                    {
                        return;
                    }
                    let rs: [f32; M] = core::array::from_fn(|i| *rs.add(i));
                    let v = |i: usize, j: usize| D::scaled(acc[i][j], rs[i]);
                    return simd::residual::<S, M, NV>(v, cs, ra, out, ldo);
                }
            }
            return epilogue::<S, M>(g, park!(tp), i0, j0, cols, D::HALF_GELU);
        }
        // PW1's GELU into halves (w8a8 with `Precision::Fp16`: NEON's FEAT_FP16 leaves).
        #[cfg(target_arch = "aarch64")]
        if let (true, Q8Out::Half { .. }) = (D::HALF_GELU, g.out) {
            return epilogue::<S, M>(g, park!(tp), i0, j0, cols, true);
        }
        for (i, row) in acc.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                D::store(tp.add(i * TILE_COLS + j * D::COLS), *v);
            }
        }
        finish::<S, M>(g, tp, i0, j0, cols, D::HALF_GELU);
    }
}

/// A 5 x 4 tile of accumulators: `acc` itself when `M` is 5 and `NV` 4, the only case its
/// callers use it in (other shapes give a wrapped copy, never read).
#[inline(always)]
fn five_by_four<A: Copy, const M: usize, const NV: usize>(acc: &[[A; NV]; M]) -> [[A; 4]; 5] {
    core::array::from_fn(|i| core::array::from_fn(|j| acc[i % M][j % NV]))
}

/// The end of an `M`-row tile whose int32 sums are parked at `tp` (rows [`TILE_COLS`]
/// apart, `cols` rounded up to whole vectors): copied out, or dequantised and through the
/// epilogue (with `half_gelu`, the half-precision one of `neon_fp16`). Shared by every
/// ISA's tile so the dequantisation is written once.
///
/// # Safety
/// `tp` valid for `M` rows of `cols` rounded up to `S::LANES`; rows `i0..i0+M` and
/// columns `j0..j0+cols` inside the GEMM that `g` describes; `half_gelu` only in a NEON
/// leaf with FEAT_FP16 enabled (a constant of the caller's `Dot`).
#[inline(always)]
pub(crate) unsafe fn finish<S: Simd, const M: usize>(
    g: &Q8Args,
    tp: *mut i32,
    i0: usize,
    j0: usize,
    cols: usize,
    half_gelu: bool,
) {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        match g.out {
            Q8Out::I32 { out, ldo } => {
                for i in 0..M {
                    core::ptr::copy_nonoverlapping(
                        tp.add(i * TILE_COLS),
                        out.add((i0 + i) * ldo + j0),
                        cols,
                    );
                }
            }
            Q8Out::F32 { .. } => dequantised::<S, M>(g, tp, (i0, j0, cols), half_gelu),
            #[cfg(target_arch = "aarch64")]
            Q8Out::Half { .. } => dequantised::<S, M>(g, tp, (i0, j0, cols), half_gelu),
        }
    }
}

/// The parked int32 sums of an `M`-row tile times the row scales, in place (i32 and f32
/// lanes are the same size); the f32 tile.
///
/// # Safety
/// As [`finish`].
#[inline(always)]
unsafe fn dequantise<S: Simd, const M: usize>(
    g: &Q8Args,
    tp: *mut i32,
    i0: usize,
    cols: usize,
) -> *mut f32 {
    // SAFETY: the caller's contract: `tp` holds `M` rows of `cols` rounded up to LANES.
    unsafe {
        let fp = tp.cast::<f32>();
        for i in 0..M {
            let rs = S::splat(*g.a_scales.add(i0 + i));
            let mut c = 0;
            while c < cols {
                let p = i * TILE_COLS + c;
                S::store(fp.add(p), S::mul(S::load_i32(tp.add(p)), rs));
                c += S::LANES;
            }
        }
        fp
    }
}

/// [`dequantise`], then [`epilogue`].
///
/// # Safety
/// As [`finish`].
#[inline(always)]
unsafe fn dequantised<S: Simd, const M: usize>(
    g: &Q8Args,
    tp: *mut i32,
    (i0, j0, cols): (usize, usize, usize),
    half_gelu: bool,
) {
    // SAFETY: the caller's contract.
    unsafe {
        epilogue::<S, M>(
            g,
            dequantise::<S, M>(g, tp, i0, cols),
            i0,
            j0,
            cols,
            half_gelu,
        )
    }
}

/// The f32 GEMM's epilogue (column scale, bias and the rest) over an `M`-row tile whose
/// sums, already times the row scales, are parked at `fp` (as [`finish`] lays them out).
///
/// # Safety
/// As [`finish`], with `g.out` the f32 output.
#[inline(always)]
unsafe fn epilogue<S: Simd, const M: usize>(
    g: &Q8Args,
    fp: *mut f32,
    i0: usize,
    j0: usize,
    cols: usize,
    half_gelu: bool,
) {
    // (`half_gelu` is a constant of the leaf: without it this is gone before the FEAT_FP16
    // assembly would meet a leaf that lacks the feature.)
    #[cfg(target_arch = "aarch64")]
    if let (true, Q8Out::Half { out, ldo, bias }) = (half_gelu, g.out) {
        // SAFETY: as below; `Half` comes only with the FEAT_FP16 leaves (`half_gelu`).
        unsafe {
            let (scales, bias) = (g.b_scales.add(j0), bias.add(j0));
            let out = (out, (i0, j0), ldo);
            super::neon_fp16::epilogue_gelu_half::<M, false>(fp, cols, scales, bias, out);
        }
        return;
    }
    let Q8Out::F32 { out, ldo, epi } = g.out else {
        return;
    };
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        let (scales, epi, out) = (g.b_scales.add(j0), epi.offset(j0), out.add(i0 * ldo + j0));
        #[cfg(target_arch = "aarch64")]
        if half_gelu {
            return super::neon_fp16::epilogue_fp16::<M>(fp, cols, scales, epi, out, ldo);
        }
        let _ = half_gelu;
        simd::epilogue::<S, M>(fp, cols, scales, epi, out, ldo);
    }
}
