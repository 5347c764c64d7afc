//! The SIMD algorithms, written once over the [`Simd`] trait and monomorphised per ISA
//! (and per weight storage type, [`Elem`]) inside a `#[target_feature]` leaf
//! (`x86_avx2`, `x86_avx512`, `aarch64_neon`). Everything here is `#[inline(always)]` so
//! that it is compiled with the leaf's features.

use super::{Epilogue, CBLOCK, MAX_K, PANEL};
use crate::math::{ERF_CLAMP, ERF_P, ERF_Q};

/// One ISA's vector of f32 lanes.
///
/// # Safety
/// Every method may only be called where the ISA is available (inside a leaf function
/// carrying its `#[target_feature]`). Pointer arguments must be valid for the lanes
/// they touch: `LANES` elements for `load*`/`store`, `n` for the `_n` forms.
pub(crate) unsafe trait Simd {
    type V: Copy;
    const LANES: usize;
    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    /// Loads `LANES` f16 bit patterns, widened to f32.
    unsafe fn load_f16(p: *const u16) -> Self::V;
    /// Loads `LANES` int8 values, converted to f32.
    unsafe fn load_i8(p: *const i8) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// Loads `n < LANES` lanes, the rest zero.
    unsafe fn load_n(p: *const f32, n: usize) -> Self::V;
    /// Stores the first `n < LANES` lanes.
    unsafe fn store_n(p: *mut f32, v: Self::V, n: usize);
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// Sum of the lanes.
    unsafe fn reduce_add(v: Self::V) -> f32;
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sqrt(a: Self::V) -> Self::V;
    /// `1/a` to about 23 bits (a hardware estimate refined by Newton steps), much cheaper
    /// than a division.
    unsafe fn recip(a: Self::V) -> Self::V;
    /// `a·b + c`.
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    /// Asks for the cache line at `p` to be brought into L2 (a hint: never faults, any
    /// address).
    unsafe fn prefetch_l2(p: *const u8);
    /// `|a|`.
    unsafe fn abs(a: Self::V) -> Self::V;
    /// Largest lane.
    unsafe fn reduce_max(v: Self::V) -> f32;
    /// Each lane rounded to the nearest integer, ties to even (as `libm::rintf`).
    unsafe fn round_even(a: Self::V) -> Self::V;
    /// Stores `LANES` lanes holding integers in `-127..=127` as int8.
    unsafe fn store_i8(p: *mut i8, v: Self::V);
    /// Loads `LANES` int32 values, converted to f32.
    unsafe fn load_i32(p: *const i32) -> Self::V;
    /// Does [`Simd::fmadd_lane`] map to one instruction (NEON's by-element `fmla`), so the
    /// GEMM loads four k of an activation row at once instead of broadcasting each?
    const LANE_FMA: bool = false;
    /// Does the ISA have its own loop for full groups of 7 pixels over f32 taps
    /// ([`Simd::qdw_groups7`])? With it, f16 and int8 taps are widened once per channel
    /// chunk into a compact stack copy (only for `LANES` = 4) instead of at every use.
    const QDW7: bool = false;
    /// The full groups of 7 pixels of a chunk (channels `c0..c0 + LANES`) from pixel 0;
    /// returns the first pixel not done. Taps are f32, `ts` floats apart ([`CBLOCK`]
    /// packed, `LANES` compact); `unit`: this chunk's scales are all 1. Must be
    /// bit-identical to this default: [`qdw_taps`] then the epilogue, group by group.
    ///
    /// # Safety
    /// As [`qdw_taps`] for every group, and `a`'s pointers valid as `qdw_row` requires.
    #[inline(always)]
    unsafe fn qdw_groups7<const K: usize>(
        a: &QdwArgs,
        taps: *const f32,
        ts: usize,
        c0: usize,
        unit: bool,
    ) -> usize
    where
        Self: Sized,
    {
        let _ = unit; // exact either way: `fma(a, 1, b)` is `a + b`
        let mut x0 = 0;
        // SAFETY: the caller's contract is `qdw_taps`' and `qdw_row`'s.
        unsafe {
            while x0 + 7 <= a.w {
                let blk = qdw_copy_next::<Self, K, 7, true>(a, x0, c0, Self::LANES);
                let rows: [*const f32; K] = core::array::from_fn(|ky| a.rows[ky].add(blk));
                let (sa, sb, sc) = qdw_taps::<Self, f32, K, 7, true>(&rows, taps, ts, Self::LANES);
                qdw_finish::<Self, 7, true>(a, &sa, &sb, &sc, x0, c0, Self::LANES);
                x0 += 7;
            }
        }
        x0
    }
    /// `c + b·a[L]`: lane `L` of `a` times every lane of `b`, fused (the same rounding as
    /// [`Simd::fmadd`] with a broadcast).
    #[inline(always)]
    unsafe fn fmadd_lane<const L: usize>(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        // SAFETY: the trait's contract: the ISA is enabled here; `t` holds 16 lanes, at
        // least `LANES`, so the store stays inside it.
        unsafe {
            let mut t = [0.0f32; 16];
            Self::store(t.as_mut_ptr(), a);
            Self::fmadd(Self::splat(t[L]), b, c)
        }
    }
}

/// A weight storage element the kernels widen to f32 on load.
pub(crate) trait Elem: Copy {
    const ZERO: Self;
    /// f32 itself (no widening).
    const F32: bool = false;
    /// # Safety
    /// As [`Simd::load`], for `S::LANES` elements of `Self`.
    unsafe fn load<S: Simd>(p: *const Self) -> S::V;
}

// The loads are the `Simd` ones, under the same contract (`Elem::load`).
#[allow(unsafe_op_in_unsafe_fn)]
impl Elem for f32 {
    const ZERO: f32 = 0.0;
    const F32: bool = true;
    #[inline(always)]
    unsafe fn load<S: Simd>(p: *const f32) -> S::V {
        S::load(p)
    }
}

// The loads are the `Simd` ones, under the same contract (`Elem::load`).
#[allow(unsafe_op_in_unsafe_fn)]
impl Elem for u16 {
    const ZERO: u16 = 0;
    #[inline(always)]
    unsafe fn load<S: Simd>(p: *const u16) -> S::V {
        S::load_f16(p)
    }
}

// The loads are the `Simd` ones, under the same contract (`Elem::load`).
#[allow(unsafe_op_in_unsafe_fn)]
impl Elem for i8 {
    const ZERO: i8 = 0;
    #[inline(always)]
    unsafe fn load<S: Simd>(p: *const i8) -> S::V {
        S::load_i8(p)
    }
}

/// Loads `n <= LANES` weight elements (a channel tail) through a zeroed stack copy.
#[inline(always)]
unsafe fn load_w<S: Simd, W: Elem, const FULL: bool>(p: *const W, n: usize) -> S::V {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        if FULL {
            W::load::<S>(p)
        } else {
            let mut tmp = [W::ZERO; 16];
            core::ptr::copy_nonoverlapping(p, tmp.as_mut_ptr(), n);
            W::load::<S>(tmp.as_ptr())
        }
    }
}

#[inline(always)]
unsafe fn ld<S: Simd, const FULL: bool>(p: *const f32, n: usize) -> S::V {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        if FULL {
            S::load(p)
        } else {
            S::load_n(p, n)
        }
    }
}

#[inline(always)]
unsafe fn st<S: Simd, const FULL: bool>(p: *mut f32, v: S::V, n: usize) {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        if FULL {
            S::store(p, v)
        } else {
            S::store_n(p, v, n)
        }
    }
}

#[inline(always)]
pub(crate) unsafe fn ld_any<S: Simd>(p: *const f32, n: usize) -> S::V {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        if n == S::LANES {
            S::load(p)
        } else {
            S::load_n(p, n)
        }
    }
}

#[inline(always)]
pub(crate) unsafe fn st_any<S: Simd>(p: *mut f32, v: S::V, n: usize) {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        if n == S::LANES {
            S::store(p, v)
        } else {
            S::store_n(p, v, n)
        }
    }
}

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
        // This chunk's weights: one contiguous run, the three filters of a tap side by side.
        let wblk = taps.add((c0 / CBLOCK) * K * K * 3 * CBLOCK + c0 % CBLOCK);
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

#[derive(Clone, Copy)]
pub(crate) enum EpiKind {
    Bias,
    Gelu,
    ScaleAdd,
}

/// The epilogue as raw pointers (lengths checked by `kernels::gemm`).
#[derive(Clone, Copy)]
pub(crate) struct EpiPtrs {
    kind: EpiKind,
    bias: *const f32,
    gamma: *const f32,
}

impl EpiPtrs {
    pub(crate) fn new(epi: Epilogue<'_>) -> Self {
        match epi {
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
            Epilogue::ScaleAdd { gamma } => EpiPtrs {
                kind: EpiKind::ScaleAdd,
                bias: core::ptr::null(),
                gamma: gamma.as_ptr(),
            },
        }
    }

    /// The epilogue of columns `j..`.
    ///
    /// # Safety
    /// `j` within the columns the pointers were checked for.
    pub(crate) unsafe fn offset(self, j: usize) -> Self {
        // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
        // lengths documented above) is what the body relies on.
        unsafe {
            EpiPtrs {
                kind: self.kind,
                bias: if self.bias.is_null() {
                    self.bias
                } else {
                    self.bias.add(j)
                },
                gamma: if self.gamma.is_null() {
                    self.gamma
                } else {
                    self.gamma.add(j)
                },
            }
        }
    }
}

/// Raw form of one GEMM call (everything but B), built by `kernels::gemm`.
pub(crate) struct GemmArgs {
    pub a: *const f32,
    pub m: usize,
    pub lda: usize,
    pub k: usize,
    pub n: usize,
    /// Distance between weight panels.
    pub pstride: usize,
    pub scales: *const f32,
    pub epi: EpiPtrs,
    pub out: *mut f32,
    pub ldo: usize,
}

/// Widest GEMM tile, in columns (the stride of the stack tile the epilogue reads).
pub(crate) const TILE_COLS: usize = 64;

/// Weight panels walked a cache line at a time and hinted into L2: while a column tile
/// computes, its row tiles pull in the next column tile's panels, so the next tile's first
/// row tile does not wait on memory for all of them (a 7x7x512 block streams 8 MB of
/// weights from DRAM, each line used by only 49 pixels).
#[derive(Clone, Copy)]
struct Prefetch {
    p: *const u8,
    /// Bytes left in the current panel.
    left: usize,
    /// Bytes of a panel.
    bytes: usize,
    /// Bytes from the end of a panel to the start of the next.
    skip: usize,
    /// Panels left, the current one included.
    panels: usize,
}

impl Prefetch {
    const NONE: Self = Prefetch {
        p: core::ptr::null(),
        left: 0,
        bytes: 0,
        skip: 0,
        panels: 0,
    };

    /// `panels` panels of `k` rows from `b`, `pstride` elements apart.
    fn panels<W>(b: *const W, k: usize, pstride: usize, panels: usize) -> Self {
        let (size, bytes) = (
            core::mem::size_of::<W>(),
            k * PANEL * core::mem::size_of::<W>(),
        );
        Prefetch {
            p: b.cast(),
            left: bytes,
            bytes,
            skip: (pstride * size).saturating_sub(bytes),
            panels: if bytes == 0 { 0 } else { panels },
        }
    }

    /// Hints the next line, if any is left.
    #[inline(always)]
    unsafe fn step<S: Simd>(&mut self) {
        // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
        // lengths documented above) is what the body relies on.
        unsafe {
            if self.panels > 0 {
                S::prefetch_l2(self.p);
                let n = self.left.min(64);
                self.left -= n;
                self.p = self.p.wrapping_add(n);
                if self.left == 0 {
                    self.panels -= 1;
                    self.p = self.p.wrapping_add(self.skip);
                    self.left = self.bytes;
                }
            }
        }
    }
}

/// Pointers and strides of one column tile, shared by its row tiles.
#[derive(Clone, Copy)]
struct Tile<W> {
    lda: usize,
    k: usize,
    b: *const W,
    pstride: usize,
    cols: usize,
    scales: *const f32,
    epi: EpiPtrs,
    ldo: usize,
}

/// `out = epi(scales ⊙ A·B)`. Column tiles of `NV` vectors (whole [`PANEL`]-column
/// panels) outer, row tiles of `MR` pixels inner, so the tile's weight panels stay in L1
/// while A streams through. The last column tile narrows to the panels that are left.
///
/// # Safety
/// Pointers as checked by `kernels::gemm`; `NV·LANES` a multiple of [`PANEL`] and at most 64.
#[inline(always)]
pub(crate) unsafe fn gemm<S: Simd, W: Elem, const MR: usize, const NV: usize>(
    g: &GemmArgs,
    b: *const W,
) {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        let tile_cols = NV * S::LANES;
        let per_panel = PANEL / S::LANES;
        let pstride = g.pstride;
        let mut j0 = 0;
        while j0 < g.n {
            let cols = (g.n - j0).min(tile_cols);
            let t = Tile {
                lda: g.lda,
                k: g.k,
                b: b.add((j0 / PANEL) * pstride),
                pstride,
                cols,
                scales: g.scales.add(j0),
                epi: g.epi.offset(j0),
                ldo: g.ldo,
            };
            let out = g.out.add(j0);
            let next = j0 + cols;
            let pf = if next < g.n {
                let panels = (g.n - next).div_ceil(PANEL).min(tile_cols / PANEL);
                Prefetch::panels(b.add((next / PANEL) * pstride), g.k, pstride, panels)
            } else {
                Prefetch::NONE
            };
            // Vectors of the panels this tile has (the packed matrix is padded to whole panels).
            match cols.div_ceil(PANEL) * per_panel {
                1 if NV > 1 => gemm_cols::<S, W, MR, 1>(g.a, g.m, t, out, pf),
                2 if NV > 2 => gemm_cols::<S, W, MR, 2>(g.a, g.m, t, out, pf),
                3 if NV > 3 => gemm_cols::<S, W, MR, 3>(g.a, g.m, t, out, pf),
                _ => gemm_cols::<S, W, MR, NV>(g.a, g.m, t, out, pf),
            }
            j0 += cols;
        }
    }
}

/// Largest inner dimension whose f16 or int8 weight panels [`gemm_widened`] widens into a
/// stack copy (`WIDE_K·16` floats, 32 KB): every pointwise layer of the presets up to
/// QuadraNet36-T. Wider GEMMs widen each weight as it is used.
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))] // NEON's choice
pub(crate) const WIDE_K: usize = 512;

/// [`gemm`] for f16 or int8 weights, each 16-column panel widened to f32 once per call
/// into a stack copy, which the f32 tiles then read: the widening is paid once per panel
/// instead of once per row tile. Where the widening costs more than a load (NEON: three
/// vector ops per f16 vector, two per int8 one, on the same pipes as `fmla`), this runs the
/// f32 GEMM's main loop. The arithmetic is the per-use path's, so the results are identical.
/// Only for tiles of one panel (`NV·LANES == PANEL`).
///
/// # Safety
/// As [`gemm`]; `g.k <= WIDE_K`.
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))] // NEON's choice
#[inline(always)]
pub(crate) unsafe fn gemm_widened<S: Simd, W: Elem, const MR: usize, const NV: usize>(
    g: &GemmArgs,
    b: *const W,
) {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        debug_assert!(NV * S::LANES == PANEL && g.k <= WIDE_K);
        // Every float a tile reads (`k·PANEL` of them) is written first.
        let mut wide = core::mem::MaybeUninit::<[f32; WIDE_K * PANEL]>::uninit();
        let wp = wide.as_mut_ptr().cast::<f32>();
        let mut j0 = 0;
        while j0 < g.n {
            let cols = (g.n - j0).min(PANEL);
            // A whole panel (the packed matrix is padded to whole panels).
            let src = b.add((j0 / PANEL) * g.pstride);
            let mut e = 0;
            while e < g.k * PANEL {
                S::store(wp.add(e), W::load::<S>(src.add(e)));
                e += S::LANES;
            }
            let t = Tile {
                lda: g.lda,
                k: g.k,
                b: wp as *const f32,
                pstride: g.k * PANEL,
                cols,
                scales: g.scales.add(j0),
                epi: g.epi.offset(j0),
                ldo: g.ldo,
            };
            let next = j0 + cols;
            let pf = if next < g.n {
                Prefetch::panels(b.add((next / PANEL) * g.pstride), g.k, g.pstride, 1)
            } else {
                Prefetch::NONE
            };
            gemm_cols::<S, f32, MR, NV>(g.a, g.m, t, g.out.add(j0), pf);
            j0 += cols;
        }
    }
}

#[inline(always)]
unsafe fn gemm_cols<S: Simd, W: Elem, const MR: usize, const NV: usize>(
    a: *const f32,
    m: usize,
    t: Tile<W>,
    out: *mut f32,
    mut pf: Prefetch,
) {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        let (lda, ldo) = (t.lda, t.ldo);
        let mut i0 = 0;
        while i0 + MR <= m {
            tile::<S, W, MR, NV>(a.add(i0 * lda), &t, out.add(i0 * ldo), &mut pf);
            i0 += MR;
        }
        if MR > 4 && i0 + 4 <= m {
            tile::<S, W, 4, NV>(a.add(i0 * lda), &t, out.add(i0 * ldo), &mut pf);
            i0 += 4;
        }
        if MR > 2 && i0 + 2 <= m {
            tile::<S, W, 2, NV>(a.add(i0 * lda), &t, out.add(i0 * ldo), &mut pf);
            i0 += 2;
        }
        while i0 < m {
            tile::<S, W, 1, NV>(a.add(i0 * lda), &t, out.add(i0 * ldo), &mut pf);
            i0 += 1;
        }
    }
}

/// One `M x (NV·LANES)` tile: `M·NV` accumulators live in registers across the whole
/// inner dimension, then the epilogue runs on them before the single store.
#[inline(always)]
unsafe fn tile<S: Simd, W: Elem, const M: usize, const NV: usize>(
    a: *const f32,
    t: &Tile<W>,
    out: *mut f32,
    pf: &mut Prefetch,
) {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        let mut acc = [[S::zero(); NV]; M];
        macro_rules! step {
            ($kk:expr) => {{
                let kk = $kk;
                let mut bv = [S::zero(); NV];
                for (j, v) in bv.iter_mut().enumerate() {
                    let col = j * S::LANES;
                    *v =
                        W::load::<S>(t.b.add((col / PANEL) * t.pstride + kk * PANEL + col % PANEL));
                }
                for (i, row) in acc.iter_mut().enumerate() {
                    let av = S::splat(*a.add(i * t.lda + kk));
                    for (acc, &bvj) in row.iter_mut().zip(bv.iter()) {
                        *acc = S::fmadd(av, bvj, *acc);
                    }
                }
            }};
        }
        // With by-element FMAs (NEON: 4 lanes), one load of four k per activation row feeds
        // the four steps: a broadcast load per row and step (`ld1r`, two micro-ops) held the
        // modeled A76 at 69% of its fmla peak on the 5 x 16 tile.
        macro_rules! lane_step {
            ($a4:expr, $kk:expr, $lane:literal) => {{
                let kk = $kk + $lane;
                let mut bv = [S::zero(); NV];
                for (j, v) in bv.iter_mut().enumerate() {
                    let col = j * S::LANES;
                    *v =
                        W::load::<S>(t.b.add((col / PANEL) * t.pstride + kk * PANEL + col % PANEL));
                }
                for (row, &a4) in acc.iter_mut().zip($a4.iter()) {
                    for (acc, &bvj) in row.iter_mut().zip(bv.iter()) {
                        *acc = S::fmadd_lane::<$lane>(a4, bvj, *acc);
                    }
                }
            }};
        }
        let mut kk = 0;
        while kk + 4 <= t.k {
            // Two lines per four k steps: the next column tile's panels are covered by the
            // time eight row tiles have run (a 7x7 map has nine).
            pf.step::<S>();
            pf.step::<S>();
            if S::LANE_FMA && S::LANES == 4 {
                let a4: [S::V; M] = core::array::from_fn(|i| S::load(a.add(i * t.lda + kk)));
                lane_step!(a4, kk, 0);
                lane_step!(a4, kk, 1);
                lane_step!(a4, kk, 2);
                lane_step!(a4, kk, 3);
            } else {
                step!(kk);
                step!(kk + 1);
                step!(kk + 2);
                step!(kk + 3);
            }
            kk += 4;
        }
        while kk < t.k {
            step!(kk);
            kk += 1;
        }
        // Park the accumulators in a stack tile with constant indices only: that keeps the
        // compiler from holding `acc` in memory through the k loop (it did, storing after every
        // FMA, when the epilogue below indexed it directly).
        debug_assert!(M <= 12 && NV * S::LANES <= TILE_COLS);
        let mut tile = core::mem::MaybeUninit::<[[f32; TILE_COLS]; 12]>::uninit();
        let tp = tile.as_mut_ptr().cast::<f32>();
        for (i, row) in acc.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                S::store(tp.add(i * TILE_COLS + j * S::LANES), *v);
            }
        }
        epilogue::<S, M>(tp, t.cols, t.scales, t.epi, out, t.ldo);
    }
}

/// The epilogue of an `M`-row GEMM tile parked at `tp` (rows [`TILE_COLS`] apart), `cols`
/// columns: `out = epi(tile · scales + bias)` (see [`super::Epilogue`]), a vector at a time.
///
/// # Safety
/// `tp` valid for `M` rows of `cols` (rounded up to `LANES`) floats; `scales` and the
/// epilogue's pointers for `cols`; `out` for `M` rows of `cols`, `ldo` apart.
#[inline(always)]
pub(crate) unsafe fn epilogue<S: Simd, const M: usize>(
    tp: *const f32,
    cols: usize,
    scales: *const f32,
    epi: EpiPtrs,
    out: *mut f32,
    ldo: usize,
) {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        let mut c0 = 0;
        while c0 < cols {
            let nv = (cols - c0).min(S::LANES);
            let scale = ld_any::<S>(scales.add(c0), nv);
            let bias = if epi.bias.is_null() {
                S::zero()
            } else {
                ld_any::<S>(epi.bias.add(c0), nv)
            };
            let g = match epi.kind {
                EpiKind::ScaleAdd => ld_any::<S>(epi.gamma.add(c0), nv),
                _ => S::zero(),
            };
            for i in 0..M {
                let v = S::fmadd(S::load(tp.add(i * TILE_COLS + c0)), scale, bias);
                let p = out.add(i * ldo + c0);
                let v = match epi.kind {
                    EpiKind::Bias => v,
                    EpiKind::Gelu => gelu::<S>(v),
                    EpiKind::ScaleAdd => S::fmadd(g, v, ld_any::<S>(p, nv)),
                };
                st_any::<S>(p, v, nv);
            }
            c0 += S::LANES;
        }
    }
}

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

/// Runs the body for each vector of a row of `c` floats, in order: whole vectors (`n` the
/// lane count, a constant, so the loop has no partial-vector branch), then the tail. A
/// macro, not a function taking a closure: a closure is a function of its own, without the
/// leaf's `#[target_feature]`, and the intrinsics inside it were called instead of inlined
/// (AVX-512 LayerNorm ran several times slower).
macro_rules! each_vector {
    ($S:ty, $c:expr, |$i:ident, $n:ident| $body:expr) => {{
        let c = $c;
        let full = c - c % <$S>::LANES;
        let mut at = 0;
        while at < full {
            let ($i, $n) = (at, <$S>::LANES);
            $body;
            at += <$S>::LANES;
        }
        if full < c {
            let ($i, $n) = (full, c - full);
            $body;
        }
    }};
}

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
            ln_rows::<S, 4>(a, r, inv_n);
            r += 4;
        }
        while r < rows {
            ln_rows::<S, 1>(a, r, inv_n);
            r += 1;
        }
    }
}

/// Rows `r0..r0 + R` of [`layer_norm_rows`], each computed exactly as alone.
#[inline(always)]
unsafe fn ln_rows<S: Simd, const R: usize>(a: &LnArgs, r0: usize, inv_n: f32) {
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
        // it with dirty upper vector state costs hundreds of cycles per row.
        let rstd: [S::V; R] = core::array::from_fn(|j| {
            let var = S::reduce_add(acc[j]) * inv_n;
            S::div(S::splat(1.0), S::sqrt(S::splat(var + eps)))
        });
        // Row `r0 + j`'s output for channels `i..` is `j·step` floats past row `r0`'s at `o`.
        macro_rules! normalise {
            ($i:expr, $n:expr, $o:expr, $step:expr) => {{
                let (i, n, o) = ($i, $n, $o);
                let (wv, bv) = (ld_any::<S>(w.add(i), n), ld_any::<S>(b.add(i), n));
                for j in 0..R {
                    let d = S::mul(S::sub(ld_any::<S>(xr[j].add(i), n), mv[j]), rstd[j]);
                    st_any::<S>(o.add(j * $step), S::fmadd(d, wv, bv), n);
                }
            }};
        }
        // The layout decided once, outside the loops. Blocked: channel `i` of row `r` at
        // `((i/CBLOCK)·pw + p + r)·CBLOCK + i%CBLOCK` (LANES divides CBLOCK: a vector never
        // straddles two blocks).
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
