//! The quadratic depthwise conv (QDW): one output row, `P` pixels at a time, the three
//! filters fed by each input vector.

use super::{ld, load_w, st, Elem, Simd};
use crate::kernels::{CBLOCK, MAX_K};

/// Raw form of one QDW row call, built by `kernels::qdw_row` after validation.
pub(crate) struct QdwArgs {
    pub rows: [*const f32; MAX_K],
    pub w: usize,
    pub c: usize,
    pub scales: *const f32,
    pub bias: *const f32,
    /// Null: store the QDW result. Non-null: `out += gamma ⊙ result`.
    pub gamma: *const f32,
    pub out: *mut f32,
    /// Null, or a channels-last row of `w` pixels to copy into the channel-blocked row
    /// `next_dst` (as `block_row` does) while the taps run: each pixel group copies its
    /// own pixels and channels, so the copy rides in load and store slots the FMA-bound
    /// loop leaves free.
    pub next_src: *const f32,
    pub next_dst: *mut f32,
}

/// One QDW output row, `P` output pixels at a time (`P` chosen per ISA to fill the register
/// file with `3P` accumulators). Taps are the outer loop; each input vector loaded feeds
/// the three filters.
#[inline(always)]
pub(crate) unsafe fn qdw_row<S: Simd, W: Elem, const K: usize, const P: usize>(
    a: &QdwArgs,
    taps: *const W,
) {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        let mut c0 = 0;
        while c0 + S::LANES <= a.c {
            qdw_chunk::<S, W, K, P, true>(a, taps, c0, S::LANES);
            c0 += S::LANES;
        }
        if c0 < a.c {
            qdw_chunk::<S, W, K, P, false>(a, taps, c0, a.c - c0);
        }
    }
}

#[inline(always)]
unsafe fn qdw_chunk<S: Simd, W: Elem, const K: usize, const P: usize, const FULL: bool>(
    a: &QdwArgs,
    taps: *const W,
    c0: usize,
    nv: usize,
) {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        let wblk = chunk_taps::<W, K>(taps, c0);
        let mut x0 = 0;
        if S::QDW7 && FULL && P == 7 && S::LANES == 4 {
            // f32 taps are read in place; f16 and int8 ones widened here, once per chunk
            // and row, instead of at each of the row's pixel groups.
            // Not zeroed (that was a 2.3 KB memset per chunk and row): the groups read
            // exactly the `K²·3` vectors written here.
            let mut wide = core::mem::MaybeUninit::<[f32; MAX_K * MAX_K * 3 * 4]>::uninit();
            let (tp, ts) = if W::F32 {
                (wblk.cast::<f32>(), CBLOCK)
            } else {
                let wp = wide.as_mut_ptr().cast::<f32>();
                for t in 0..K * K * 3 {
                    S::store(wp.add(t * 4), W::load::<S>(wblk.add(t * CBLOCK)));
                }
                (wp.cast_const(), 4)
            };
            let unit = (0..3).all(|f| (0..4).all(|i| *a.scales.add(f * a.c + c0 + i) == 1.0));
            x0 = S::qdw_groups7::<K>(a, tp, ts, c0, unit);
        } else {
            while x0 + P <= a.w {
                qdw_pixels::<S, W, K, P, FULL>(a, wblk, x0, c0, nv);
                x0 += P;
            }
        }
        // The remainder in halving groups: one pixel at a time would leave three dependent
        // FMA chains per tap and starve the FMA units on narrow maps (14 or 7 wide).
        if P > 4 && x0 + 4 <= a.w {
            qdw_pixels::<S, W, K, 4, FULL>(a, wblk, x0, c0, nv);
            x0 += 4;
        }
        if P > 2 && x0 + 2 <= a.w {
            qdw_pixels::<S, W, K, 2, FULL>(a, wblk, x0, c0, nv);
            x0 += 2;
        }
        while x0 < a.w {
            qdw_pixels::<S, W, K, 1, FULL>(a, wblk, x0, c0, nv);
            x0 += 1;
        }
    }
}

/// The taps of the chunk from channel `c0`: one contiguous run, the three filters of a
/// tap side by side, [`CBLOCK`] elements apart.
///
/// # Safety
/// `taps` is the packed taps of a row with more than `c0` channels.
#[inline(always)]
pub(crate) unsafe fn chunk_taps<W: Elem, const K: usize>(taps: *const W, c0: usize) -> *const W {
    // SAFETY: within the packed taps, by the caller's contract.
    unsafe { taps.add((c0 / CBLOCK) * K * K * 3 * CBLOCK + c0 % CBLOCK) }
}

/// One group of `Q` pixels from `x0`, channels `c0..c0 + nv`, with the chunk's taps at `wblk`.
#[inline(always)]
unsafe fn qdw_pixels<S: Simd, W: Elem, const K: usize, const Q: usize, const FULL: bool>(
    a: &QdwArgs,
    wblk: *const W,
    x0: usize,
    c0: usize,
    nv: usize,
) {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        let blk = qdw_copy_next::<S, K, Q, FULL>(a, x0, c0, nv);
        let rows: [*const f32; K] = core::array::from_fn(|ky| a.rows[ky].add(blk));
        let (sa, sb, sc) = qdw_taps::<S, W, K, Q, FULL>(&rows, wblk, CBLOCK, nv);
        qdw_finish::<S, Q, FULL>(a, &sa, &sb, &sc, x0, c0, nv);
    }
}

/// The group's offset in the channel-blocked rows; copies its pixels of the next row
/// (`QdwArgs::next_src`) when asked.
#[inline(always)]
pub(crate) unsafe fn qdw_copy_next<S: Simd, const K: usize, const Q: usize, const FULL: bool>(
    a: &QdwArgs,
    x0: usize,
    c0: usize,
    nv: usize,
) -> usize {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        // Channel-blocked rows: this chunk's pixels are CBLOCK floats apart.
        let blk = ((c0 / CBLOCK) * (a.w + K - 1) + x0) * CBLOCK + c0 % CBLOCK;
        if !a.next_src.is_null() {
            // The same pixels and channels of the next row, to padded pixel `p + x`.
            let dst = a.next_dst.add(blk + (K - 1) / 2 * CBLOCK);
            for q in 0..Q {
                let v = ld::<S, FULL>(a.next_src.add((x0 + q) * a.c + c0), nv);
                st::<S, FULL>(dst.add(q * CBLOCK), v, nv);
            }
        }
        blk
    }
}

/// The tap sums of filters a, b and c for `Q` pixels.
pub(crate) type Sums<S, const Q: usize> = (
    [<S as Simd>::V; Q],
    [<S as Simd>::V; Q],
    [<S as Simd>::V; Q],
);

/// The tap sums of `Q` pixels for the three filters: `rows[ky]` at the group's first input
/// pixel, filter `f` of tap `t` at `wblk + (t·3 + f)·ts`.
///
/// # Safety
/// The ISA enabled; each row valid for `Q + K - 1` pixels of `nv` channels, [`CBLOCK`]
/// floats apart; `wblk` for the `K²·3` tap vectors.
#[inline(always)]
pub(crate) unsafe fn qdw_taps<
    S: Simd,
    W: Elem,
    const K: usize,
    const Q: usize,
    const FULL: bool,
>(
    rows: &[*const f32; K],
    wblk: *const W,
    ts: usize,
    nv: usize,
) -> Sums<S, Q> {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        let mut acc_a = [S::zero(); Q];
        let mut acc_b = [S::zero(); Q];
        let mut acc_c = [S::zero(); Q];
        macro_rules! tap_row {
            ($ky:expr) => {{
                let row = rows[$ky];
                for kx in 0..K {
                    let wp = wblk.add(($ky * K + kx) * 3 * ts);
                    let wa = load_w::<S, W, FULL>(wp, nv);
                    let wb = load_w::<S, W, FULL>(wp.add(ts), nv);
                    let wc = load_w::<S, W, FULL>(wp.add(2 * ts), nv);
                    for q in 0..Q {
                        let xv = ld::<S, FULL>(row.add((q + kx) * CBLOCK), nv);
                        if $ky == 0 && kx == 0 {
                            // The first tap starts the sums: no zeroed registers to copy.
                            acc_a[q] = S::mul(wa, xv);
                            acc_b[q] = S::mul(wb, xv);
                            acc_c[q] = S::mul(wc, xv);
                        } else {
                            acc_a[q] = S::fmadd(wa, xv, acc_a[q]);
                            acc_b[q] = S::fmadd(wb, xv, acc_b[q]);
                            acc_c[q] = S::fmadd(wc, xv, acc_c[q]);
                        }
                    }
                }
            }};
        }
        // The main groups (whole vectors, full pixel groups) unroll the tap rows, so the
        // scheduler sees across them (3-4% at K = 7); the rest keep the loop, and the code
        // stays small.
        if FULL && Q >= 4 {
            tap_row!(0);
            tap_row!(1);
            tap_row!(2);
            if K > 3 {
                tap_row!(3);
                tap_row!(4);
            }
            if K > 5 {
                tap_row!(5);
                tap_row!(6);
            }
        } else {
            // The macro indexes `rows` by tap row, as the unrolled arm does with constants.
            #[allow(clippy::needless_range_loop)]
            for ky in 0..K {
                tap_row!(ky);
            }
        }
        (acc_a, acc_b, acc_c)
    }
}

/// `y = (a·sa + ba)(b·sb + bb) + (c·sc + bc)` of the group's tap sums, stored or, with
/// `gamma`, added to the output as `out += gamma ⊙ y`.
#[inline(always)]
pub(crate) unsafe fn qdw_finish<S: Simd, const Q: usize, const FULL: bool>(
    a: &QdwArgs,
    acc_a: &[S::V; Q],
    acc_b: &[S::V; Q],
    acc_c: &[S::V; Q],
    x0: usize,
    c0: usize,
    nv: usize,
) {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        let c = a.c;
        let (sa, sb, sc) = (
            ld::<S, FULL>(a.scales.add(c0), nv),
            ld::<S, FULL>(a.scales.add(c + c0), nv),
            ld::<S, FULL>(a.scales.add(2 * c + c0), nv),
        );
        let (ba, bb, bc) = (
            ld::<S, FULL>(a.bias.add(c0), nv),
            ld::<S, FULL>(a.bias.add(c + c0), nv),
            ld::<S, FULL>(a.bias.add(2 * c + c0), nv),
        );
        let out = a.out.add(x0 * c + c0);
        let g = if a.gamma.is_null() {
            S::zero()
        } else {
            ld::<S, FULL>(a.gamma.add(c0), nv)
        };
        for q in 0..Q {
            let va = S::fmadd(acc_a[q], sa, ba);
            let vb = S::fmadd(acc_b[q], sb, bb);
            let vc = S::fmadd(acc_c[q], sc, bc);
            let y = S::fmadd(va, vb, vc);
            let p = out.add(q * c);
            if a.gamma.is_null() {
                st::<S, FULL>(p, y, nv);
            } else {
                st::<S, FULL>(p, S::fmadd(g, y, ld::<S, FULL>(p, nv)), nv);
            }
        }
    }
}
