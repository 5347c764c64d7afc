//! The SIMD algorithms, written once over the [`Simd`] trait and monomorphised per ISA
//! (and per weight storage type, [`Elem`]) inside a `#[target_feature]` leaf
//! (`x86_avx2`, `x86_avx512`, `aarch64_neon`). Everything here is `#[inline(always)]` so
//! that it is compiled with the leaf's features.
//!
//! One file per algorithm: [`gelu`] (erf and GELU), [`qdw`] (the quadratic depthwise
//! conv), [`gemm`] (the pointwise GEMM and its epilogue), [`layer_norm`], [`layout`] (rows
//! into the QDW's blocked layout) and [`dw`] (the plain depthwise conv). This file holds
//! the [`Simd`] trait, the weight element types and the load and store helpers they share.

/// Runs the body for each vector of a row of `c` floats, in order: whole vectors (`n` the
/// lane count, a constant, so the loop has no partial-vector branch), then the tail. A
/// macro, not a function taking a closure: a closure is a function of its own, without the
/// leaf's `#[target_feature]`, so the intrinsics inside it would be called instead of
/// inlined (AVX-512 LayerNorm runs several times slower that way).
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

mod dw;
mod gelu;
mod gemm;
mod layer_norm;
mod layout;
mod qdw;

pub(crate) use dw::*;
pub(crate) use gelu::*;
pub(crate) use gemm::*;
pub(crate) use layer_norm::*;
pub(crate) use layout::*;
pub(crate) use qdw::*;

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
    /// `splat(rows[I][0])` for the addend of an `fmadd` (a Horner step's constant), each
    /// row of `rows` holding its constant in every lane. Where the fused multiply-add
    /// overwrites its addend (NEON's `fmla`), a constant kept in a register must be copied
    /// first, a `mov` on the two SIMD pipes the arithmetic needs; NEON loads a fresh one
    /// instead (a load pipe), at a constant offset from the table so that only the table's
    /// address stays in a register. Same value, same results.
    #[inline(always)]
    unsafe fn addend<const I: usize, const N: usize>(rows: &[[f32; 4]; N]) -> Self::V {
        // SAFETY: as `splat`, under the trait's contract.
        unsafe { Self::splat(rows[I][0]) }
    }
    unsafe fn load(p: *const f32) -> Self::V;
    /// Loads `LANES` f16 bit patterns, widened to f32.
    unsafe fn load_f16(p: *const u16) -> Self::V;
    /// Loads `LANES` int8 values, converted to f32.
    unsafe fn load_i8(p: *const i8) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// Rounds the first `n` lanes to f16 (nearest even) and stores their bit patterns: the
    /// half-precision QDW rows of `Precision::Fp16`.
    ///
    /// # Safety
    /// The ISA enabled; `p` valid for `n` halves.
    #[inline(always)]
    unsafe fn store_half(p: *mut u16, v: Self::V, n: usize) {
        let mut t = [0.0f32; 16];
        // SAFETY: `t` holds a whole vector (LANES <= 16); `p` is the caller's.
        unsafe {
            Self::store(t.as_mut_ptr(), v);
            for (i, &x) in t.iter().enumerate().take(n) {
                *p.add(i) = crate::math::f16::from_f64(f64::from(x));
            }
        }
    }
    /// Two whole vectors rounded to f16 into `2·LANES` consecutive halves at `p` (the same
    /// bits as [`Simd::store_half`] of each; NEON: one `fcvtn`/`fcvtn2` pair and one store).
    unsafe fn store_half2(p: *mut u16, lo: Self::V, hi: Self::V) {
        // SAFETY: `p` valid for `2·LANES` halves, the caller's contract.
        unsafe {
            Self::store_half(p, lo, Self::LANES);
            Self::store_half(p.add(Self::LANES), hi, Self::LANES);
        }
    }
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
    /// `p[..2·LANES] = g·x + p[..]`, vector `k` of the two with `g[k]`, `x[k]` ([`Self::fmadd`]
    /// each): two consecutive vectors of a row updated in place. NEON loads and stores the
    /// pair with one instruction each way.
    ///
    /// # Safety
    /// The ISA enabled; `p` valid for `2·LANES` floats.
    #[inline(always)]
    unsafe fn fmadd_into2(p: *mut f32, g: [Self::V; 2], x: [Self::V; 2]) {
        // SAFETY: the caller's contract.
        unsafe {
            for k in 0..2 {
                let q = p.add(k * Self::LANES);
                Self::store(q, Self::fmadd(g[k], x[k], Self::load(q)));
            }
        }
    }
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    /// Asks for the cache line at `p` to be brought into L2 (a hint: never faults, any
    /// address).
    unsafe fn prefetch_l2(p: *const u8);
    // The generic w8a8 quantisation's (`q8::quantize`, x86; NEON has its own).
    /// `|a|`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn abs(a: Self::V) -> Self::V;
    /// Largest lane.
    #[cfg(target_arch = "x86_64")]
    unsafe fn reduce_max(v: Self::V) -> f32;
    /// Each lane rounded to the nearest integer, ties to even (as `libm::rintf`).
    #[cfg(target_arch = "x86_64")]
    unsafe fn round_even(a: Self::V) -> Self::V;
    /// Stores `LANES` lanes holding integers in `-127..=127` as int8.
    #[cfg(target_arch = "x86_64")]
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
