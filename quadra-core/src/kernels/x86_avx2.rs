//! AVX2 + FMA: 8 lanes, 16 ymm registers. GEMM tile 6 x 16 (12 accumulators), QDW 4 pixels
//! per iteration (12 accumulators + 3 weights + 1 input).

use core::arch::x86_64::*;

use super::simd::{self, QdwPtrs, Simd};
use super::{Epilogue, PackedB};

#[derive(Clone, Copy)]
pub(crate) struct Avx2;

#[inline(always)]
unsafe fn mask(n: usize) -> __m256i {
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(n as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}

// SAFETY: every method is an AVX/AVX2/FMA intrinsic, only reachable from the leaves below,
// which carry `#[target_feature(enable = "avx2,fma")]`.
unsafe impl Simd for Avx2 {
    type V = __m256;
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> __m256 {
        _mm256_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        _mm256_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        _mm256_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        _mm256_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn load_n(p: *const f32, n: usize) -> __m256 {
        _mm256_maskload_ps(p, mask(n))
    }
    #[inline(always)]
    unsafe fn store_n(p: *mut f32, v: __m256, n: usize) {
        _mm256_maskstore_ps(p, mask(n), v)
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        _mm256_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        _mm256_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn div(a: __m256, b: __m256) -> __m256 {
        _mm256_div_ps(a, b)
    }
    #[inline(always)]
    unsafe fn fmadd(a: __m256, b: __m256, c: __m256) -> __m256 {
        _mm256_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn min(a: __m256, b: __m256) -> __m256 {
        _mm256_min_ps(a, b)
    }
    #[inline(always)]
    unsafe fn max(a: __m256, b: __m256) -> __m256 {
        _mm256_max_ps(a, b)
    }
}

/// # Safety
/// CPU must have AVX2 and FMA; lengths as checked by `kernels::gemm`.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn gemm(
    a: &[f32],
    m: usize,
    lda: usize,
    b: PackedB<'_>,
    epi: Epilogue<'_>,
    out: &mut [f32],
    ldo: usize,
) {
    simd::gemm::<Avx2, 6, 2, 2>(a, m, lda, b, epi, out, ldo)
}

/// # Safety
/// CPU must have AVX2 and FMA; pointers as checked by `kernels::qdw_row`.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn qdw_row(k: usize, a: &QdwPtrs) {
    match k {
        3 => simd::qdw_row::<Avx2, 3, 4>(a),
        5 => simd::qdw_row::<Avx2, 5, 4>(a),
        _ => simd::qdw_row::<Avx2, 7, 4>(a),
    }
}

/// # Safety
/// CPU must have AVX2 and FMA; `p` valid for `len` floats.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn gelu_slice(p: *mut f32, len: usize) {
    simd::gelu_slice::<Avx2>(p, len)
}
