//! AVX-512F: 16 lanes, 32 zmm registers. GEMM tile 6 x 64 (four panels, 24 accumulators:
//! 10 loads per 24 FMAs, where 12 x 32 took 14; loads slow the FMAs down on this core),
//! QDW 7 pixels per iteration (21 accumulators; every QuadraNet map width, 56/28/14/7, is
//! a multiple of 7, and 8 pixels spilled registers).

use core::arch::x86_64::*;

use super::q8::{self, Dot, Q8Args, QuantArgs};
use super::simd::{self, DwArgs, Elem, GemmArgs, LnArgs, QdwArgs, Simd};

#[derive(Clone, Copy)]
pub(crate) struct Avx512;

#[inline(always)]
fn mask(n: usize) -> __mmask16 {
    ((1u32 << n) - 1) as __mmask16
}

// The impl is one unsafe group, under the SAFETY note below.
#[allow(unsafe_op_in_unsafe_fn)]
// SAFETY: every method is an AVX-512F intrinsic, only reachable from the leaves below,
// which carry `#[target_feature(enable = "avx512f")]`.
unsafe impl Simd for Avx512 {
    type V = __m512;
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn zero() -> __m512 {
        _mm512_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        _mm512_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        _mm512_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const u16) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
    }
    #[inline(always)]
    unsafe fn load_i8(p: *const i8) -> __m512 {
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i)))
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        _mm512_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn load_n(p: *const f32, n: usize) -> __m512 {
        _mm512_maskz_loadu_ps(mask(n), p)
    }
    #[inline(always)]
    unsafe fn store_n(p: *mut f32, v: __m512, n: usize) {
        _mm512_mask_storeu_ps(p, mask(n), v)
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        _mm512_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: __m512, b: __m512) -> __m512 {
        _mm512_sub_ps(a, b)
    }
    #[inline(always)]
    unsafe fn reduce_add(v: __m512) -> f32 {
        _mm512_reduce_add_ps(v)
    }
    #[inline(always)]
    unsafe fn sqrt(a: __m512) -> __m512 {
        _mm512_sqrt_ps(a)
    }
    #[inline(always)]
    unsafe fn recip(a: __m512) -> __m512 {
        // 14-bit estimate, one Newton step: r + r(1 - ar).
        let r = _mm512_rcp14_ps(a);
        _mm512_fmadd_ps(r, _mm512_fnmadd_ps(a, r, _mm512_set1_ps(1.0)), r)
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        _mm512_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn div(a: __m512, b: __m512) -> __m512 {
        _mm512_div_ps(a, b)
    }
    #[inline(always)]
    unsafe fn fmadd(a: __m512, b: __m512, c: __m512) -> __m512 {
        _mm512_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn min(a: __m512, b: __m512) -> __m512 {
        _mm512_min_ps(a, b)
    }
    #[inline(always)]
    unsafe fn max(a: __m512, b: __m512) -> __m512 {
        _mm512_max_ps(a, b)
    }
    #[inline(always)]
    unsafe fn prefetch_l2(p: *const u8) {
        _mm_prefetch::<_MM_HINT_T1>(p.cast());
    }
    #[inline(always)]
    unsafe fn abs(a: __m512) -> __m512 {
        _mm512_abs_ps(a)
    }
    #[inline(always)]
    unsafe fn reduce_max(v: __m512) -> f32 {
        _mm512_reduce_max_ps(v)
    }
    #[inline(always)]
    unsafe fn round_even(a: __m512) -> __m512 {
        _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a)
    }
    #[inline(always)]
    unsafe fn store_i8(p: *mut i8, v: __m512) {
        _mm_storeu_si128(
            p as *mut __m128i,
            _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(v)),
        )
    }
    #[inline(always)]
    unsafe fn load_i32(p: *const i32) -> __m512 {
        _mm512_cvtepi32_ps(_mm512_loadu_si512(p as *const __m512i))
    }
}

/// AVX-512 VNNI: `vpdpbusd` multiplies u8 by s8 in groups of four into i32 lanes (64 MACs
/// per instruction). The weights become the u8 operand (`b ^ 0x80` = `b + 128` on load)
/// and the activations the s8 one, broadcast from memory; the accumulators start at
/// `-128·Σa` to cancel the offset. A vector covers one whole panel (16 columns).
#[derive(Clone, Copy)]
pub(crate) struct Vnni;

// The impl is one unsafe group, under the SAFETY note below.
#[allow(unsafe_op_in_unsafe_fn)]
// SAFETY: AVX-512F/BW/VNNI intrinsics, only reachable from `gemm_q8_vnni` (those features
// enabled); pointers as the trait requires.
unsafe impl Dot for Vnni {
    type Acc = __m512i;
    type A = __m512i;
    type B = __m512i;
    const COLS: usize = 16;
    const OFFSET: bool = true;
    #[inline(always)]
    unsafe fn init(v: i32) -> __m512i {
        _mm512_set1_epi32(v)
    }
    #[inline(always)]
    unsafe fn bcast_a(p: *const i8) -> __m512i {
        _mm512_set1_epi32((p as *const i32).read_unaligned())
    }
    #[inline(always)]
    unsafe fn load_b(p: *const i8) -> __m512i {
        _mm512_xor_si512(
            _mm512_loadu_si512(p as *const __m512i),
            _mm512_set1_epi32(0x8080_8080u32 as i32),
        )
    }
    #[inline(always)]
    unsafe fn dot(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
        _mm512_dpbusd_epi32(acc, b, a)
    }
    #[inline(always)]
    unsafe fn store(p: *mut i32, acc: __m512i) {
        _mm512_storeu_si512(p as *mut __m512i, acc)
    }
    type F = __m512;
    #[inline(always)]
    unsafe fn scaled(acc: __m512i, scale: f32) -> __m512 {
        _mm512_mul_ps(_mm512_cvtepi32_ps(acc), _mm512_set1_ps(scale))
    }
}
/// # Safety
/// CPU must have AVX-512F; lengths as checked by `kernels::gemm`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn gemm<W: Elem>(g: &GemmArgs, b: *const W) {
    // SAFETY: the caller holds this ISA's `Kernels` token and checked every length
    // behind the pointers (see `kernels::leaf!`).
    unsafe { simd::gemm::<Avx512, W, 6, 4>(g, b) }
}

/// # Safety
/// CPU must have AVX-512F; pointers as checked by `kernels::qdw_row`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn qdw_row<W: Elem>(k: usize, a: &QdwArgs, taps: *const W) {
    // SAFETY: the caller holds this ISA's `Kernels` token and checked every length
    // behind the pointers (see `kernels::leaf!`).
    unsafe {
        match k {
            3 => simd::qdw_row::<Avx512, W, 3, 7>(a, taps),
            5 => simd::qdw_row::<Avx512, W, 5, 7>(a, taps),
            _ => simd::qdw_row::<Avx512, W, 7, 7>(a, taps),
        }
    }
}

/// # Safety
/// CPU must have AVX-512F; `p` valid for `len` floats.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn gelu_slice(p: *mut f32, len: usize) {
    // SAFETY: the caller holds this ISA's `Kernels` token and checked every length
    // behind the pointers (see `kernels::leaf!`).
    unsafe { simd::gelu_slice::<Avx512>(p, len) }
}

/// # Safety
/// CPU must have AVX-512F; pointers in `a` valid as `simd::layer_norm_rows` requires.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn layer_norm_rows(a: &LnArgs) {
    // SAFETY: the caller holds this ISA's `Kernels` token and checked every length
    // behind the pointers (see `kernels::leaf!`).
    unsafe { simd::layer_norm_rows::<Avx512>(a) }
}

/// # Safety
/// CPU must have AVX-512F; pointers as checked by `kernels::dw_row`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn dw_row(k: usize, a: &DwArgs) {
    // SAFETY: the caller holds this ISA's `Kernels` token and checked every length
    // behind the pointers (see `kernels::leaf!`).
    unsafe {
        match k {
            3 => simd::dw_row::<Avx512, 3, 8>(a),
            5 => simd::dw_row::<Avx512, 5, 8>(a),
            _ => simd::dw_row::<Avx512, 7, 8>(a),
        }
    }
}

/// # Safety
/// CPU must have AVX-512F; lengths as checked by `kernels::block_row`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn block_row(src: *const f32, w: usize, c: usize, k: usize, dst: *mut f32) {
    // SAFETY: the caller holds this ISA's `Kernels` token and checked every length
    // behind the pointers (see `kernels::leaf!`).
    unsafe { simd::block_row::<Avx512>(src, w, c, k, dst) }
}

/// # Safety
/// CPU must have AVX-512F; pointers as checked by `q8::quantize_rows`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn quantize_rows(q: &QuantArgs) {
    // SAFETY: the caller holds this ISA's `Kernels` token and checked every length
    // behind the pointers (see `kernels::leaf!`).
    unsafe { q8::quantize::<Avx512>(q) }
}

/// # Safety
/// CPU must have AVX-512F, AVX-512BW and AVX-512 VNNI; pointers as checked by
/// `q8::gemm_q8`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn gemm_q8_vnni(g: &Q8Args) {
    // SAFETY: the caller holds this ISA's `Kernels` token and checked every length
    // behind the pointers (see `kernels::leaf!`).
    unsafe { q8::gemm::<Vnni, Avx512, 6, 4>(g) }
}
