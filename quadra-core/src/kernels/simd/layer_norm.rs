//! LayerNorm over channels, several rows at a time, into channels-last or blocked rows.

use super::{ld_any, st_any, Simd};
use crate::kernels::CBLOCK;

/// Raw form of one LayerNorm call (see `kernels::layer_norm_rows`).
pub(crate) struct LnArgs {
    pub x: *const f32,
    pub rows: usize,
    pub c: usize,
    pub w: *const f32,
    pub b: *const f32,
    pub eps: f32,
    pub out: *mut f32,
    /// `None`: channels-last output. `Some((pw, p))`: a channel-blocked QDW row padded to
    /// `pw` pixels, row `r` at padded pixel `p + r` (see `kernels::block_row`).
    pub blocks: Option<(usize, usize)>,
}

/// LayerNorm of `rows` consecutive channel vectors of length `c` (two-pass mean and biased
/// variance, as the scalar reference), written as `a.blocks` says.
///
/// # Safety
/// `x` valid for `rows·c` floats, `out` for as many (or for `ceil(c/16)·pw·16` when
/// blocked, with `p + rows <= pw`), `w` and `b` for `c`.
#[inline(always)]
pub(crate) unsafe fn layer_norm_rows<S: Simd>(a: &LnArgs) {
    // SAFETY: the caller's contract.
    unsafe { ln_all::<S, false>(a) }
}

/// [`layer_norm_rows`] into half-precision rows (`a.out` then points at halves): blocked
/// (`a.blocks` set; the QDW's rows, see `kernels::neon_fp16_qdw`) or channels-last (the
/// pointwise GEMM's input rows); each value rounded to f16 as it is stored.
///
/// # Safety
/// As [`layer_norm_rows`], `out` valid for `rows·c` halves, or `ceil(c/16)·pw·16` blocked.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
pub(crate) unsafe fn layer_norm_rows_half<S: Simd>(a: &LnArgs) {
    // SAFETY: the caller's contract.
    unsafe { ln_all::<S, true>(a) }
}

#[inline(always)]
unsafe fn ln_all<S: Simd, const HALF: bool>(a: &LnArgs) {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        let (rows, c) = (a.rows, a.c);
        let inv_n = 1.0 / c as f32;
        // Four rows at a time, interleaved in program order: one row is a chain of two
        // horizontal sums, a square root and a division (~90 cycles at C = 16), and the
        // out-of-order window alone overlapped too few of them.
        let mut r = 0;
        while r + 4 <= rows {
            ln_rows::<S, 4, HALF>(a, r, inv_n);
            r += 4;
        }
        while r < rows {
            ln_rows::<S, 1, HALF>(a, r, inv_n);
            r += 1;
        }
    }
}

/// Rows `r0..r0 + R` of [`layer_norm_rows`], each computed exactly as alone.
#[inline(always)]
unsafe fn ln_rows<S: Simd, const R: usize, const HALF: bool>(a: &LnArgs, r0: usize, inv_n: f32) {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        let LnArgs {
            x,
            c,
            w,
            b,
            eps,
            out,
            blocks,
            ..
        } = *a;
        let xr: [*const f32; R] = core::array::from_fn(|j| x.add((r0 + j) * c));
        let mut acc = [S::zero(); R];
        each_vector!(S, c, |i, n| {
            for j in 0..R {
                acc[j] = S::add(acc[j], ld_any::<S>(xr[j].add(i), n));
            }
        });
        let mv: [S::V; R] = core::array::from_fn(|j| S::splat(S::reduce_add(acc[j]) * inv_n));
        let mut acc = [S::zero(); R];
        each_vector!(S, c, |i, n| {
            for j in 0..R {
                // Lanes past `n` load as zero; mask them out of the squared deviations.
                let d = S::sub(ld_any::<S>(xr[j].add(i), n), mv[j]);
                let d = if n == S::LANES {
                    d
                } else {
                    S::mul(d, ld_any::<S>(ONES.as_ptr(), n))
                };
                acc[j] = S::fmadd(d, d, acc[j]);
            }
        });
        // In-register square root: libm's `sqrtf` is legacy-SSE inline assembly, and running
        // it with dirty upper vector state costs hundreds of cycles per row. The R rows'
        // `var + eps` share one vector (R <= LANES; the other lanes 1), so they take one
        // square root and one division: each was a scalar one per row, on the A76 model's
        // one non-pipelined divide unit 7 cycles apiece (56 per four rows). Both are
        // correctly rounded in every lane, so each row's value is what it was alone.
        let rstd: [S::V; R] = {
            let mut v = [1.0f32; 16];
            for (j, a) in acc.iter().enumerate() {
                v[j] = S::reduce_add(*a) * inv_n + eps;
            }
            S::store(
                v.as_mut_ptr(),
                S::div(S::splat(1.0), S::sqrt(S::load(v.as_ptr()))),
            );
            core::array::from_fn(|j| S::splat(v[j]))
        };
        // Row `r0 + j`'s output for channels `i..` is `j·step` floats past row `r0`'s at `o`.
        macro_rules! normalise {
            ($i:expr, $n:expr, $o:expr, $step:expr) => {
                normalise!($i, $n, $o, $step, st_any::<S>)
            };
            ($i:expr, $n:expr, $o:expr, $step:expr, $store:expr) => {{
                let (i, n, o) = ($i, $n, $o);
                let (wv, bv) = (ld_any::<S>(w.add(i), n), ld_any::<S>(b.add(i), n));
                for j in 0..R {
                    let d = S::mul(S::sub(ld_any::<S>(xr[j].add(i), n), mv[j]), rstd[j]);
                    $store(o.add(j * $step), S::fmadd(d, wv, bv), n);
                }
            }};
        }
        // The layout decided once, outside the loops. Blocked: channel `i` of row `r` at
        // `((i/CBLOCK)·pw + p + r)·CBLOCK + i%CBLOCK` (LANES divides CBLOCK: a vector never
        // straddles two blocks).
        if HALF {
            // Eight channels a step where whole (two vectors of four, rounded into one store
            // of eight halves, `S::store_half2`: 0.85 cycles per value in the A76 model
            // against 1.26 a vector at a time), the rest a vector at a time. Eight
            // channels from a multiple of 8 lie in one channel block and one k-block.
            let pairs = if 2 * S::LANES == 8 { c - c % 8 } else { 0 };
            macro_rules! normalise8 {
                ($i:expr, $o:expr, $step:expr) => {{
                    let (i, o) = ($i, $o);
                    let (w0, w1) = (S::load(w.add(i)), S::load(w.add(i + S::LANES)));
                    let (b0, b1) = (S::load(b.add(i)), S::load(b.add(i + S::LANES)));
                    for j in 0..R {
                        let x = xr[j].add(i);
                        let d0 = S::mul(S::sub(S::load(x), mv[j]), rstd[j]);
                        let d1 = S::mul(S::sub(S::load(x.add(S::LANES)), mv[j]), rstd[j]);
                        S::store_half2(
                            o.add(j * $step),
                            S::fmadd(d0, w0, b0),
                            S::fmadd(d1, w1, b1),
                        );
                    }
                }};
            }
            let out = out.cast::<u16>();
            match blocks {
                Some((pw, p)) => {
                    let at = |i: usize| ((i / CBLOCK) * pw + p + r0) * CBLOCK + i % CBLOCK;
                    let mut i = 0;
                    while i < pairs {
                        normalise8!(i, out.add(at(i)), CBLOCK);
                        i += 8;
                    }
                    each_vector!(S, c - pairs, |i, n| {
                        normalise!(pairs + i, n, out.add(at(pairs + i)), CBLOCK, S::store_half)
                    })
                }
                // The fp16 GEMM's layout (`kernels::half_tiles_at`): rows in groups of
                // four, each group's k-blocks of eight halves row by row. `r0` is a multiple
                // of 4 when R = 4, so the rows are 8 halves apart; a vector (LANES divides
                // 8) lies in one k-block.
                None => {
                    let at = |i: usize| crate::kernels::half_tiles_at(r0, i, c);
                    let mut i = 0;
                    while i < pairs {
                        normalise8!(i, out.add(at(i)), 8);
                        i += 8;
                    }
                    each_vector!(S, c - pairs, |i, n| {
                        normalise!(pairs + i, n, out.add(at(pairs + i)), 8, S::store_half)
                    })
                }
            }
            return;
        }
        match blocks {
            None => each_vector!(S, c, |i, n| normalise!(i, n, out.add(r0 * c + i), c)),
            Some((pw, p)) => each_vector!(S, c, |i, n| {
                normalise!(
                    i,
                    n,
                    out.add(((i / CBLOCK) * pw + p + r0) * CBLOCK + i % CBLOCK),
                    CBLOCK
                )
            }),
        }
    }
}

/// Sixteen ones, for masking a partial vector.
static ONES: [f32; 16] = [1.0; 16];
