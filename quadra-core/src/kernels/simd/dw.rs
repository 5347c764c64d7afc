//! The plain depthwise conv row (the unfused baseline benches compare against).

use super::{ld_any, st_any, Simd};
use crate::kernels::MAX_K;

/// Raw form of one plain depthwise-conv row (see `kernels::dw_row`).
pub(crate) struct DwArgs {
    pub rows: [*const f32; MAX_K],
    pub w: usize,
    pub c: usize,
    pub taps: *const f32,
    pub bias: *const f32,
    pub out: *mut f32,
}

/// One output row of a plain depthwise conv, `P` pixels per iteration.
#[inline(always)]
pub(crate) unsafe fn dw_row<S: Simd, const K: usize, const P: usize>(a: &DwArgs) {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        let mut c0 = 0;
        while c0 < a.c {
            let nv = (a.c - c0).min(S::LANES);
            let mut x0 = 0;
            while x0 + P <= a.w {
                dw_pixels::<S, K, P>(a, x0, c0, nv);
                x0 += P;
            }
            while x0 < a.w {
                dw_pixels::<S, K, 1>(a, x0, c0, nv);
                x0 += 1;
            }
            c0 += nv;
        }
    }
}

#[inline(always)]
unsafe fn dw_pixels<S: Simd, const K: usize, const Q: usize>(
    a: &DwArgs,
    x0: usize,
    c0: usize,
    nv: usize,
) {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        let c = a.c;
        let mut acc = [ld_any::<S>(a.bias.add(c0), nv); Q];
        for ky in 0..K {
            let row = a.rows[ky].add(x0 * c + c0);
            for kx in 0..K {
                let wv = ld_any::<S>(a.taps.add((ky * K + kx) * c + c0), nv);
                for (q, acc) in acc.iter_mut().enumerate() {
                    *acc = S::fmadd(wv, ld_any::<S>(row.add((q + kx) * c), nv), *acc);
                }
            }
        }
        for (q, acc) in acc.iter().enumerate() {
            st_any::<S>(a.out.add((x0 + q) * c + c0), *acc, nv);
        }
    }
}
