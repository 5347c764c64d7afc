//! NEON (Advanced SIMD): 4 lanes, 32 q registers. GEMM tile 5 x 16 (20 accumulators, one
//! 4-k load per activation row used by element: 6 x 16 spilled, and it and a broadcast
//! per k modeled at 56% and 69% of the A76's fmla peak, this at 93%; `scripts/a76-model.sh`),
//! QDW 7 pixels per iteration (21 accumulators; every QuadraNet map width is a multiple
//! of 7), the full groups in generated assembly (`neon_qdw`, see `scripts/gen_neon_qdw.py`:
//! LLVM's code for that loop spilled), the rest in the generic Rust loop.

use core::arch::aarch64::*;

use super::q8::{self, Dot, Q8Args, QuantArgs};
use super::simd::{self, DwArgs, Elem, GemmArgs, LnArgs, QdwArgs, Simd, TILE_COLS};
use super::{neon_fp16, neon_fp16_qdw, neon_qdw, CBLOCK};

#[derive(Clone, Copy)]
pub(crate) struct Neon;

// The impl is one unsafe group, under the SAFETY note below.
#[allow(unsafe_op_in_unsafe_fn)]
// SAFETY: every method is a NEON intrinsic, only reachable from the leaves below, which
// carry `#[target_feature(enable = "neon")]`.
unsafe impl Simd for Neon {
    type V = float32x4_t;
    const LANES: usize = 4;
    #[inline(always)]
    unsafe fn zero() -> float32x4_t {
        vdupq_n_f32(0.0)
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> float32x4_t {
        vdupq_n_f32(x)
    }
    #[inline(always)]
    unsafe fn addend<const I: usize, const N: usize>(rows: &[[f32; 4]; N]) -> float32x4_t {
        const { assert!(I < N) };
        let v: float32x4_t;
        // A plain `ldr q` of row I, written as assembly so that LLVM neither hoists it out
        // of the loop (keeping the constant in a register that `fmla` would then need
        // copied) nor merges it with another load of the same row: the block is not `pure`.
        // It reads those 16 bytes of `rows` (I < N, checked at compile time) and nothing
        // else; no stack, no flags.
        core::arch::asm!(
            "ldr {v:q}, [{p}, #{off}]",
            v = lateout(vreg) v,
            p = in(reg) rows.as_ptr(),
            off = const I * 16,
            options(readonly, nostack, preserves_flags),
        );
        v
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> float32x4_t {
        vld1q_f32(p)
    }
    #[inline(always)]
    unsafe fn fmadd_into2(p: *mut f32, g: [float32x4_t; 2], x: [float32x4_t; 2]) {
        let o = vld1q_f32_x2(p);
        let o = float32x4x2_t(vfmaq_f32(o.0, g[0], x[0]), vfmaq_f32(o.1, g[1], x[1]));
        vst1q_f32_x2(p, o);
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const u16) -> float32x4_t {
        // Three vector operations (`fcvtl` needs FEAT_FP16
        // intrinsics Rust has not stabilised, and LLVM's Neoverse-N1 model gives it one
        // issue every two cycles): a signed widening shift by 13 puts the half's sign in bit
        // 31 and its exponent|mantissa in bits 27..13, with copies of the sign in bits
        // 30..28; clearing those leaves a float 2^-112 times the half, and multiplying by
        // 2^112 rebiases it. Exact for finite halves, subnormals and zeros included
        // (weights are checked finite at load), given FPCR.FZ = 0 as on Linux and Android.
        let h = vreinterpretq_u32_s32(vshll_n_s16::<13>(vreinterpret_s16_u16(vld1_u16(p))));
        let em = vbicq_u32(h, vdupq_n_u32(0x7000_0000));
        vmulq_f32(
            vreinterpretq_f32_u32(em),
            vdupq_n_f32(f32::from_bits(0x7780_0000)),
        )
    }
    #[inline(always)]
    unsafe fn load_i8(p: *const i8) -> float32x4_t {
        // Exactly 4 bytes: read them as one unaligned i32.
        let word = core::ptr::read_unaligned(p as *const i32);
        // `scvtf`: the exact bias trick (0x4B40_0000 + i as float bits, minus 1.5·2^23)
        // models faster per vector but needs two constant registers, and the 5 x 16 GEMM
        // tile then spills (modeled 59% with 10 stack accesses against 52% with none).
        let b = vreinterpret_s8_s32(vdup_n_s32(word));
        vcvtq_f32_s32(vmovl_s16(vget_low_s16(vmovl_s8(b))))
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: float32x4_t) {
        vst1q_f32(p, v)
    }
    #[inline(always)]
    unsafe fn store_half2(p: *mut u16, lo: float32x4_t, hi: float32x4_t) {
        vst1q_u16(p, neon_fp16::narrow(lo, hi));
    }
    #[inline(always)]
    unsafe fn store_half(p: *mut u16, v: float32x4_t, n: usize) {
        let h: uint16x4_t;
        // SAFETY: FCVTN (ARMv8.0) reads and writes registers only.
        core::arch::asm!(
            "fcvtn {h:v}.4h, {v:v}.4s",
            h = lateout(vreg) h,
            v = in(vreg) v,
            options(pure, nomem, nostack, preserves_flags)
        );
        if n == 4 {
            vst1_u16(p, h);
        } else {
            let mut t = [0u16; 4];
            vst1_u16(t.as_mut_ptr(), h);
            core::ptr::copy_nonoverlapping(t.as_ptr(), p, n);
        }
    }
    #[inline(always)]
    unsafe fn load_n(p: *const f32, n: usize) -> float32x4_t {
        // Lane by lane: a copy of variable length is a call to memcpy, and a call anywhere
        // in a loop (its tail, here) made LLVM keep the loop's vector constants on the
        // stack across it, reloading them in the main path (GELU: 9 reloads per vector).
        let mut v = vdupq_n_f32(0.0);
        if n > 0 {
            v = vld1q_lane_f32::<0>(p, v);
        }
        if n > 1 {
            v = vld1q_lane_f32::<1>(p.add(1), v);
        }
        if n > 2 {
            v = vld1q_lane_f32::<2>(p.add(2), v);
        }
        v
    }
    #[inline(always)]
    unsafe fn store_n(p: *mut f32, v: float32x4_t, n: usize) {
        // Lane by lane, for the reason `load_n` gives.
        if n > 0 {
            vst1q_lane_f32::<0>(p, v);
        }
        if n > 1 {
            vst1q_lane_f32::<1>(p.add(1), v);
        }
        if n > 2 {
            vst1q_lane_f32::<2>(p.add(2), v);
        }
    }
    #[inline(always)]
    unsafe fn add(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vaddq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vsubq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn reduce_add(v: float32x4_t) -> f32 {
        vaddvq_f32(v)
    }
    #[inline(always)]
    unsafe fn sqrt(a: float32x4_t) -> float32x4_t {
        vsqrtq_f32(a)
    }
    #[inline(always)]
    unsafe fn recip(a: float32x4_t) -> float32x4_t {
        // 8-bit estimate, two Newton steps (vrecps gives 2 - ar).
        let r = vrecpeq_f32(a);
        let r = vmulq_f32(r, vrecpsq_f32(a, r));
        vmulq_f32(r, vrecpsq_f32(a, r))
    }
    #[inline(always)]
    unsafe fn mul(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vmulq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn div(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vdivq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn fmadd(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        vfmaq_f32(c, a, b)
    }
    #[inline(always)]
    unsafe fn min(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vminq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn max(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vmaxq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn prefetch_l2(p: *const u8) {
        // SAFETY: PRFM is a hint; it reads nothing architecturally and never faults.
        unsafe {
            core::arch::asm!("prfm pldl2keep, [{0}]", in(reg) p, options(nostack, readonly, preserves_flags));
        }
    }
    #[inline(always)]
    unsafe fn load_i32(p: *const i32) -> float32x4_t {
        vcvtq_f32_s32(vld1q_s32(p))
    }
    const LANE_FMA: bool = true;
    const QDW7: bool = true;
    #[inline(always)]
    unsafe fn qdw_groups7<const K: usize>(
        a: &QdwArgs,
        taps: *const f32,
        ts: usize,
        c0: usize,
        unit: bool,
    ) -> usize {
        // One loop per epilogue, so each group is one straight run: the taps, then the
        // epilogue (`scripts/a76-model.sh` models exactly that run).
        let packed = ts == CBLOCK;
        match (packed, unit, a.gamma.is_null()) {
            (true, true, false) => qdw_groups::<K, true, true, true>(a, taps, c0),
            (true, true, true) => qdw_groups::<K, true, true, false>(a, taps, c0),
            (true, false, false) => qdw_groups::<K, true, false, true>(a, taps, c0),
            (true, false, true) => qdw_groups::<K, true, false, false>(a, taps, c0),
            (false, true, false) => qdw_groups::<K, false, true, true>(a, taps, c0),
            (false, true, true) => qdw_groups::<K, false, true, false>(a, taps, c0),
            (false, false, false) => qdw_groups::<K, false, false, true>(a, taps, c0),
            (false, false, true) => qdw_groups::<K, false, false, false>(a, taps, c0),
        }
    }
}

/// The full 7-pixel groups of one 4-channel chunk with the generated assembly
/// (`neon_qdw`), for [`Simd::qdw_groups7`]: taps `PACKED` ([`CBLOCK`] floats apart)
/// or compact (4), then the epilogue `UNIT` (scales all 1) and `GAMMA` (`out += gamma * y`)
/// name.
///
/// # Safety
/// As [`Simd::qdw_groups7`]; `K` is 3, 5 or 7.
#[inline(always)]
unsafe fn qdw_groups<const K: usize, const PACKED: bool, const UNIT: bool, const GAMMA: bool>(
    a: &QdwArgs,
    taps: *const f32,
    c0: usize,
) -> usize {
    // SAFETY: the caller's contract: NEON, `a`'s pointers valid for the row, `taps` for the
    // chunk's K²·3 tap vectors `ts` apart; `K` ∈ {3, 5, 7} (checked by `kernels::qdw_row`),
    // so each cast below names the array the rows are.
    unsafe {
        let c = a.c;
        let f = neon_qdw::Finish {
            stride: 4 * c,
            scales: a.scales.add(c0),
            bias: a.bias.add(c0),
            gamma: if GAMMA { a.gamma.add(c0) } else { a.gamma },
        };
        let mut out = a.out.add(c0);
        // The chunk's rows at pixel 0; each group adds its offset in bytes.
        let chunk = (c0 / CBLOCK) * (a.w + K - 1) * CBLOCK + c0 % CBLOCK;
        let rows: [*const f32; K] = core::array::from_fn(|ky| a.rows[ky].add(chunk));
        let r = rows.as_ptr();
        let mut x0 = 0;
        while x0 + 7 <= a.w {
            simd::qdw_copy_next::<Neon, K, 7, true>(a, x0, c0, 4);
            let off = x0 * CBLOCK * 4;
            let t = match (K, PACKED) {
                (3, true) => neon_qdw::taps_k3_packed(&*r.cast(), off, taps),
                (3, false) => neon_qdw::taps_k3_compact(&*r.cast(), off, taps),
                (5, true) => neon_qdw::taps_k5_packed(&*r.cast(), off, taps),
                (5, false) => neon_qdw::taps_k5_compact(&*r.cast(), off, taps),
                (_, true) => neon_qdw::taps_k7_packed(&*r.cast(), off, taps),
                (_, false) => neon_qdw::taps_k7_compact(&*r.cast(), off, taps),
            };
            out = match (UNIT, GAMMA) {
                (true, false) => neon_qdw::finish_unit_store(t, out, &f),
                (true, true) => neon_qdw::finish_unit_gamma(t, out, &f),
                (false, false) => neon_qdw::finish_scaled_store(t, out, &f),
                (false, true) => neon_qdw::finish_scaled_gamma(t, out, &f),
            };
            x0 += 7;
        }
        x0
    }
}

/// NEON int8 products, a vector covering 4 columns (16 bytes of a dot-layout panel).
///
/// * `SDOT` (FEAT_DotProd): `sdot` sums four s8·s8 products into each i32 lane (16 MACs
///   per instruction). The main loop uses the by-element form: one 16-byte load of a
///   row's activations serves four k-groups (`v.4b[lane]`); a broadcast load per group
///   models (llvm-mca, Neoverse-N1) at 60% of 2 `sdot`/cycle, this 5 x 16 tile at 93% with
///   no stack traffic (6 x 16 spills, 4 x 16 reaches 84%).
/// * Without: `smull` (i8·i8 into i16, at most 128·127), `addp` of adjacent products (at
///   most 32512: no i16 overflow), `sadalp` into the i32 lanes. Exact.
/// With `HALF`, the epilogue's GELU runs in half precision (`Precision::Fp16`).
#[derive(Clone, Copy)]
pub(crate) struct NeonDot<const SDOT: bool, const HALF: bool = false>;

// The impl is one unsafe group, under the SAFETY note below.
#[allow(unsafe_op_in_unsafe_fn)]
// SAFETY: NEON intrinsics, and with `SDOT` the DotProd instruction, only reachable from
// `gemm_q8` (NEON enabled) and `gemm_q8_sdot` (NEON and DotProd enabled); with `HALF` only
// from their `_fp16` twins (FEAT_FP16 enabled as well); pointers as the trait requires.
unsafe impl<const SDOT: bool, const HALF: bool> Dot for NeonDot<SDOT, HALF> {
    type Acc = int32x4_t;
    type A = int8x16_t;
    type B = int8x16_t;
    const COLS: usize = 4;
    const OFFSET: bool = false;
    const LANES4: bool = SDOT;
    const HALF_GELU: bool = HALF;
    #[inline(always)]
    unsafe fn init(_: i32) -> int32x4_t {
        vdupq_n_s32(0)
    }
    #[inline(always)]
    unsafe fn bcast_a(p: *const i8) -> int8x16_t {
        vreinterpretq_s8_s32(vdupq_n_s32(core::ptr::read_unaligned(p as *const i32)))
    }
    #[inline(always)]
    unsafe fn load_a4(p: *const i8) -> int8x16_t {
        vld1q_s8(p)
    }
    #[inline(always)]
    unsafe fn load_b(p: *const i8) -> int8x16_t {
        vld1q_s8(p)
    }
    #[inline(always)]
    unsafe fn dot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        if !SDOT {
            let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
            return vpadalq_s16(acc, vpaddq_s16(lo, vmull_high_s8(a, b)));
        }
        // `vdotq_s32` is still unstable in Rust: the instruction itself.
        // SAFETY: SDOT reads and writes registers only; DotProd is enabled in the leaf.
        unsafe {
            core::arch::asm!(
                "sdot {acc:v}.4s, {b:v}.16b, {a:v}.16b",
                acc = inout(vreg) acc,
                b = in(vreg) b,
                a = in(vreg) a,
                options(pure, nomem, nostack, preserves_flags)
            );
        }
        acc
    }
    #[inline(always)]
    unsafe fn dot_lane<const LANE: usize>(
        mut acc: int32x4_t,
        a: int8x16_t,
        b: int8x16_t,
    ) -> int32x4_t {
        // Only called with `LANES4`, that is with `SDOT`.
        debug_assert!(SDOT);
        // SAFETY: SDOT (by element) reads and writes registers only; DotProd is enabled in
        // the leaf that calls this.
        unsafe {
            core::arch::asm!(
                "sdot {acc:v}.4s, {b:v}.16b, {a:v}.4b[{lane}]",
                acc = inout(vreg) acc,
                b = in(vreg) b,
                a = in(vreg) a,
                lane = const LANE,
                options(pure, nomem, nostack, preserves_flags)
            );
        }
        acc
    }
    #[inline(always)]
    unsafe fn store(p: *mut i32, acc: int32x4_t) {
        vst1q_s32(p, acc)
    }
    type F = float32x4_t;
    #[inline(always)]
    unsafe fn scaled(acc: int32x4_t, scale: f32) -> float32x4_t {
        vmulq_n_f32(vcvtq_f32_s32(acc), scale)
    }
    const RESIDUAL: bool = true;
    #[inline(always)]
    unsafe fn residual_5x16(
        acc: [[int32x4_t; 4]; 5],
        k: usize,
        rs: *const f32,
        cs: *const f32,
        ra: (*const f32, *const f32),
        out: *mut f32,
        ldo: usize,
    ) -> bool {
        residual_5x16(acc, k, rs, cs, ra, out, ldo)
    }
    #[inline(always)]
    unsafe fn sdot_5x16(
        acc: &mut [[int32x4_t; 4]; 5],
        a: [*const i8; 5],
        b: *const i8,
        n: usize,
    ) -> bool {
        if SDOT {
            sdot_5x16(acc, a, b, n);
        }
        SDOT
    }
    #[inline(always)]
    unsafe fn park_5x16(acc: [[int32x4_t; 4]; 5], k: usize, rs: *const f32, tp: *mut f32) -> bool {
        park_5x16(acc, k, rs, tp);
        true
    }
}

/// The assembly of one row's pair of column vectors in [`residual_5x16`]: int32 sums in
/// registers `v$a`, `v$b` (consecutive, for one `ld1`/`st1`), row scale in lane `$rs`;
/// the column scales in v20/v21, gamma in v22/v23, bias (or zeros) in v24/v25, 2^23·1.5
/// in v30. Per vector: the sum converted exactly (`magic_cvt`), times the row scale,
/// `fmla` onto a copy of the bias by the column scale, the output row's vector loaded,
/// `fmla` by gamma, stored; then the next row.
#[rustfmt::skip]
macro_rules! residual_pair {
    ($a:literal, $b:literal, $rs:literal) => {
        concat!(
            magic_cvt!($a), magic_cvt!($b),
            "fmul v", $a, ".4s, v", $a, ".4s, ", $rs, "\n",
            "fmul v", $b, ".4s, v", $b, ".4s, ", $rs, "\n",
            "mov v26.16b, v24.16b\n",
            "mov v27.16b, v25.16b\n",
            "fmla v26.4s, v", $a, ".4s, v20.4s\n",
            "fmla v27.4s, v", $b, ".4s, v21.4s\n",
            "ld1 {{v", $a, ".4s, v", $b, ".4s}}, [{o}]\n",
            "fmla v", $a, ".4s, v26.4s, v22.4s\n",
            "fmla v", $b, ".4s, v27.4s, v23.4s\n",
            "st1 {{v", $a, ".4s, v", $b, ".4s}}, [{o}]\n",
            "add {o}, {o}, {ldo}\n",
        )
    };
}

/// `asm!` over the sdot GEMM's 5 x 16 tile of sums in v0-v19 (row `i`'s four in
/// v4i..v4i+3, consecutive for `ld1`/`st1`), the template and other operands as given:
/// `keep acc` reads them and writes them back into `acc`, `spent acc` reads them (the
/// block leaves other values in those registers).
#[rustfmt::skip]
macro_rules! tile_asm {
    (keep $acc:ident; $($rest:tt)*) => {
        core::arch::asm!(
            $($rest)*
            inout("v0") $acc[0][0], inout("v1") $acc[0][1], inout("v2") $acc[0][2], inout("v3") $acc[0][3],
            inout("v4") $acc[1][0], inout("v5") $acc[1][1], inout("v6") $acc[1][2], inout("v7") $acc[1][3],
            inout("v8") $acc[2][0], inout("v9") $acc[2][1], inout("v10") $acc[2][2], inout("v11") $acc[2][3],
            inout("v12") $acc[3][0], inout("v13") $acc[3][1], inout("v14") $acc[3][2], inout("v15") $acc[3][3],
            inout("v16") $acc[4][0], inout("v17") $acc[4][1], inout("v18") $acc[4][2], inout("v19") $acc[4][3],
        )
    };
    (spent $acc:ident; $($rest:tt)*) => {
        core::arch::asm!(
            $($rest)*
            inout("v0") $acc[0][0] => _, inout("v1") $acc[0][1] => _, inout("v2") $acc[0][2] => _, inout("v3") $acc[0][3] => _,
            inout("v4") $acc[1][0] => _, inout("v5") $acc[1][1] => _, inout("v6") $acc[1][2] => _, inout("v7") $acc[1][3] => _,
            inout("v8") $acc[2][0] => _, inout("v9") $acc[2][1] => _, inout("v10") $acc[2][2] => _, inout("v11") $acc[2][3] => _,
            inout("v12") $acc[3][0] => _, inout("v13") $acc[3][1] => _, inout("v14") $acc[3][2] => _, inout("v15") $acc[3][3] => _,
            inout("v16") $acc[4][0] => _, inout("v17") $acc[4][1] => _, inout("v18") $acc[4][2] => _, inout("v19") $acc[4][3] => _,
        )
    };
}

/// One k-group of [`sdot_5x16`]: the tile's four weight vectors for it (64 consecutive
/// bytes of the panel) by one `ld1`, then each row's four sums `+=` them times the row's
/// four activations of group `$g` (`sdot` by element).
#[rustfmt::skip]
macro_rules! sdot_group {
    ($g:literal) => {
        concat!(
            "ld1 {{v25.16b, v26.16b, v27.16b, v28.16b}}, [{b}], #64\n",
            sdot_row!(0, 1, 2, 3, 20, $g),
            sdot_row!(4, 5, 6, 7, 21, $g),
            sdot_row!(8, 9, 10, 11, 22, $g),
            sdot_row!(12, 13, 14, 15, 23, $g),
            sdot_row!(16, 17, 18, 19, 24, $g),
        )
    };
}

/// Row sums `v$s0..v$s3` `+=` weights v25-v28 times lane `$g` of activations `v$a`.
#[rustfmt::skip]
macro_rules! sdot_row {
    ($s0:literal, $s1:literal, $s2:literal, $s3:literal, $a:literal, $g:literal) => {
        concat!(
            "sdot v", $s0, ".4s, v25.16b, v", $a, ".4b[", $g, "]\n",
            "sdot v", $s1, ".4s, v26.16b, v", $a, ".4b[", $g, "]\n",
            "sdot v", $s2, ".4s, v27.16b, v", $a, ".4b[", $g, "]\n",
            "sdot v", $s3, ".4s, v28.16b, v", $a, ".4b[", $g, "]\n",
        )
    };
}

/// The sdot GEMM's 5 x 16 tile, `n` (>= 1) times sixteen inner steps, in assembly: per
/// iteration each row's sixteen activations (`ldr q`, post-indexed), then four k-groups of
/// one `ld1` of the tile's four weight vectors and 20 `sdot` by element; the sums stay in
/// v0-v19 (row `i`'s four in v4i..v4i+3, where the tile's exits want them). LLVM loaded the
/// weight vectors one `ldr q` each (two micro-ops apiece in the N1 model, against four for
/// an `ld1` of four): 125 micro-ops an iteration, dispatch-bound at 43.1 cycles for 80
/// `sdot` (92.8% of two a cycle); this is 112, 97.4%. Integer sums: the same whatever the
/// order.
///
/// # Safety
/// NEON and DotProd; `a[i]` valid for `16·n` bytes, `b` for `256·n` (the tile's panel
/// from the first step on).
#[inline(always)]
unsafe fn sdot_5x16(acc: &mut [[int32x4_t; 4]; 5], a: [*const i8; 5], b: *const i8, n: usize) {
    debug_assert!(n >= 1);
    // SAFETY: reads `16·n` bytes from each row pointer and `256·n` from `b`, as the caller
    // guarantees; writes nothing in memory; registers as declared (the sums in v0-v19
    // updated, v20-v28 clobbered, the pointers and the count advanced); the flags are
    // clobbered by `subs` (not `preserves_flags`), no stack.
    unsafe {
        tile_asm!(
            keep acc;
            "// quadra-mca: q8_sdot_5x16",
            "2:",
            "ldr q20, [{a0}], #16",
            "ldr q21, [{a1}], #16",
            "ldr q22, [{a2}], #16",
            "ldr q23, [{a3}], #16",
            "ldr q24, [{a4}], #16",
            sdot_group!(0),
            sdot_group!(1),
            sdot_group!(2),
            sdot_group!(3),
            "subs {n}, {n}, #1",
            "b.ne 2b",
            a0 = inout(reg) a[0] => _,
            a1 = inout(reg) a[1] => _,
            a2 = inout(reg) a[2] => _,
            a3 = inout(reg) a[3] => _,
            a4 = inout(reg) a[4] => _,
            b = inout(reg) b => _,
            n = inout(reg) n => _,
            out("v20") _,
            out("v21") _,
            out("v22") _,
            out("v23") _,
            out("v24") _,
            out("v25") _,
            out("v26") _,
            out("v27") _,
            out("v28") _,
            options(nostack, readonly),
        );
    }
}

/// One row of [`park_5x16`]: its four sums (registers `v$a` to `v$d`, consecutive)
/// converted by `$cvt` (`magic_cvt` or `scvtf_cvt`), times the row scale in lane `$rs`,
/// stored by one `st1` at `{tp}`, which moves on one tile row.
#[rustfmt::skip]
macro_rules! park_row {
    ($cvt:ident, $a:literal, $b:literal, $c:literal, $d:literal, $rs:literal) => {
        concat!(
            $cvt!($a), $cvt!($b), $cvt!($c), $cvt!($d),
            "fmul v", $a, ".4s, v", $a, ".4s, ", $rs, "\n",
            "fmul v", $b, ".4s, v", $b, ".4s, ", $rs, "\n",
            "fmul v", $c, ".4s, v", $c, ".4s, ", $rs, "\n",
            "fmul v", $d, ".4s, v", $d, ".4s, ", $rs, "\n",
            "st1 {{v", $a, ".4s, v", $b, ".4s, v", $c, ".4s, v", $d, ".4s}}, [{tp}], {stride}\n",
        )
    };
}

/// An int32 vector to f32, exact for |sum| <= 2^22 (see [`residual_5x16`]); 2^23·1.5 in v30.
#[rustfmt::skip]
macro_rules! magic_cvt {
    ($r:literal) => {
        concat!(
            "add v", $r, ".4s, v", $r, ".4s, v30.4s\n",
            "fsub v", $r, ".4s, v", $r, ".4s, v30.4s\n",
        )
    };
}

/// An int32 vector to f32 by `scvtf` (any sum).
#[rustfmt::skip]
macro_rules! scvtf_cvt {
    ($r:literal) => {
        concat!("scvtf v", $r, ".4s, v", $r, ".4s\n")
    };
}

/// [`park_5x16`]'s assembly with one conversion (`magic_cvt` or `scvtf_cvt`).
macro_rules! park_asm {
    ($cvt:ident, $acc:ident, $rs:ident, $tp:ident) => {
        tile_asm!(
            spent $acc;
            "// quadra-mca: q8_dequant_5x16",
            "dup v30.4s, {m:w}",
            "ld1 {{v28.4s}}, [{rs}]",
            "ldr s29, [{rs}, #16]",
            park_row!($cvt, 0, 1, 2, 3, "v28.s[0]"),
            park_row!($cvt, 4, 5, 6, 7, "v28.s[1]"),
            park_row!($cvt, 8, 9, 10, 11, "v28.s[2]"),
            park_row!($cvt, 12, 13, 14, 15, "v28.s[3]"),
            park_row!($cvt, 16, 17, 18, 19, "v29.s[0]"),
            m = in(reg) 0x4B40_0000u32,
            rs = in(reg) $rs,
            tp = inout(reg) $tp => _,
            stride = in(reg) TILE_COLS * 4,
            out("v28") _,
            out("v29") _,
            out("v30") _,
            options(nostack, preserves_flags),
        )
    };
}

/// The sdot GEMM's whole 5 x 16 tile parked for the epilogue, in assembly: `(acc as
/// f32)·rs` in every lane (as `Dot::scaled`: the same bits), each row's four vectors
/// stored by one `st1` (two micro-ops a vector in the N1 model, against four for LLVM's
/// `str q` each), converted by the exact integer trick for `k <= 256` (see
/// [`residual_5x16`]; PW1's k is C: every block of QuadraNet36-T but the last stage's),
/// else by `scvtf` (two micro-ops on one pipe).
///
/// # Safety
/// NEON; `rs` valid for 5 floats, `tp` for 5 rows of 16 floats, [`TILE_COLS`] apart.
#[inline(always)]
unsafe fn park_5x16(acc: [[int32x4_t; 4]; 5], k: usize, rs: *const f32, tp: *mut f32) {
    // SAFETY: reads 20 bytes at `rs`, writes the first 64 bytes of 5 rows `4·TILE_COLS`
    // bytes apart at `tp`, as the caller guarantees; registers as declared (the sums in
    // v0-v19 consumed, v28-v30 clobbered), no stack of its own, the flags untouched.
    unsafe {
        if k <= 256 {
            park_asm!(magic_cvt, acc, rs, tp);
        } else {
            park_asm!(scvtf_cvt, acc, rs, tp);
        }
    }
}

/// PW2's residual epilogue (`ScaleAdd`) of the sdot GEMM's whole 5 x 16 tile from its
/// registers, in assembly: `out = fma(gamma, fma((acc as f32)·rs, cs, bias), out)` in
/// every lane, the operations of `simd::residual` in its order (same bits), `bias` zero
/// when null. In Rust (`simd::residual`) LLVM stored each vector alone (`str q`, four
/// micro-ops in the N1 model against two per vector for an `st1` of two registers) and
/// converted with `scvtf` (two micro-ops on one pipe): 1.18 cycles per value modeled.
/// Here a row's pair of vectors is loaded and stored at once, in place of the sums (each
/// row's four sums sit in four consecutive registers, v0 to v19), and each sum is converted
/// by an integer trick: `sum + 0x4B400000` read as a float is `12582912 + sum` exactly
/// for |sum| <= 2^22, so only for `k <= 256`, where |sum| <= k·128·128 <= 2^22 even with
/// -128s (PW2's hidden slices have k <= 128). Returns false, having done nothing, for
/// larger `k`.
///
/// # Safety
/// NEON; `rs` valid for 5 floats, `cs`, `gamma` and (unless null) `bias` for 16, `out`
/// for 5 rows of 16, `ldo` floats apart.
#[inline(always)]
unsafe fn residual_5x16(
    acc: [[int32x4_t; 4]; 5],
    k: usize,
    rs: *const f32,
    cs: *const f32,
    (bias, gamma): (*const f32, *const f32),
    out: *mut f32,
    ldo: usize,
) -> bool {
    if k > 256 {
        return false;
    }
    // SAFETY: reads 20 bytes at `rs`, 64 at `cs`, `gamma` and (if not null) `bias`, reads
    // and writes 5 rows of 64 bytes at `out`, `4·ldo` bytes apart, as the caller
    // guarantees; registers as declared (the sums in v0-v19 consumed, v20-v30 clobbered,
    // the pointer registers advanced), no stack, and the flags untouched (`cbz` reads
    // none).
    unsafe {
        tile_asm!(
            spent acc;
            "// quadra-mca: q8_residual_5x16",
            "dup v30.4s, {m:w}",
            "ld1 {{v28.4s}}, [{rs}]",
            "ldr s29, [{rs}, #16]",
            "ld1 {{v20.4s, v21.4s}}, [{cs}], #32",
            "ld1 {{v22.4s, v23.4s}}, [{g}], #32",
            "movi v24.4s, #0",
            "movi v25.4s, #0",
            "cbz {b}, 3f",
            "ld1 {{v24.4s, v25.4s}}, [{b}], #32",
            "3:",
            "mov {o}, {out}",
            residual_pair!(0, 1, "v28.s[0]"),
            residual_pair!(4, 5, "v28.s[1]"),
            residual_pair!(8, 9, "v28.s[2]"),
            residual_pair!(12, 13, "v28.s[3]"),
            residual_pair!(16, 17, "v29.s[0]"),
            "ld1 {{v20.4s, v21.4s}}, [{cs}]",
            "ld1 {{v22.4s, v23.4s}}, [{g}]",
            "cbz {b}, 4f",
            "ld1 {{v24.4s, v25.4s}}, [{b}]",
            "4:",
            "add {o}, {out}, #32",
            residual_pair!(2, 3, "v28.s[0]"),
            residual_pair!(6, 7, "v28.s[1]"),
            residual_pair!(10, 11, "v28.s[2]"),
            residual_pair!(14, 15, "v28.s[3]"),
            residual_pair!(18, 19, "v29.s[0]"),
            m = in(reg) 0x4B40_0000u32,
            rs = in(reg) rs,
            cs = inout(reg) cs => _,
            g = inout(reg) gamma => _,
            b = inout(reg) bias => _,
            o = out(reg) _,
            out = in(reg) out,
            ldo = in(reg) ldo * 4,
            out("v20") _,
            out("v21") _,
            out("v22") _,
            out("v23") _,
            out("v24") _,
            out("v25") _,
            out("v26") _,
            out("v27") _,
            out("v28") _,
            out("v29") _,
            out("v30") _,
            options(nostack, preserves_flags),
        );
    }
    true
}

/// # Safety
/// CPU must have NEON; lengths as checked by `kernels::gemm`.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn gemm<W: Elem>(g: &GemmArgs, b: *const W) {
    // SAFETY: the caller holds this ISA's `Kernels` token and checked every length
    // behind the pointers (see `kernels::leaf!`).
    unsafe {
        // f16 and int8 weights: widened once per panel (modeled A76: the 5 x 16 tile that
        // widens as it loads reaches 61% (f16) and 52% (int8) of the fmla peak, the f32 one
        // 93%) when more than one row tile reads each panel (not the one-row head).
        if !W::F32 && g.k <= simd::WIDE_K && g.m > 5 {
            simd::gemm_widened::<Neon, W, 5, 4>(g, b)
        } else {
            simd::gemm::<Neon, W, 5, 4>(g, b)
        }
    }
}

/// The half-precision GEMM ([`crate::isa::Precision::Fp16`], see `neon_fp16`).
///
/// # Safety
/// CPU must have NEON and FEAT_FP16; lengths as checked by `kernels::gemm`;
/// `neon_fp16::takes(g.k)`.
#[target_feature(enable = "neon,fp16")]
pub(crate) unsafe fn gemm_fp16<W: neon_fp16::HalfPanel>(g: &GemmArgs, b: *const W) {
    // SAFETY: the caller holds a `Kernels` token with FEAT_FP16 and checked every length
    // behind the pointers and that the weights fit (see `kernels::gemm`).
    unsafe { neon_fp16::gemm::<W, false, false>(g, b) }
}

/// The half-precision GEMM on activations that are f16 already (`kernels::gemm_half_rows`).
///
/// # Safety
/// CPU must have NEON and FEAT_FP16; pointers as checked by `kernels::gemm_half_rows`;
/// `neon_fp16::takes(g.k)`.
#[target_feature(enable = "neon,fp16")]
pub(crate) unsafe fn gemm_fp16_half_rows<W: neon_fp16::HalfPanel>(g: &GemmArgs, b: *const W) {
    // SAFETY: the caller holds a `Kernels` token with FEAT_FP16 and checked every length
    // behind the pointers and that the weights fit.
    unsafe { neon_fp16::gemm::<W, true, false>(g, b) }
}

/// The half-precision GEMM with a GELU epilogue written as halves
/// (`kernels::gemm_gelu_half`): on f32 activation rows, or with `HALF_A` on f16 ones.
///
/// # Safety
/// CPU must have NEON and FEAT_FP16; pointers as checked by `kernels::gemm_gelu_half`;
/// `neon_fp16::takes(g.k)`.
#[target_feature(enable = "neon,fp16")]
pub(crate) unsafe fn gemm_fp16_gelu_half<W: neon_fp16::HalfPanel, const HALF_A: bool>(
    g: &GemmArgs,
    b: *const W,
) {
    // SAFETY: the caller holds a `Kernels` token with FEAT_FP16 and checked every length
    // behind the pointers and that the weights fit.
    unsafe { neon_fp16::gemm::<W, HALF_A, true>(g, b) }
}

/// # Safety
/// CPU must have NEON; pointers as checked by `kernels::qdw_row`.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn qdw_row<W: Elem>(k: usize, a: &QdwArgs, taps: *const W) {
    // SAFETY: the caller holds this ISA's `Kernels` token and checked every length
    // behind the pointers (see `kernels::leaf!`).
    unsafe {
        match k {
            3 => simd::qdw_row::<Neon, W, 3, 7>(a, taps),
            5 => simd::qdw_row::<Neon, W, 5, 7>(a, taps),
            _ => simd::qdw_row::<Neon, W, 7, 7>(a, taps),
        }
    }
}

/// The QDW row in half precision, on half-precision rows ([`crate::isa::Precision::Fp16`],
/// see `neon_fp16_qdw`).
///
/// # Safety
/// CPU must have NEON and FEAT_FP16; pointers as checked by `kernels::qdw_row`.
#[target_feature(enable = "neon,fp16")]
pub(crate) unsafe fn qdw_row_fp16<W: Elem>(k: usize, a: &QdwArgs, taps: *const W) {
    // SAFETY: the caller holds a `Kernels` token with FEAT_FP16 and checked every length
    // behind the pointers.
    unsafe {
        match k {
            3 => neon_fp16_qdw::qdw_row::<W, 3>(a, taps),
            5 => neon_fp16_qdw::qdw_row::<W, 5>(a, taps),
            _ => neon_fp16_qdw::qdw_row::<W, 7>(a, taps),
        }
    }
}

/// A row into a half-precision QDW row (`neon_fp16_qdw::block_row`; the rounding is
/// ARMv8.0's `fcvtn`).
///
/// # Safety
/// CPU must have NEON; lengths as checked by `kernels::block_row`.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn block_row_half(src: *const f32, w: usize, c: usize, k: usize, dst: *mut u16) {
    // SAFETY: the caller holds a NEON token and checked every length behind the pointers.
    unsafe { neon_fp16_qdw::block_row(src, w, c, k, dst) }
}

/// LayerNorm into a half-precision QDW row (`simd::layer_norm_rows_half`).
///
/// # Safety
/// CPU must have NEON; pointers in `a` valid as `simd::layer_norm_rows_half` requires.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn layer_norm_rows_half(a: &LnArgs) {
    // SAFETY: the caller holds a NEON token and checked every length behind the pointers.
    unsafe { simd::layer_norm_rows_half::<Neon>(a) }
}

/// GELU with `g` in half precision ([`crate::isa::Precision::Fp16`], see `neon_fp16`).
///
/// # Safety
/// CPU must have NEON and FEAT_FP16; `p` valid for `len` floats.
#[target_feature(enable = "neon,fp16")]
pub(crate) unsafe fn gelu_fp16_slice(p: *mut f32, len: usize) {
    // SAFETY: the caller holds a `Kernels` token with FEAT_FP16 and passes a slice's
    // pointer and length.
    unsafe { neon_fp16::gelu_slice(p, len) }
}

/// # Safety
/// CPU must have NEON; `p` valid for `len` floats.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn gelu_slice(p: *mut f32, len: usize) {
    // SAFETY: the caller holds this ISA's `Kernels` token and checked every length
    // behind the pointers (see `kernels::leaf!`).
    unsafe { simd::gelu_slice::<Neon>(p, len) }
}

/// # Safety
/// CPU must have NEON; pointers in `a` valid as `simd::layer_norm_rows` requires.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn layer_norm_rows(a: &LnArgs) {
    // SAFETY: the caller holds this ISA's `Kernels` token and checked every length
    // behind the pointers (see `kernels::leaf!`).
    unsafe { simd::layer_norm_rows::<Neon>(a) }
}

/// # Safety
/// CPU must have NEON; pointers as checked by `kernels::dw_row`.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn dw_row(k: usize, a: &DwArgs) {
    // SAFETY: the caller holds this ISA's `Kernels` token and checked every length
    // behind the pointers (see `kernels::leaf!`).
    unsafe {
        match k {
            3 => simd::dw_row::<Neon, 3, 8>(a),
            5 => simd::dw_row::<Neon, 5, 8>(a),
            _ => simd::dw_row::<Neon, 7, 8>(a),
        }
    }
}

/// # Safety
/// CPU must have NEON; lengths as checked by `kernels::block_row`.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn block_row(src: *const f32, w: usize, c: usize, k: usize, dst: *mut f32) {
    // SAFETY: the caller holds this ISA's `Kernels` token and checked every length
    // behind the pointers (see `kernels::leaf!`).
    unsafe { simd::block_row::<Neon>(src, w, c, k, dst) }
}

/// The w8a8 activation rows, bit for bit as `q8::quantize_rows_ref`, in NEON's own two
/// passes of sixteen values (the generic `q8::quantize` spends six instructions on four):
///
/// * `max |x|` alone: `fmax` returns NaN when either input is NaN, so a NaN or an infinity
///   in the row leaves `amax` non-finite, which `q8::row_scale` turns into the NaN scale
///   (the generic loop sums `x - x` for that, on ISAs whose max drops NaNs).
/// * `fcvtns` rounds `x · (127 / amax)` to the nearest integer, ties to even, as `rintf`
///   does, and the narrows (`sqxtn`) keep it: no clamp is needed, as a finite row gives
///   `|x · inv| <= 127·(1 + 2^-24)^2 < 127.5` (`row_scale` never returns an infinite
///   `inv`), and a row holding a NaN or an infinity has `inv = 0`, its values 0 (`fcvtns`
///   of NaN, like the reference's `NaN as i32`).
/// * The sum of the row's int8 values by pairwise widening adds (`saddlp`, `sadalp`).
///
/// # Safety
/// CPU must have NEON; pointers as checked by `q8::quantize_rows`.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn quantize_rows(q: &QuantArgs) {
    // SAFETY: the caller holds this ISA's `Kernels` token and checked every length behind
    // the pointers (see `kernels::leaf!`): row `i` of `q.k` floats at `q.a + i·q.lda`, its
    // `q.k` int8 values at `q.q + i·q.k`, `q.m` scales and sums. Every load below stays
    // inside the row (`c + 16 <= k`, then `simd::ld_any` of the `n < 4` left), every store
    // inside the output row (whole 16-byte vectors, the tail through `tail`).
    unsafe {
        let k = q.k;
        for i in 0..q.m {
            let x = q.a.add(i * q.lda);
            let mut m = [vdupq_n_f32(0.0); 4];
            let mut c = 0;
            while c + 16 <= k {
                for (t, m) in m.iter_mut().enumerate() {
                    *m = vmaxq_f32(*m, vabsq_f32(vld1q_f32(x.add(c + 4 * t))));
                }
                c += 16;
            }
            while c < k {
                let n = (k - c).min(4);
                m[0] = vmaxq_f32(m[0], vabsq_f32(simd::ld_any::<Neon>(x.add(c), n)));
                c += n;
            }
            let amax = vmaxvq_f32(vmaxq_f32(vmaxq_f32(m[0], m[1]), vmaxq_f32(m[2], m[3])));
            // A NaN or an infinity made `amax` non-finite, which `row_scale` checks.
            let (scale, inv) = q8::row_scale(amax, true);
            let inv = vdupq_n_f32(inv);
            let qrow = q.q.add(i * k);
            let mut sum = vdupq_n_s32(0);
            // Sixteen values to sixteen int8; their sum into `sum`.
            let narrow = |v: [float32x4_t; 4], sum: &mut int32x4_t| {
                let r = v.map(|v| vcvtnq_s32_f32(vmulq_f32(v, inv)));
                let lo = vqmovn_high_s32(vqmovn_s32(r[0]), r[1]);
                let hi = vqmovn_high_s32(vqmovn_s32(r[2]), r[3]);
                let b = vqmovn_high_s16(vqmovn_s16(lo), hi);
                *sum = vpadalq_s16(*sum, vpaddlq_s8(b));
                b
            };
            let mut c = 0;
            while c + 16 <= k {
                let v = core::array::from_fn(|t| vld1q_f32(x.add(c + 4 * t)));
                vst1q_s8(qrow.add(c), narrow(v, &mut sum));
                c += 16;
            }
            if c < k {
                // Fewer than sixteen left: zeros beyond the row quantise to 0 and add 0.
                let n = k - c;
                let mut v = [vdupq_n_f32(0.0); 4];
                for (t, v) in v.iter_mut().enumerate().take(n.div_ceil(4)) {
                    *v = simd::ld_any::<Neon>(x.add(c + 4 * t), (n - 4 * t).min(4));
                }
                let mut tail = [0i8; 16];
                vst1q_s8(tail.as_mut_ptr(), narrow(v, &mut sum));
                core::ptr::copy_nonoverlapping(tail.as_ptr(), qrow.add(c), n);
            }
            *q.scales.add(i) = scale;
            *q.sums.add(i) = vaddvq_s32(sum);
        }
    }
}

/// [`quantize_rows`] of rows of halves (`q.a` points at halves, rows `q.lda` halves apart),
/// `q8::quantize_row_half_ref` bit for bit: `max|x|` with `fmax .8h` (a NaN carries
/// through), then, where the inverse scale fits f16, `fmla .8h` of it onto 1536 (the
/// integer in the low bits) and a saturating narrow, sixteen values an iteration; rows with a larger inverse scale (a
/// `max|x|` under ~0.0019) are widened to f32 and quantised as [`quantize_rows`] does.
///
/// # Safety
/// CPU must have NEON and FEAT_FP16; pointers as checked by `q8::quantize_rows_half`.
#[target_feature(enable = "neon,fp16")]
pub(crate) unsafe fn quantize_rows_half(q: &QuantArgs) {
    use super::neon_fp16::{fabs, fmax, fmaxv, fmla, widen, H8};
    use q8::MAGIC_1536;
    // SAFETY: the caller holds an fp16 token and checked every length behind the pointers:
    // row `i`'s `q.k` halves at `q.a + i·q.lda` halves, its int8 values at `q.q + i·q.k`,
    // `q.m` scales and sums. Whole vectors are loaded and stored inside the rows
    // (`c + 16 <= k`); the tail goes through zeroed stack copies.
    unsafe {
        let k = q.k;
        // Sixteen halves from `x` (the `n < 16` left of a row: zeros past them).
        let tail = |x: *const u16, n: usize| {
            let mut t = [0u16; 16];
            core::ptr::copy_nonoverlapping(x, t.as_mut_ptr(), n);
            [vld1q_u16(t.as_ptr()), vld1q_u16(t.as_ptr().add(8))]
        };
        for i in 0..q.m {
            let x = q.a.cast::<u16>().add(i * q.lda);
            let mut m = [vdupq_n_u16(0); 2];
            let mut c = 0;
            while c + 16 <= k {
                m[0] = fmax(m[0], fabs(vld1q_u16(x.add(c))));
                m[1] = fmax(m[1], fabs(vld1q_u16(x.add(c + 8))));
                c += 16;
            }
            if c < k {
                let v = tail(x.add(c), k - c);
                m[0] = fmax(m[0], fabs(v[0]));
                m[1] = fmax(m[1], fabs(v[1]));
            }
            let amax = crate::math::f16::to_f64(fmaxv(fmax(m[0], m[1]))) as f32;
            // A NaN or an infinity made `amax` non-finite, which `row_scale` checks.
            let (scale, inv) = q8::row_scale(amax, true);
            let qrow = q.q.add(i * k);
            let mut sum = vdupq_n_s32(0);
            // Sixteen int16 to sixteen int8 (saturating; |r| <= 127 here); their sum.
            let pack = |r: [int16x8_t; 2], sum: &mut int32x4_t| {
                let b = vqmovn_high_s16(vqmovn_s16(r[0]), r[1]);
                *sum = vpadalq_s16(*sum, vpaddlq_s8(b));
                b
            };
            // The row's values, sixteen at a time, through `$narrow` (its int8, summed).
            macro_rules! quantise {
                ($narrow:ident) => {{
                    let mut c = 0;
                    while c + 16 <= k {
                        let v = [vld1q_u16(x.add(c)), vld1q_u16(x.add(c + 8))];
                        vst1q_s8(qrow.add(c), pack($narrow!(v), &mut sum));
                        c += 16;
                    }
                    if c < k {
                        // Zeros past the row quantise to 0 and add 0.
                        let n = k - c;
                        let mut t = [0i8; 16];
                        let v = tail(x.add(c), n);
                        vst1q_s8(t.as_mut_ptr(), pack($narrow!(v), &mut sum));
                        core::ptr::copy_nonoverlapping(t.as_ptr(), qrow.add(c), n);
                    }
                }};
            }
            // (No closures around the FEAT_FP16 assembly: `array::map` and the like would
            // inline it into code compiled without the feature.)
            if inv > 0.0 && inv <= 65504.0 {
                let inv16 = vdupq_n_u16(crate::math::f16::from_f64(f64::from(inv)));
                // `x·inv + 1536` in one rounding lies in [1024, 2048), where f16's step is
                // 1: it is 1536 plus `x·inv` rounded to an integer (ties to even), read off
                // its bits. (`fcvtns .8h` is four micro-ops on one pipe in the A76 model.)
                let magic = vdupq_n_u16(MAGIC_1536);
                let bits = vreinterpretq_s16_u16(magic);
                macro_rules! by_half {
                    ($v:expr) => {{
                        let v: [H8; 2] = $v;
                        let r0 = vreinterpretq_s16_u16(fmla(magic, v[0], inv16));
                        let r1 = vreinterpretq_s16_u16(fmla(magic, v[1], inv16));
                        [vsubq_s16(r0, bits), vsubq_s16(r1, bits)]
                    }};
                }
                quantise!(by_half);
            } else {
                let inv = vdupq_n_f32(inv);
                macro_rules! by_f32 {
                    ($v:expr) => {{
                        let v: [H8; 2] = $v;
                        let mut r = [vdupq_n_s16(0); 2];
                        for (r, &h) in r.iter_mut().zip(v.iter()) {
                            let (lo, hi) = widen(h);
                            let lo = vcvtnq_s32_f32(vmulq_f32(lo, inv));
                            let hi = vcvtnq_s32_f32(vmulq_f32(hi, inv));
                            *r = vqmovn_high_s32(vqmovn_s32(lo), hi);
                        }
                        r
                    }};
                }
                quantise!(by_f32);
            }
            *q.scales.add(i) = scale;
            *q.sums.add(i) = vaddvq_s32(sum);
        }
    }
}

/// # Safety
/// CPU must have NEON; pointers as checked by `q8::gemm_q8`.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn gemm_q8(g: &Q8Args) {
    // SAFETY: the caller holds this ISA's `Kernels` token and checked every length
    // behind the pointers (see `kernels::leaf!`).
    unsafe { q8::gemm::<NeonDot<false>, Neon, 4, 4>(g) }
}

/// # Safety
/// CPU must have NEON and FEAT_DotProd; pointers as checked by `q8::gemm_q8`.
#[target_feature(enable = "neon,dotprod")]
pub(crate) unsafe fn gemm_q8_sdot(g: &Q8Args) {
    // SAFETY: the caller holds this ISA's `Kernels` token and checked every length
    // behind the pointers (see `kernels::leaf!`).
    unsafe { q8::gemm::<NeonDot<true>, Neon, 5, 4>(g) }
}

/// [`gemm_q8`] with the epilogue's GELU in half precision (`Precision::Fp16`).
///
/// # Safety
/// CPU must have NEON and FEAT_FP16; pointers as checked by `q8::gemm_q8`.
#[target_feature(enable = "neon,fp16")]
pub(crate) unsafe fn gemm_q8_fp16(g: &Q8Args) {
    // SAFETY: the caller holds a NEON token with FEAT_FP16 and checked every length
    // behind the pointers.
    unsafe { q8::gemm::<NeonDot<false, true>, Neon, 4, 4>(g) }
}

/// [`gemm_q8_sdot`] with the epilogue's GELU in half precision (`Precision::Fp16`).
///
/// # Safety
/// CPU must have NEON, FEAT_DotProd and FEAT_FP16; pointers as checked by `q8::gemm_q8`.
#[target_feature(enable = "neon,dotprod,fp16")]
pub(crate) unsafe fn gemm_q8_sdot_fp16(g: &Q8Args) {
    // SAFETY: the caller holds a NEON token with FEAT_DotProd and FEAT_FP16 and checked
    // every length behind the pointers.
    unsafe { q8::gemm::<NeonDot<true, true>, Neon, 5, 4>(g) }
}
