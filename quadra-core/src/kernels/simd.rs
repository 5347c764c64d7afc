//! The SIMD algorithms, written once over the [`Simd`] trait and monomorphised per ISA
//! inside a `#[target_feature]` leaf (`x86_avx2`, `x86_avx512`, `aarch64_neon`).
//! Everything here is `#[inline(always)]` so that it is compiled with the leaf's features.

use super::{Epilogue, PackedB, MAX_K, PANEL};
use crate::math::{ERF_CLAMP, ERF_P, ERF_Q};

/// One ISA's vector of f32 lanes.
///
/// # Safety
/// Every method may only be called where the ISA is available (inside a leaf function
/// carrying its `#[target_feature]`). Pointer arguments must be valid for the lanes
/// they touch: `LANES` for `load`/`store`, `n` for the `_n` forms.
pub(crate) unsafe trait Simd {
    type V: Copy;
    const LANES: usize;
    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// Loads `n < LANES` lanes, the rest zero.
    unsafe fn load_n(p: *const f32, n: usize) -> Self::V;
    /// Stores the first `n < LANES` lanes.
    unsafe fn store_n(p: *mut f32, v: Self::V, n: usize);
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V;
    /// `a·b + c`.
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
}

#[inline(always)]
unsafe fn ld<S: Simd, const FULL: bool>(p: *const f32, n: usize) -> S::V {
    if FULL {
        S::load(p)
    } else {
        S::load_n(p, n)
    }
}

#[inline(always)]
unsafe fn st<S: Simd, const FULL: bool>(p: *mut f32, v: S::V, n: usize) {
    if FULL {
        S::store(p, v)
    } else {
        S::store_n(p, v, n)
    }
}

#[inline(always)]
unsafe fn ld_any<S: Simd>(p: *const f32, n: usize) -> S::V {
    if n == S::LANES {
        S::load(p)
    } else {
        S::load_n(p, n)
    }
}

#[inline(always)]
unsafe fn st_any<S: Simd>(p: *mut f32, v: S::V, n: usize) {
    if n == S::LANES {
        S::store(p, v)
    } else {
        S::store_n(p, v, n)
    }
}

/// `erf(x) ≈ x·P(x²)/Q(x²)` on [-4, 4] (see `math::erf_rational`).
#[inline(always)]
pub(crate) unsafe fn erf<S: Simd>(x: S::V) -> S::V {
    let x = S::min(S::max(x, S::splat(-ERF_CLAMP)), S::splat(ERF_CLAMP));
    let x2 = S::mul(x, x);
    let mut p = S::splat(ERF_P[6]);
    let mut i = 6;
    while i > 0 {
        i -= 1;
        p = S::fmadd(p, x2, S::splat(ERF_P[i]));
    }
    let mut q = S::splat(ERF_Q[4]);
    let mut i = 4;
    while i > 0 {
        i -= 1;
        q = S::fmadd(q, x2, S::splat(ERF_Q[i]));
    }
    S::div(S::mul(x, p), q)
}

/// `0.5·x·(1 + erf(x/√2))`.
#[inline(always)]
pub(crate) unsafe fn gelu<S: Simd>(x: S::V) -> S::V {
    let e = erf::<S>(S::mul(x, S::splat(core::f32::consts::FRAC_1_SQRT_2)));
    let hx = S::mul(x, S::splat(0.5));
    S::fmadd(hx, e, hx)
}

#[inline(always)]
pub(crate) unsafe fn gelu_slice<S: Simd>(p: *mut f32, len: usize) {
    let mut i = 0;
    while i < len {
        let n = (len - i).min(S::LANES);
        let v = ld_any::<S>(p.add(i), n);
        st_any::<S>(p.add(i), gelu::<S>(v), n);
        i += n;
    }
}

/// Raw form of one QDW row call, built by `kernels::qdw_row` after validation.
pub(crate) struct QdwPtrs {
    pub rows: [*const f32; MAX_K],
    pub w: usize,
    pub c: usize,
    pub taps: *const f32,
    pub bias: *const f32,
    /// Null: store the QDW result. Non-null: `out += gamma ⊙ result`.
    pub gamma: *const f32,
    pub out: *mut f32,
}

/// One QDW output row, `P` output pixels at a time (`P` chosen per ISA to fill the register
/// file with `3P` accumulators). Taps are the outer loop; each input vector loaded feeds
/// the three filters.
#[inline(always)]
pub(crate) unsafe fn qdw_row<S: Simd, const K: usize, const P: usize>(a: &QdwPtrs) {
    let mut c0 = 0;
    while c0 + S::LANES <= a.c {
        qdw_chunk::<S, K, P, true>(a, c0, S::LANES);
        c0 += S::LANES;
    }
    if c0 < a.c {
        qdw_chunk::<S, K, P, false>(a, c0, a.c - c0);
    }
}

#[inline(always)]
unsafe fn qdw_chunk<S: Simd, const K: usize, const P: usize, const FULL: bool>(
    a: &QdwPtrs,
    c0: usize,
    nv: usize,
) {
    let mut x0 = 0;
    while x0 + P <= a.w {
        qdw_pixels::<S, K, P, FULL>(a, x0, c0, nv);
        x0 += P;
    }
    while x0 < a.w {
        qdw_pixels::<S, K, 1, FULL>(a, x0, c0, nv);
        x0 += 1;
    }
}

#[inline(always)]
unsafe fn qdw_pixels<S: Simd, const K: usize, const Q: usize, const FULL: bool>(
    a: &QdwPtrs,
    x0: usize,
    c0: usize,
    nv: usize,
) {
    let c = a.c;
    let mut acc_a = [ld::<S, FULL>(a.bias.add(c0), nv); Q];
    let mut acc_b = [ld::<S, FULL>(a.bias.add(c + c0), nv); Q];
    let mut acc_c = [ld::<S, FULL>(a.bias.add(2 * c + c0), nv); Q];
    for ky in 0..K {
        let row = a.rows[ky].add(x0 * c + c0);
        for kx in 0..K {
            let wp = a.taps.add((ky * K + kx) * 3 * c + c0);
            let wa = ld::<S, FULL>(wp, nv);
            let wb = ld::<S, FULL>(wp.add(c), nv);
            let wc = ld::<S, FULL>(wp.add(2 * c), nv);
            for q in 0..Q {
                let xv = ld::<S, FULL>(row.add((q + kx) * c), nv);
                acc_a[q] = S::fmadd(wa, xv, acc_a[q]);
                acc_b[q] = S::fmadd(wb, xv, acc_b[q]);
                acc_c[q] = S::fmadd(wc, xv, acc_c[q]);
            }
        }
    }
    let out = a.out.add(x0 * c + c0);
    if a.gamma.is_null() {
        for q in 0..Q {
            st::<S, FULL>(out.add(q * c), S::fmadd(acc_a[q], acc_b[q], acc_c[q]), nv);
        }
    } else {
        let g = ld::<S, FULL>(a.gamma.add(c0), nv);
        for q in 0..Q {
            let p = out.add(q * c);
            let y = S::fmadd(acc_a[q], acc_b[q], acc_c[q]);
            st::<S, FULL>(p, S::fmadd(g, y, ld::<S, FULL>(p, nv)), nv);
        }
    }
}

#[derive(Clone, Copy)]
enum EpiKind {
    Bias,
    Gelu,
    ScaleAdd,
}

#[derive(Clone, Copy)]
struct EpiPtrs {
    kind: EpiKind,
    bias: *const f32,
    gamma: *const f32,
}

/// `out = epi(A·B)`. Column tiles of `NV` vectors (a multiple of [`PANEL`] columns) outer,
/// row tiles of `MR` pixels inner, so a weight panel stays in L1 while A streams through.
/// `NVH` is the vector count of a single panel, used for the last tile when a tile spans
/// two panels and only one is left.
///
/// # Safety
/// The lengths checked in `kernels::gemm` must hold.
#[inline(always)]
pub(crate) unsafe fn gemm<S: Simd, const MR: usize, const NV: usize, const NVH: usize>(
    a: &[f32],
    m: usize,
    lda: usize,
    b: PackedB<'_>,
    epi: Epilogue<'_>,
    out: &mut [f32],
    ldo: usize,
) {
    let (k, n) = (b.k(), b.n());
    let tile_cols = NV * S::LANES;
    let epi = match epi {
        Epilogue::Bias(bias) => EpiPtrs {
            kind: EpiKind::Bias,
            bias: bias.as_ptr(),
            gamma: core::ptr::null(),
        },
        Epilogue::BiasGelu(bias) => EpiPtrs {
            kind: EpiKind::Gelu,
            bias: bias.as_ptr(),
            gamma: core::ptr::null(),
        },
        Epilogue::BiasScaleAdd { bias, gamma } => EpiPtrs {
            kind: EpiKind::ScaleAdd,
            bias: bias.as_ptr(),
            gamma: gamma.as_ptr(),
        },
    };
    let (ap, bp, op) = (a.as_ptr(), b.data().as_ptr(), out.as_mut_ptr());
    let pstride = k * PANEL;
    let mut j0 = 0;
    while j0 < n {
        let cols = (n - j0).min(tile_cols);
        let bt = bp.add((j0 / PANEL) * pstride);
        let e = EpiPtrs {
            bias: epi.bias.add(j0),
            gamma: if epi.gamma.is_null() {
                epi.gamma
            } else {
                epi.gamma.add(j0)
            },
            ..epi
        };
        if tile_cols > PANEL && cols <= PANEL {
            gemm_cols::<S, MR, NVH>(ap, m, lda, k, bt, pstride, cols, e, op.add(j0), ldo);
        } else {
            gemm_cols::<S, MR, NV>(ap, m, lda, k, bt, pstride, cols, e, op.add(j0), ldo);
        }
        j0 += cols;
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_cols<S: Simd, const MR: usize, const NV: usize>(
    a: *const f32,
    m: usize,
    lda: usize,
    k: usize,
    b: *const f32,
    pstride: usize,
    cols: usize,
    epi: EpiPtrs,
    out: *mut f32,
    ldo: usize,
) {
    let mut i0 = 0;
    while i0 + MR <= m {
        tile::<S, MR, NV>(
            a.add(i0 * lda),
            lda,
            k,
            b,
            pstride,
            cols,
            epi,
            out.add(i0 * ldo),
            ldo,
        );
        i0 += MR;
    }
    if MR > 4 && i0 + 4 <= m {
        tile::<S, 4, NV>(
            a.add(i0 * lda),
            lda,
            k,
            b,
            pstride,
            cols,
            epi,
            out.add(i0 * ldo),
            ldo,
        );
        i0 += 4;
    }
    if MR > 2 && i0 + 2 <= m {
        tile::<S, 2, NV>(
            a.add(i0 * lda),
            lda,
            k,
            b,
            pstride,
            cols,
            epi,
            out.add(i0 * ldo),
            ldo,
        );
        i0 += 2;
    }
    while i0 < m {
        tile::<S, 1, NV>(
            a.add(i0 * lda),
            lda,
            k,
            b,
            pstride,
            cols,
            epi,
            out.add(i0 * ldo),
            ldo,
        );
        i0 += 1;
    }
}

/// One `M x (NV·LANES)` tile: `M·NV` accumulators live in registers across the whole
/// inner dimension, then the epilogue runs on them before the single store.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<S: Simd, const M: usize, const NV: usize>(
    a: *const f32,
    lda: usize,
    k: usize,
    b: *const f32,
    pstride: usize,
    cols: usize,
    epi: EpiPtrs,
    out: *mut f32,
    ldo: usize,
) {
    let mut acc = [[S::zero(); NV]; M];
    for kk in 0..k {
        let mut bv = [S::zero(); NV];
        for (j, v) in bv.iter_mut().enumerate() {
            let col = j * S::LANES;
            *v = S::load(b.add((col / PANEL) * pstride + kk * PANEL + col % PANEL));
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let av = S::splat(*a.add(i * lda + kk));
            for (acc, &bvj) in row.iter_mut().zip(bv.iter()) {
                *acc = S::fmadd(av, bvj, *acc);
            }
        }
    }
    for j in 0..NV {
        let c0 = j * S::LANES;
        if c0 >= cols {
            break;
        }
        let nv = (cols - c0).min(S::LANES);
        let bias = ld_any::<S>(epi.bias.add(c0), nv);
        match epi.kind {
            EpiKind::Bias => {
                for (i, row) in acc.iter().enumerate() {
                    st_any::<S>(out.add(i * ldo + c0), S::add(row[j], bias), nv);
                }
            }
            EpiKind::Gelu => {
                for (i, row) in acc.iter().enumerate() {
                    let v = gelu::<S>(S::add(row[j], bias));
                    st_any::<S>(out.add(i * ldo + c0), v, nv);
                }
            }
            EpiKind::ScaleAdd => {
                let g = ld_any::<S>(epi.gamma.add(c0), nv);
                for (i, row) in acc.iter().enumerate() {
                    let p = out.add(i * ldo + c0);
                    let v = S::fmadd(g, S::add(row[j], bias), ld_any::<S>(p, nv));
                    st_any::<S>(p, v, nv);
                }
            }
        }
    }
}
