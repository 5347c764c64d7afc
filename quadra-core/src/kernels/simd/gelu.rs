//! The exact-erf GELU: a rational erf and its vectorised use on a slice.

use super::{ld_any, st_any, Simd};
use crate::math::{ERF_CLAMP, ERF_P, ERF_Q};

/// Each erf coefficient in every lane of a vector: `Simd::addend` loads them afresh.
const fn rows<const N: usize>(c: [f32; N]) -> [[f32; 4]; N] {
    let mut r = [[0.0; 4]; N];
    let mut i = 0;
    while i < N {
        r[i] = [c[i]; 4];
        i += 1;
    }
    r
}

/// A table of coefficient rows, 64-byte aligned: each 16-byte row sits in one cache line.
#[repr(C, align(64))]
struct Rows([[f32; 4]; 12]);

/// P's coefficients, then Q's: one table, so one address.
static ERF_ROWS: Rows = Rows({
    let (p, q) = (rows(ERF_P), rows(ERF_Q));
    let mut r = [[0.0; 4]; 12];
    let mut i = 0;
    while i < 12 {
        r[i] = if i < 7 { p[i] } else { q[i - 7] };
        i += 1;
    }
    r
});

/// `erf(x) ≈ x·P(x²)/Q(x²)` on [-4, 4] (see `math::erf_rational`).
#[inline(always)]
pub(crate) unsafe fn erf<S: Simd>(x: S::V) -> S::V {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        let x = S::min(S::max(x, S::splat(-ERF_CLAMP)), S::splat(ERF_CLAMP));
        let x2 = S::mul(x, x);
        // Horner, highest coefficient first; each step's constant a fresh addend (row
        // i of ERF_ROWS is ERF_P[i], row 7 + i is ERF_Q[i]).
        macro_rules! step {
            ($acc:ident, $row:literal) => {
                $acc = S::fmadd($acc, x2, S::addend::<$row, 12>(&ERF_ROWS.0))
            };
        }
        let mut p = S::splat(ERF_P[6]);
        step!(p, 5);
        step!(p, 4);
        step!(p, 3);
        step!(p, 2);
        step!(p, 1);
        step!(p, 0);
        let mut q = S::splat(ERF_Q[4]);
        step!(q, 10);
        step!(q, 9);
        step!(q, 8);
        step!(q, 7);
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
