//! Half-precision (FEAT_FP16) NEON: the pointwise GEMM of [`Precision::Fp16`].
//!
//! `fmla v.8h` does eight multiply-adds where `fmla v.4s` does four, on the same two
//! pipes of a Cortex-A76. Stable Rust has no f16 vector type or FEAT_FP16 intrinsics, so
//! the eight-lane values travel in `uint16x8_t` registers and each half-precision
//! instruction is a one-line `asm!` block (registers only: `pure, nomem`); LLVM still
//! allocates the registers and schedules the loads around them. Each block is written with
//! `fp16_asm!` (below).
//!
//! The arithmetic, which [`crate::kernels::scalar::gemm_fp16`] defines bit for
//! bit: activations and weights rounded to f16 (round to nearest even, `fcvtn`); for each
//! output, the products of a run of [`FP16_CHUNK`] inner steps summed by `fmla .8h` in
//! order from +0 (each step one f16 rounding of the exact `acc + a·b`); each run's sum
//! widened exactly (`fcvtl`) and added into an f32 accumulator (the first run stored as
//! it is); then the f32 epilogue of the f32 GEMM.
//!
//! [`Precision::Fp16`]: crate::isa::Precision::Fp16

use core::arch::aarch64::*;
use core::arch::asm;

/// `asm!` for FEAT_FP16 instructions: the block opens with `.arch_extension fp16`. The
/// blocks only ever run inside leaves with FEAT_FP16 enabled, but a debug build also emits
/// the one-instruction wrappers as functions of their own, without it, and the assembler
/// refused them there (release builds inline every wrapper and drop those copies).
macro_rules! fp16_asm {
    ($($t:tt)*) => {
        asm!(".arch_extension fp16", $($t)*)
    };
}
use core::mem::MaybeUninit;

use super::aarch64_neon::Neon;
use super::simd::{epilogue, ld_any, residual, st_any, EpiPtrs, GemmArgs, TILE_COLS, WIDE_K};
use super::FP16_MAX_K;
use super::PANEL;
use crate::isa::FP16_CHUNK;

/// Eight f16 lanes.
pub(super) type H8 = uint16x8_t;

/// Rows of the main tile: 4 x 16 is 8 accumulators of 8 halves and the 16 f32 ones their
/// runs are added into, 4 activation vectors (by-element operands must be in v0-v15) and
/// the two weight vectors of a step: 30 of the 32 registers. (8 x 16 needs its f32 sums
/// on the stack: modeled on the A76, its fold of a run then took 126 cycles against the
/// run's 345, with the activations' conversion in the loop as well.)
const MR: usize = 4;

/// `acc + b·a[L]`, eight lanes, one rounding (FMLA, by element).
///
/// # Safety
/// FEAT_FP16 enabled in the calling leaf.
#[inline(always)]
unsafe fn fmla_lane<const L: i32>(mut acc: H8, b: H8, a: H8) -> H8 {
    // SAFETY: registers only; FEAT_FP16 is the caller's contract.
    unsafe {
        fp16_asm!(
            "fmla {acc:v}.8h, {b:v}.8h, {a:v}.h[{l}]",
            acc = inout(vreg) acc,
            b = in(vreg) b,
            a = in(vreg_low16) a,
            l = const L,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// Eight f32 (`lo` then `hi`) rounded to f16, to nearest even (FCVTN, FCVTN2: ARMv8.0).
#[inline(always)]
pub(super) unsafe fn narrow(lo: float32x4_t, hi: float32x4_t) -> H8 {
    let r: H8;
    // SAFETY: registers only. `r` is an `out` (not `lateout`) operand, so it is never
    // allocated over `hi`, which the second instruction still reads.
    unsafe {
        asm!(
            "fcvtn {r:v}.4h, {lo:v}.4s",
            "fcvtn2 {r:v}.8h, {hi:v}.4s",
            r = out(vreg) r,
            lo = in(vreg) lo,
            hi = in(vreg) hi,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    r
}

/// The eight halves widened to f32, exactly (FCVTL, FCVTL2: ARMv8.0).
#[inline(always)]
pub(super) unsafe fn widen(h: H8) -> (float32x4_t, float32x4_t) {
    let (lo, hi): (float32x4_t, float32x4_t);
    // SAFETY: registers only. `lo` is an `out` (not `lateout`) operand, so it is never
    // allocated over `h`, which the second instruction still reads.
    unsafe {
        asm!(
            "fcvtl {lo:v}.4s, {h:v}.4h",
            "fcvtl2 {hi:v}.4s, {h:v}.8h",
            lo = out(vreg) lo,
            hi = lateout(vreg) hi,
            h = in(vreg) h,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    (lo, hi)
}

/// Eight int16 converted to f16, exact for `-512 <= x <= 512` (int8 weights): `x` added to
/// the bits of 1536.0 (0x6600; f16's step is 1 in [1024, 2048], so the bits of `1536 + x`),
/// then 1536 subtracted in f16. Two single-micro-op instructions on either SIMD pipe, where
/// `scvtf .8h` is four micro-ops on one in the A76 model (the panel conversion: 0.57 cycles
/// per weight, 0.32 so).
///
/// # Safety
/// FEAT_FP16 enabled in the calling leaf.
#[inline(always)]
unsafe fn i16_to_f16(x: int16x8_t) -> H8 {
    // SAFETY: registers only; FEAT_FP16 is the caller's contract.
    unsafe {
        let k = vdupq_n_s16(0x6600);
        fsub(
            vreinterpretq_u16_s16(vaddq_s16(x, k)),
            vreinterpretq_u16_s16(k),
        )
    }
}

/// One FEAT_FP16 instruction on eight halves, as a function: `$name(a[, b]) = $ins r, a[, b]`.
macro_rules! half_op {
    ($(#[$doc:meta])* $name:ident($a:ident $(, $b:ident)?) = $ins:literal) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// FEAT_FP16 enabled in the calling leaf.
        #[inline(always)]
        pub(super) unsafe fn $name($a: H8 $(, $b: H8)?) -> H8 {
            let r: H8;
            // SAFETY: registers only; FEAT_FP16 is the caller's contract.
            unsafe {
                fp16_asm!(
                    concat!($ins, " {r:v}.8h, {a:v}.8h" $(, ", {", stringify!($b), ":v}.8h")?),
                    r = lateout(vreg) r,
                    a = in(vreg) $a,
                    $($b = in(vreg) $b,)?
                    options(pure, nomem, nostack, preserves_flags)
                );
            }
            r
        }
    };
}

half_op!(
    /// `|a|` (FABS).
    fabs(a) = "fabs"
);
half_op!(
    /// `round_f16(a·b)` (FMUL).
    fmul(a, b) = "fmul"
);
half_op!(
    /// `min(a, b)`, NaN if either is (FMIN).
    fmin(a, b) = "fmin"
);
half_op!(
    /// `max(a, b)`, NaN if either is (FMAX).
    fmax(a, b) = "fmax"
);

/// The largest of eight halves, NaN if any is (FMAXV), as its bits.
///
/// # Safety
/// FEAT_FP16 enabled in the calling leaf.
#[inline(always)]
pub(super) unsafe fn fmaxv(a: H8) -> u16 {
    let r: H8;
    // SAFETY: registers only; FEAT_FP16 is the caller's contract.
    unsafe {
        fp16_asm!(
            "fmaxv {r:h}, {a:v}.8h",
            r = lateout(vreg) r,
            a = in(vreg) a,
            options(pure, nomem, nostack, preserves_flags)
        );
        vgetq_lane_u16::<0>(r)
    }
}
half_op!(
    /// `round_f16(a + b)` (FADD).
    fadd(a, b) = "fadd"
);
half_op!(
    /// `round_f16(a − b)` (FSUB).
    fsub(a, b) = "fsub"
);

/// `acc + b·c`, eight lanes, one rounding (FMLA, by vector).
///
/// # Safety
/// FEAT_FP16 enabled in the calling leaf.
#[inline(always)]
pub(super) unsafe fn fmla(mut acc: H8, b: H8, c: H8) -> H8 {
    // SAFETY: registers only; FEAT_FP16 is the caller's contract.
    unsafe {
        fp16_asm!(
            "fmla {acc:v}.8h, {b:v}.8h, {c:v}.8h",
            acc = inout(vreg) acc,
            b = in(vreg) b,
            c = in(vreg) c,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// GELU's `g(a)` of eight halves `a = |round_f16(x)|`, in half precision: bit for bit
/// [`crate::math::f16::gelu`]'s, which states the arithmetic. The segment's coefficients
/// are picked per lane by `tbl` from one 16-byte table per power of `d`.
///
/// # Safety
/// FEAT_FP16 enabled in the calling leaf.
#[inline(always)]
unsafe fn gelu_g8(a: H8) -> H8 {
    use crate::math::f16::{GELU_C, GELU_ROUND, GELU_SCALE, GELU_TOP};
    // SAFETY: registers and the constant table only; FEAT_FP16 is the caller's contract.
    unsafe {
        let u = fmin(fmul(a, vdupq_n_u16(GELU_SCALE)), vdupq_n_u16(GELU_TOP));
        // `u + 1024` rounds u to the integer i (its bits are 0x6400 + i); `d = u − i`. No
        // float-integer conversions: those are four-cycle instructions on the A76's one
        // conversion pipe.
        let k = vdupq_n_u16(GELU_ROUND);
        let t = fadd(u, k);
        let d = fsub(u, fsub(t, k));
        // Lane i's bytes of a table are 2i and 2i + 1 (little-endian halves): the low byte
        // of t << 1 is 2i, copied into both bytes of the lane, plus 0 and 1.
        let even = vreinterpretq_u8_u16(vshlq_n_u16::<1>(t));
        let bytes = vaddq_u8(
            vtrn1q_u8(even, even),
            vreinterpretq_u8_u16(vdupq_n_u16(0x0100)),
        );

        let c =
            |j: usize| vreinterpretq_u16_u8(vqtbl1q_u8(vld1q_u8(GELU_C[j].as_ptr().cast()), bytes));
        let mut p = c(4);
        for j in (0..4).rev() {
            p = fmla(c(j), d, p);
        }
        p
    }
}

/// GELU of eight f32 (`lo`, `hi`), `g` in half precision: bit for bit
/// [`crate::math::f16::gelu`].
///
/// # Safety
/// FEAT_FP16 enabled in the calling leaf.
#[inline(always)]
unsafe fn gelu8(lo: float32x4_t, hi: float32x4_t) -> (float32x4_t, float32x4_t) {
    // SAFETY: registers and the constant table only; FEAT_FP16 is the caller's contract.
    unsafe {
        let (g0, g1) = widen(gelu_g8(fabs(narrow(lo, hi))));
        (
            vfmaq_f32(vmulq_n_f32(lo, 0.5), vabsq_f32(lo), g0),
            vfmaq_f32(vmulq_n_f32(hi, 0.5), vabsq_f32(hi), g1),
        )
    }
}

/// GELU of eight f32 (`lo`, `hi`) to eight halves, all in half precision after `x` is
/// rounded: bit for bit [`crate::math::f16::gelu_half`], which states the arithmetic.
///
/// # Safety
/// FEAT_FP16 enabled in the calling leaf.
#[inline(always)]
unsafe fn gelu8_half(lo: float32x4_t, hi: float32x4_t) -> H8 {
    // SAFETY: registers and the constant table only; FEAT_FP16 is the caller's contract.
    unsafe {
        let h = narrow(lo, hi);
        let a = fabs(h);
        fmla(fmul(h, vdupq_n_u16(0x3800)), a, gelu_g8(a))
    }
}

/// GELU in place on `len` floats at `p`, `g` in half precision ([`gelu8`]).
///
/// # Safety
/// `p` valid for `len` floats; FEAT_FP16 enabled in the calling leaf.
#[inline(always)]
pub(crate) unsafe fn gelu_slice(p: *mut f32, len: usize) {
    // SAFETY: every access is within the `len` floats of the contract.
    unsafe {
        let mut i = 0;
        while i < len {
            let n = (len - i).min(8);
            let (n0, n1) = (n.min(4), n.saturating_sub(4));
            let lo = ld_any::<Neon>(p.add(i), n0);
            let hi = if n1 > 0 {
                ld_any::<Neon>(p.add(i + 4), n1)
            } else {
                lo
            };
            let (g0, g1) = gelu8(lo, hi);
            st_any::<Neon>(p.add(i), g0, n0);
            if n1 > 0 {
                st_any::<Neon>(p.add(i + 4), g1, n1);
            }
            i += n;
        }
    }
}

/// The GEMM's epilogue in half precision: GELU's `g` in f16 ([`gelu8`], eight columns at a
/// time); every other kind is the f32 GEMM's [`epilogue`].
///
/// # Safety
/// As [`epilogue`]; FEAT_FP16 enabled in the calling leaf.
#[inline(always)]
pub(crate) unsafe fn epilogue_fp16<const M: usize>(
    tp: *const f32,
    cols: usize,
    scales: *const f32,
    epi: EpiPtrs,
    out: *mut f32,
    ldo: usize,
) {
    // SAFETY: within the extents of `epilogue`'s contract: `tp` holds whole 16-column rows,
    // `scales`, the bias and `out` are read and written for the `cols` columns only.
    unsafe {
        let Some(bias) = epi.gelu_bias() else {
            return epilogue::<Neon, M>(tp, cols, scales, epi, out, ldo);
        };
        gelu_cols::<M>(tp, cols, scales, bias, |i, c0, v, n| {
            let (g0, g1) = gelu8(v[0], v[1]);
            let o = out.add(i * ldo + c0);
            if n == 8 {
                vst1q_f32(o, g0);
                vst1q_f32(o.add(4), g1);
            } else {
                st_any::<Neon>(o, g0, n.min(4));
                if n > 4 {
                    st_any::<Neon>(o.add(4), g1, n - 4);
                }
            }
        });
    }
}

/// The GELU epilogue to half-precision rows ([`gelu8_half`]): `out = (base, (r, j), width)`,
/// the tile's rows `r..r + M` and columns `j..j + cols` of rows of `width` halves at `base`,
/// in the tiles' layout ([`KB`]; `j` a multiple of 8) if `TILED`, else dense (row `r` at
/// `base + r·width`). The epilogue must be `BiasGelu` (else nothing is written).
///
/// # Safety
/// As [`epilogue`], with `base` valid for the halves of rows `r..r + M` of `width` in the
/// layout; FEAT_FP16 enabled in the calling leaf.
#[inline(always)]
pub(super) unsafe fn epilogue_gelu_half<const M: usize, const TILED: bool>(
    tp: *const f32,
    cols: usize,
    scales: *const f32,
    bias: *const f32,
    (base, (r, j), width): (*mut u16, (usize, usize), usize),
) {
    // SAFETY: as `epilogue_fp16`: the `cols` columns of each row only.
    unsafe {
        let gs = group_stride(width);
        gelu_cols::<M>(tp, cols, scales, bias, |i, c0, v, n| {
            let y = gelu8_half(v[0], v[1]);
            // Columns `j + c0..` of row `r + i`: eight consecutive halves (of its k-block).
            let o = if TILED {
                base.add(slot(r + i, gs) + (j + c0) / 8 * KB)
            } else {
                base.add((r + i) * width + j + c0)
            };
            if n == 8 {
                vst1q_u16(o, y);
            } else {
                // Lane by lane (a variable-length copy would be a call to memcpy).
                let mut t = [0u16; 8];
                vst1q_u16(t.as_mut_ptr(), y);
                for (l, &h) in t.iter().enumerate().take(n) {
                    core::ptr::write(o.add(l), h);
                }
            }
        });
    }
}

/// The columns of a GELU epilogue, eight at a time: `row(i, c0, v, n)` gets row `i`'s
/// values `scale·sum + bias` (one rounding) at columns `c0..c0 + n` (`n <= 8`, lanes past
/// `n` zero) and stores them.
///
/// # Safety
/// `tp` holds `M` whole 16-column rows; `scales` and `bias` valid for `cols` floats.
#[inline(always)]
unsafe fn gelu_cols<const M: usize>(
    tp: *const f32,
    cols: usize,
    scales: *const f32,
    bias: *const f32,
    mut row: impl FnMut(usize, usize, [float32x4_t; 2], usize),
) {
    // SAFETY: within the extents of the contract.
    unsafe {
        let v = |i: usize, c0: usize, s: [float32x4_t; 2], b: [float32x4_t; 2]| {
            let t = tp.add(i * TILE_COLS + c0);
            [
                vfmaq_f32(b[0], vld1q_f32(t), s[0]),
                vfmaq_f32(b[1], vld1q_f32(t.add(4)), s[1]),
            ]
        };
        let mut c0 = 0;
        // Whole groups of eight columns: one straight block per row (the A76 model times it).
        while c0 + 8 <= cols {
            let s = [vld1q_f32(scales.add(c0)), vld1q_f32(scales.add(c0 + 4))];
            let b = [vld1q_f32(bias.add(c0)), vld1q_f32(bias.add(c0 + 4))];
            for i in 0..M {
                row(i, c0, v(i, c0, s, b), 8);
            }
            c0 += 8;
        }
        if c0 < cols {
            let n = cols - c0;
            let ld = |p: *const f32, at: usize, n: usize| {
                if n == 0 {
                    vdupq_n_f32(0.0)
                } else {
                    ld_any::<Neon>(p.add(c0 + at), n)
                }
            };
            let (n0, n1) = (n.min(4), n.saturating_sub(4));
            let s = [ld(scales, 0, n0), ld(scales, 4, n1)];
            let b = [ld(bias, 0, n0), ld(bias, 4, n1)];
            for i in 0..M {
                row(i, c0, v(i, c0, s, b), n);
            }
        }
    }
}

/// A stored weight type as f16 panels: f16 weights are read where they are; f32 and int8
/// ones are converted a panel at a time into a stack copy (int8 values are integers of at
/// most 127, exact in f16; their scales stay in the f32 epilogue, as in the f32 GEMM).
pub(crate) trait HalfPanel: Copy {
    /// The `k x 16` panel at `src` as f16: `src` itself for f16 weights, else converted
    /// into `buf` (room for `k·16` halves).
    ///
    /// # Safety
    /// `src` valid for `k·16` elements, `buf` for `k·16` halves; FEAT_FP16 enabled.
    unsafe fn panel(src: *const Self, k: usize, buf: *mut u16) -> *const u16;
}

impl HalfPanel for u16 {
    #[inline(always)]
    unsafe fn panel(src: *const u16, _: usize, _: *mut u16) -> *const u16 {
        src
    }
}

impl HalfPanel for f32 {
    #[inline(always)]
    unsafe fn panel(src: *const f32, k: usize, buf: *mut u16) -> *const u16 {
        // SAFETY: `k·16` elements behind both pointers (the contract), eight at a time.
        unsafe {
            let mut e = 0;
            while e < k * PANEL {
                let h = narrow(vld1q_f32(src.add(e)), vld1q_f32(src.add(e + 4)));
                vst1q_u16(buf.add(e), h);
                e += 8;
            }
        }
        buf
    }
}

impl HalfPanel for i8 {
    #[inline(always)]
    unsafe fn panel(src: *const i8, k: usize, buf: *mut u16) -> *const u16 {
        // SAFETY: `k·16` elements behind both pointers (the contract), sixteen at a time.
        unsafe {
            let mut e = 0;
            while e < k * PANEL {
                let b = vld1q_s8(src.add(e));
                vst1q_u16(buf.add(e), i16_to_f16(vmovl_s8(vget_low_s8(b))));
                vst1q_u16(buf.add(e + 8), i16_to_f16(vmovl_high_s8(b)));
                e += 16;
            }
        }
        buf
    }
}

/// The tiles read their f16 activation rows in the layout of
/// [`crate::kernels::half_tiles_floats`]: groups of [`MR`] rows; within a group, k-block `kb`
/// (eight inner steps) holds the eight halves of row 0, then of rows 1, 2 and 3, so one `ld1`
/// of four registers loads a 4-row tile's operands for eight steps and walks on by
/// post-index. (Rows [`WIDE_K`] halves apart, each loaded by `ldr q` at an immediate offset,
/// made the 8-step iteration 101 micro-ops in the A76 model, 37.1 cycles for 32 cycles of
/// `fmla`; with a pointer per row, 104.) LN2 and PW1's GELU write PW1's and PW2's rows so;
/// f32 rows are rounded into a stack copy so. Halves between the k-blocks of a group:
const KB: usize = MR * 8;

/// Halves between the groups of rows of `k` values (`kernels::half_tiles_at`).
#[inline(always)]
const fn group_stride(k: usize) -> usize {
    MR * k.div_ceil(8) * 8
}

/// Halves from the rows' start to row `i`'s first k-block, groups `gs` halves apart.
#[inline(always)]
const fn slot(i: usize, gs: usize) -> usize {
    (i / MR) * gs + (i % MR) * 8
}

/// `M` consecutive activation vectors (one k-block of `M` rows of a group) from `p`.
///
/// # Safety
/// `p` valid for `8·M` halves.
#[inline(always)]
unsafe fn load_rows<const M: usize>(p: *const u16) -> [H8; M] {
    // SAFETY: the caller's contract; `M` is 4, 2 or 1.
    unsafe {
        let mut v = [vdupq_n_u16(0); M];
        match M {
            4 => {
                let x = vld1q_u16_x4(p);
                v.copy_from_slice(&[x.0, x.1, x.2, x.3][..M]);
            }
            2 => {
                let x = vld1q_u16_x2(p);
                v.copy_from_slice(&[x.0, x.1][..M]);
            }
            _ => {
                for (i, r) in v.iter_mut().enumerate() {
                    *r = vld1q_u16(p.add(8 * i));
                }
            }
        }
        v
    }
}

/// Whole k-blocks of a 4 x 16 tile: `n` iterations of eight inner steps, each one `ld1` of
/// the four rows' activation vectors (their layout: [`KB`]), four `ld1` of a step
/// pair's weights and 64 `fmla .8h` by element into `acc`; both pointers walk on by
/// post-index. Assembly because LLVM splits `vld1q_u16_x4` into `ldp` pairs (three
/// micro-ops each in the A76 model against `ld1`'s four for four registers); the
/// accumulators are LLVM's registers, v0-v7 the loads'.
///
/// # Safety
/// FEAT_FP16 enabled; `n >= 1`; `*a` valid for `32·n` halves, `*b` for `128·n`.
#[inline(always)]
unsafe fn blocks4(acc: &mut [[H8; 2]; 4], a: &mut *const u16, b: &mut *const u16, n: usize) {
    // SAFETY: reads within the contract's extents; every register written is an operand
    // or a clobber.
    unsafe {
        fp16_asm!(
            "// quadra-mca: gemm_fp16_4x16",
            "2:",
            "ld1 {{v0.8h, v1.8h, v2.8h, v3.8h}}, [{a}], #64",
            "ld1 {{v4.8h, v5.8h, v6.8h, v7.8h}}, [{b}], #64",
            "fmla {c00:v}.8h, v4.8h, v0.h[0]",
            "fmla {c01:v}.8h, v5.8h, v0.h[0]",
            "fmla {c10:v}.8h, v4.8h, v1.h[0]",
            "fmla {c11:v}.8h, v5.8h, v1.h[0]",
            "fmla {c20:v}.8h, v4.8h, v2.h[0]",
            "fmla {c21:v}.8h, v5.8h, v2.h[0]",
            "fmla {c30:v}.8h, v4.8h, v3.h[0]",
            "fmla {c31:v}.8h, v5.8h, v3.h[0]",
            "fmla {c00:v}.8h, v6.8h, v0.h[1]",
            "fmla {c01:v}.8h, v7.8h, v0.h[1]",
            "fmla {c10:v}.8h, v6.8h, v1.h[1]",
            "fmla {c11:v}.8h, v7.8h, v1.h[1]",
            "fmla {c20:v}.8h, v6.8h, v2.h[1]",
            "fmla {c21:v}.8h, v7.8h, v2.h[1]",
            "fmla {c30:v}.8h, v6.8h, v3.h[1]",
            "fmla {c31:v}.8h, v7.8h, v3.h[1]",
            "ld1 {{v4.8h, v5.8h, v6.8h, v7.8h}}, [{b}], #64",
            "fmla {c00:v}.8h, v4.8h, v0.h[2]",
            "fmla {c01:v}.8h, v5.8h, v0.h[2]",
            "fmla {c10:v}.8h, v4.8h, v1.h[2]",
            "fmla {c11:v}.8h, v5.8h, v1.h[2]",
            "fmla {c20:v}.8h, v4.8h, v2.h[2]",
            "fmla {c21:v}.8h, v5.8h, v2.h[2]",
            "fmla {c30:v}.8h, v4.8h, v3.h[2]",
            "fmla {c31:v}.8h, v5.8h, v3.h[2]",
            "fmla {c00:v}.8h, v6.8h, v0.h[3]",
            "fmla {c01:v}.8h, v7.8h, v0.h[3]",
            "fmla {c10:v}.8h, v6.8h, v1.h[3]",
            "fmla {c11:v}.8h, v7.8h, v1.h[3]",
            "fmla {c20:v}.8h, v6.8h, v2.h[3]",
            "fmla {c21:v}.8h, v7.8h, v2.h[3]",
            "fmla {c30:v}.8h, v6.8h, v3.h[3]",
            "fmla {c31:v}.8h, v7.8h, v3.h[3]",
            "ld1 {{v4.8h, v5.8h, v6.8h, v7.8h}}, [{b}], #64",
            "fmla {c00:v}.8h, v4.8h, v0.h[4]",
            "fmla {c01:v}.8h, v5.8h, v0.h[4]",
            "fmla {c10:v}.8h, v4.8h, v1.h[4]",
            "fmla {c11:v}.8h, v5.8h, v1.h[4]",
            "fmla {c20:v}.8h, v4.8h, v2.h[4]",
            "fmla {c21:v}.8h, v5.8h, v2.h[4]",
            "fmla {c30:v}.8h, v4.8h, v3.h[4]",
            "fmla {c31:v}.8h, v5.8h, v3.h[4]",
            "fmla {c00:v}.8h, v6.8h, v0.h[5]",
            "fmla {c01:v}.8h, v7.8h, v0.h[5]",
            "fmla {c10:v}.8h, v6.8h, v1.h[5]",
            "fmla {c11:v}.8h, v7.8h, v1.h[5]",
            "fmla {c20:v}.8h, v6.8h, v2.h[5]",
            "fmla {c21:v}.8h, v7.8h, v2.h[5]",
            "fmla {c30:v}.8h, v6.8h, v3.h[5]",
            "fmla {c31:v}.8h, v7.8h, v3.h[5]",
            "ld1 {{v4.8h, v5.8h, v6.8h, v7.8h}}, [{b}], #64",
            "fmla {c00:v}.8h, v4.8h, v0.h[6]",
            "fmla {c01:v}.8h, v5.8h, v0.h[6]",
            "fmla {c10:v}.8h, v4.8h, v1.h[6]",
            "fmla {c11:v}.8h, v5.8h, v1.h[6]",
            "fmla {c20:v}.8h, v4.8h, v2.h[6]",
            "fmla {c21:v}.8h, v5.8h, v2.h[6]",
            "fmla {c30:v}.8h, v4.8h, v3.h[6]",
            "fmla {c31:v}.8h, v5.8h, v3.h[6]",
            "fmla {c00:v}.8h, v6.8h, v0.h[7]",
            "fmla {c01:v}.8h, v7.8h, v0.h[7]",
            "fmla {c10:v}.8h, v6.8h, v1.h[7]",
            "fmla {c11:v}.8h, v7.8h, v1.h[7]",
            "fmla {c20:v}.8h, v6.8h, v2.h[7]",
            "fmla {c21:v}.8h, v7.8h, v2.h[7]",
            "fmla {c30:v}.8h, v6.8h, v3.h[7]",
            "fmla {c31:v}.8h, v7.8h, v3.h[7]",
            "subs {n}, {n}, #1",
            "b.ne 2b",
            a = inout(reg) *a,
            b = inout(reg) *b,
            n = inout(reg) n => _,
            c00 = inout(vreg) acc[0][0],
            c01 = inout(vreg) acc[0][1],
            c10 = inout(vreg) acc[1][0],
            c11 = inout(vreg) acc[1][1],
            c20 = inout(vreg) acc[2][0],
            c21 = inout(vreg) acc[2][1],
            c30 = inout(vreg) acc[3][0],
            c31 = inout(vreg) acc[3][1],
            out("v0") _,
            out("v1") _,
            out("v2") _,
            out("v3") _,
            out("v4") _,
            out("v5") _,
            out("v6") _,
            out("v7") _,
            options(nostack, readonly)
        );
    }
}

/// One `M x 16` tile: the f16 activation rows at `ah` (the copy's layout from row
/// [`slot`]`(i)`, `M` rows of one group) times the f16 panel `bp`; its f32 sums, row by row.
/// The f32 accumulators stay in registers with the f16 ones (`M·4 + M·2` of them), so a
/// run's fold is register arithmetic only. Each pair of steps loads its four weight
/// vectors with one `ld1` (64 contiguous bytes of the panel).
///
/// # Safety
/// `ah` valid for the `M` rows' `k` halves in the copy's layout; `bp` for `k·16`;
/// FEAT_FP16 enabled.
#[inline(always)]
unsafe fn tile<const M: usize>(ah: *const u16, k: usize, bp: *const u16) -> [[float32x4_t; 4]; M] {
    // SAFETY: every access is within the extents of the contract.
    unsafe {
        let z = vdupq_n_u16(0);
        let mut sum = [[vdupq_n_f32(0.0); 4]; M];
        // Steps `$l` and `$l + 1` at activation lanes `$l`, `$l + 1` of `$av`, their weight
        // rows from `$w`.
        macro_rules! steps {
            ($acc:ident, $av:ident, $w:expr, $l:literal, $l1:literal) => {{
                let b = vld1q_u16_x4($w.add($l * PANEL));
                for i in 0..M {
                    $acc[i][0] = fmla_lane::<$l>($acc[i][0], b.0, $av[i]);
                    $acc[i][1] = fmla_lane::<$l>($acc[i][1], b.1, $av[i]);
                }
                for i in 0..M {
                    $acc[i][0] = fmla_lane::<$l1>($acc[i][0], b.2, $av[i]);
                    $acc[i][1] = fmla_lane::<$l1>($acc[i][1], b.3, $av[i]);
                }
            }};
        }
        let mut k0 = 0;
        while k0 < k {
            let end = (k0 + FP16_CHUNK).min(k);
            let mut acc = [[z; 2]; M];
            let mut kk = k0;
            let n = (end - kk) / 8;
            if M == 4 && n > 0 {
                let (mut a, mut b) = (ah.add(kk / 8 * KB), bp.add(kk * PANEL));
                // SAFETY (cast): `M == 4`, so the array is the one `blocks4` takes.
                blocks4(
                    &mut *acc.as_mut_ptr().cast::<[[H8; 2]; 4]>(),
                    &mut a,
                    &mut b,
                    n,
                );
                kk += 8 * n;
            }
            while kk + 8 <= end {
                let av = load_rows::<M>(ah.add(kk / 8 * KB));
                let w = bp.add(kk * PANEL);
                steps!(acc, av, w, 0, 1);
                steps!(acc, av, w, 2, 3);
                steps!(acc, av, w, 4, 5);
                steps!(acc, av, w, 6, 7);
                kk += 8;
            }
            while kk < end {
                let mut av = [z; M];
                for (i, v) in av.iter_mut().enumerate() {
                    *v = vld1q_dup_u16(ah.add(kk / 8 * KB + 8 * i + kk % 8));
                }
                let (b0, b1) = (
                    vld1q_u16(bp.add(kk * PANEL)),
                    vld1q_u16(bp.add(kk * PANEL + 8)),
                );
                for i in 0..M {
                    acc[i][0] = fmla_lane::<0>(acc[i][0], b0, av[i]);
                    acc[i][1] = fmla_lane::<0>(acc[i][1], b1, av[i]);
                }
                kk += 1;
            }
            for (s, row) in sum.iter_mut().zip(acc.iter()) {
                for (j, &h) in row.iter().enumerate() {
                    let (lo, hi) = widen(h);
                    if k0 == 0 {
                        (s[2 * j], s[2 * j + 1]) = (lo, hi);
                    } else {
                        s[2 * j] = vaddq_f32(s[2 * j], lo);
                        s[2 * j + 1] = vaddq_f32(s[2 * j + 1], hi);
                    }
                }
            }
            k0 = end;
        }
        sum
    }
}

/// A tile's sums parked at `tp` (rows [`TILE_COLS`] floats apart), ready for the epilogue.
///
/// # Safety
/// `tp` valid for `M` rows of 16 floats.
#[inline(always)]
unsafe fn park<const M: usize>(sum: &[[float32x4_t; 4]; M], tp: *mut f32) {
    // SAFETY: within the extents of the contract.
    unsafe {
        for (i, s) in sum.iter().enumerate() {
            for (j, &v) in s.iter().enumerate() {
                vst1q_f32(tp.add(i * TILE_COLS + 4 * j), v);
            }
        }
    }
}

/// Rows of activations converted to f16 at a time: the conversion is paid once per row
/// per call (not once per panel), and an f32 or int8 panel once per block of rows.
const ROW_BLOCK: usize = 32;

/// `rows` rows of `k` floats at `a` (`lda` apart) rounded to f16 into `ah` (the tiles'
/// layout, [`KB`]; groups `gs` halves apart).
///
/// # Safety
/// `a` valid for the rows, `ah` for `ceil(rows/4)·gs` halves; `gs = group_stride(k)`.
#[inline(always)]
unsafe fn narrow_rows(a: *const f32, lda: usize, rows: usize, k: usize, gs: usize, ah: *mut u16) {
    // SAFETY: within the extents of the contract.
    unsafe {
        for i in 0..rows {
            let (src, dst) = (a.add(i * lda), ah.add(slot(i, gs)));
            let mut kk = 0;
            while kk + 8 <= k {
                let h = narrow(vld1q_f32(src.add(kk)), vld1q_f32(src.add(kk + 4)));
                vst1q_u16(dst.add(kk / 8 * KB), h);
                kk += 8;
            }
            if kk < k {
                narrow_run(src.add(kk), k - kk, dst.add(kk / 8 * KB));
            }
        }
    }
}

/// `n` consecutive floats at `src` rounded to f16 (nearest even) into `dst`: eight at a
/// time, the rest one by one.
///
/// # Safety
/// NEON; `src` valid for `n` floats, `dst` for `n` halves.
#[inline(always)]
pub(super) unsafe fn narrow_run(src: *const f32, n: usize, dst: *mut u16) {
    // SAFETY: within the extents of the contract.
    unsafe {
        let mut kk = 0;
        while kk + 8 <= n {
            vst1q_u16(
                dst.add(kk),
                narrow(vld1q_f32(src.add(kk)), vld1q_f32(src.add(kk + 4))),
            );
            kk += 8;
        }
        while kk < n {
            let h = narrow(vdupq_n_f32(*src.add(kk)), vdupq_n_f32(0.0));
            vst1q_lane_u16::<0>(dst.add(kk), h);
            kk += 1;
        }
    }
}

/// Can [`gemm`] take inner dimension `k`? Up to [`FP16_MAX_K`]: its f32 or int8 weight
/// panels are converted into a stack copy that deep (32 KB), and past [`WIDE_K`] fewer
/// activation rows fit its other copy ([`block_rows`]); deeper GEMMs run in f32.
/// QuadraNet36-T's last downsample has k = 1024 (it ran the f32 GEMM widening its f16 or
/// int8 weights in its loop: 2.2 and 2.6 ms of the modeled A76's 36-T, 0.8 and 1.1 here).
pub(crate) const fn takes(k: usize) -> bool {
    k <= FP16_MAX_K
}

/// Activation rows per block for inner dimension `k`: [`ROW_BLOCK`], or as many groups of
/// [`MR`] as the copy of `WIDE_K · ROW_BLOCK` halves holds in the tiles' layout (16 rows at
/// k = 1024).
const fn block_rows(k: usize) -> usize {
    let rows = (WIDE_K * ROW_BLOCK / group_stride(k)) * MR;
    if rows < ROW_BLOCK {
        rows
    } else {
        ROW_BLOCK
    }
}

/// `out = epi(scales ⊙ A·B)` in half precision (see the module comment). Blocks of
/// [`ROW_BLOCK`] activation rows outer (f32 rows rounded to f16 into a stack copy in the
/// tiles' layout, [`KB`]); panels (converted, unless f16) inner; row tiles of 4 innermost.
/// With `HALF_A` the activations are f16 already, in that layout (`g.a` points at halves:
/// `kernels::gemm_half_rows`), and are read in place. With `HALF_OUT` the epilogue is
/// GELU's, written as halves in that layout for rows of `g.ldo` (`kernels::gemm_gelu_half`).
///
/// # Safety
/// FEAT_FP16; pointers as checked by `kernels::gemm` (or `gemm_half_rows`,
/// `gemm_gelu_half`); [`takes`]`(g.k)`.
#[inline(always)]
pub(crate) unsafe fn gemm<W: HalfPanel, const HALF_A: bool, const HALF_OUT: bool>(
    g: &GemmArgs,
    b: *const W,
) {
    // SAFETY: every pointer is used within the extents `kernels::gemm` checked; the stack
    // copies are written before they are read.
    unsafe {
        let mut panel = MaybeUninit::<[u16; FP16_MAX_K * PANEL]>::uninit();
        let mut act = MaybeUninit::<[u16; WIDE_K * ROW_BLOCK]>::uninit();
        let mut tile_buf = MaybeUninit::<[[f32; TILE_COLS]; MR]>::uninit();
        let tp = tile_buf.as_mut_ptr().cast::<f32>();
        let gs = group_stride(g.k);
        // (With HALF_A the rows are read in place: `k <= WIDE_K`, whole blocks.)
        let block = if HALF_A { ROW_BLOCK } else { block_rows(g.k) };
        // The copy holds a block's groups: `block_rows` divides the copy by the group size.
        debug_assert!(HALF_A || block.div_ceil(MR) * gs <= WIDE_K * ROW_BLOCK);
        let mut r0 = 0;
        while r0 < g.m {
            let rows = (g.m - r0).min(block);
            // `r0` is a multiple of MR: the block starts a group.
            let ah = if HALF_A {
                g.a.cast::<u16>().add(r0 / MR * gs)
            } else {
                let ah = act.as_mut_ptr().cast::<u16>();
                narrow_rows(g.a.add(r0 * g.lda), g.lda, rows, g.k, gs, ah);
                ah
            };
            let mut j0 = 0;
            while j0 < g.n {
                let cols = (g.n - j0).min(PANEL);
                // A whole panel (the packed matrix is padded to whole panels).
                let bp = W::panel(
                    b.add((j0 / PANEL) * g.pstride),
                    g.k,
                    panel.as_mut_ptr().cast(),
                );
                let (scales, epi) = (g.scales.add(j0), g.epi.offset(j0));
                // PW2's residual, on whole panels, from the tile's registers.
                let fused = epi.scale_add().filter(|_| !HALF_OUT && cols == PANEL);
                let mut i = 0;
                macro_rules! rows {
                    ($m:literal) => {{
                        let sum = tile::<$m>(ah.add(slot(i, gs)), g.k, bp);
                        let at = (r0 + i) * g.ldo + j0;
                        if let Some(ra) = fused {
                            let v = |i: usize, j: usize| sum[i][j];
                            residual::<Neon, $m, 4>(v, scales, ra, g.out.add(at), g.ldo);
                        } else if HALF_OUT {
                            park::<$m>(&sum, tp);
                            let out = (g.out.cast::<u16>(), (r0 + i, j0), g.ldo);
                            if let Some(bias) = epi.gelu_bias() {
                                epilogue_gelu_half::<$m, true>(tp, cols, scales, bias, out);
                            }
                        } else {
                            park::<$m>(&sum, tp);
                            epilogue_fp16::<$m>(tp, cols, scales, epi, g.out.add(at), g.ldo);
                        }
                        i += $m;
                    }};
                }
                while i + MR <= rows {
                    rows!(4);
                }
                if i + 2 <= rows {
                    rows!(2);
                }
                if i < rows {
                    rows!(1);
                }
                debug_assert_eq!(i, rows);
                j0 += cols;
            }
            r0 += rows;
        }
    }
}
