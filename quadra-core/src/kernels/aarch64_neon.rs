//! NEON (Advanced SIMD): 4 lanes, 32 q registers. GEMM tile 6 x 16 (24 accumulators),
//! QDW 8 pixels per iteration (24 accumulators + 3 weights + 1 input).

use core::arch::aarch64::*;

use super::simd::{self, QdwPtrs, Simd};
use super::{Epilogue, PackedB};

#[derive(Clone, Copy)]
pub(crate) struct Neon;

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
    unsafe fn load(p: *const f32) -> float32x4_t {
        vld1q_f32(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: float32x4_t) {
        vst1q_f32(p, v)
    }
    #[inline(always)]
    unsafe fn load_n(p: *const f32, n: usize) -> float32x4_t {
        let mut tmp = [0.0f32; 4];
        core::ptr::copy_nonoverlapping(p, tmp.as_mut_ptr(), n);
        vld1q_f32(tmp.as_ptr())
    }
    #[inline(always)]
    unsafe fn store_n(p: *mut f32, v: float32x4_t, n: usize) {
        let mut tmp = [0.0f32; 4];
        vst1q_f32(tmp.as_mut_ptr(), v);
        core::ptr::copy_nonoverlapping(tmp.as_ptr(), p, n);
    }
    #[inline(always)]
    unsafe fn add(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vaddq_f32(a, b)
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
}

/// # Safety
/// CPU must have NEON; lengths as checked by `kernels::gemm`.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn gemm(
    a: &[f32],
    m: usize,
    lda: usize,
    b: PackedB<'_>,
    epi: Epilogue<'_>,
    out: &mut [f32],
    ldo: usize,
) {
    simd::gemm::<Neon, 6, 4, 4>(a, m, lda, b, epi, out, ldo)
}

/// # Safety
/// CPU must have NEON; pointers as checked by `kernels::qdw_row`.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn qdw_row(k: usize, a: &QdwPtrs) {
    match k {
        3 => simd::qdw_row::<Neon, 3, 8>(a),
        5 => simd::qdw_row::<Neon, 5, 8>(a),
        _ => simd::qdw_row::<Neon, 7, 8>(a),
    }
}

/// # Safety
/// CPU must have NEON; `p` valid for `len` floats.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn gelu_slice(p: *mut f32, len: usize) {
    simd::gelu_slice::<Neon>(p, len)
}
