//! Channels-last rows into the channel-blocked, zero-padded layout the QDW reads.

use super::{ld_any, st_any, Simd};
use crate::kernels::CBLOCK;

/// One channels-last row of `w` pixels into the channel-blocked, zero-padded QDW row
/// layout (see `kernels::block_row`), a vector at a time.
///
/// # Safety
/// `src` valid for `w·c` floats, `dst` for `qdw_row_len(w, c, k)`.
#[inline(always)]
pub(crate) unsafe fn block_row<S: Simd>(
    src: *const f32,
    w: usize,
    c: usize,
    k: usize,
    dst: *mut f32,
) {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        let (p, pw) = ((k - 1) / 2, w + k - 1);
        for px in 0..w {
            let s = src.add(px * c);
            let mut i = 0;
            while i < c {
                // LANES divides CBLOCK, so a vector never straddles two blocks.
                let n = (c - i).min(S::LANES);
                let d = dst.add(((i / CBLOCK) * pw + p + px) * CBLOCK + i % CBLOCK);
                st_any::<S>(d, ld_any::<S>(s.add(i), n), n);
                i += n;
            }
        }
    }
}
