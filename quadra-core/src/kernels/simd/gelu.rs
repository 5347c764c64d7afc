//! The exact-erf GELU: a rational erf and its vectorised use on a slice.

use super::{ld_any, st_any, Simd};
use crate::math::{ERF_CLAMP, ERF_P, ERF_Q};

/// `erf(x) ≈ x·P(x²)/Q(x²)` on [-4, 4] (see `math::erf_rational`).
#[inline(always)]
pub(crate) unsafe fn erf<S: Simd>(x: S::V) -> S::V {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
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
        S::mul(S::mul(x, p), S::recip(q))
    }
}

/// `0.5·x·(1 + erf(x/√2))`.
#[inline(always)]
pub(crate) unsafe fn gelu<S: Simd>(x: S::V) -> S::V {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        let e = erf::<S>(S::mul(x, S::splat(core::f32::consts::FRAC_1_SQRT_2)));
        let hx = S::mul(x, S::splat(0.5));
        S::fmadd(hx, e, hx)
    }
}

#[inline(always)]
pub(crate) unsafe fn gelu_slice<S: Simd>(p: *mut f32, len: usize) {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        let mut i = 0;
        while i < len {
            let n = (len - i).min(S::LANES);
            let v = ld_any::<S>(p.add(i), n);
            st_any::<S>(p.add(i), gelu::<S>(v), n);
            i += n;
        }
    }
}
