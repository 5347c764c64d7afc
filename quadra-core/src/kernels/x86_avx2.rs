//! AVX2 + FMA (+ F16C for f16 weights): 8 lanes, 16 ymm registers. GEMM tile 6 x 16 (12
//! accumulators). QDW 3 pixels per iteration: 9 accumulators + 3 weights leave room to keep
//! the sliding window of inputs in registers (Q + K - 1 loads per tap row instead of Q·K),
//! which ran 1.3-1.4x faster than 4 pixels with 12 accumulators and reloaded inputs.
//! int8 GEMM without VNNI: a Zen 4 core issues the 16-bit integer multiplies (`vpmaddwd`,
//! `vpmaddubsw`) and `vpsignb` on two pipes, two per cycle, the same rate as its FMAs; exact
//! products cost three of them per 32 multiply-adds in [`SignMadd`] and two in
//! [`gemm_q8_wide`] (i16 weights widened once per call), so exact int8 tops out near 1.5x
//! the f32 FMA rate on this core. With AVX-VNNI, [`VnniY`] (`vpdpbusd`, one per 32).

use core::arch::x86_64::*;

use super::q8::{self, Dot, Q8Args, QuantArgs};
use super::simd::{self, DwArgs, Elem, GemmArgs, LnArgs, QdwArgs, Simd, TILE_COLS};
use super::PANEL;

#[derive(Clone, Copy)]
pub(crate) struct Avx2;

#[inline(always)]
unsafe fn mask(n: usize) -> __m256i {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(n as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    }
}

// The impl is one unsafe group, under the SAFETY note below.
#[allow(unsafe_op_in_unsafe_fn)]
// SAFETY: every method is an AVX/AVX2/FMA intrinsic, only reachable from the leaves below,
// which carry `#[target_feature(enable = "avx2,fma,f16c")]`.
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
    unsafe fn load_f16(p: *const u16) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
    #[inline(always)]
    unsafe fn load_i8(p: *const i8) -> __m256 {
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i)))
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
    unsafe fn sub(a: __m256, b: __m256) -> __m256 {
        _mm256_sub_ps(a, b)
    }
    #[inline(always)]
    unsafe fn reduce_add(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
    }
    #[inline(always)]
    unsafe fn sqrt(a: __m256) -> __m256 {
        _mm256_sqrt_ps(a)
    }
    #[inline(always)]
    unsafe fn recip(a: __m256) -> __m256 {
        // 12-bit estimate, one Newton step: r + r(1 - ar).
        let r = _mm256_rcp_ps(a);
        _mm256_fmadd_ps(r, _mm256_fnmadd_ps(a, r, _mm256_set1_ps(1.0)), r)
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
    #[inline(always)]
    unsafe fn prefetch_l2(p: *const u8) {
        _mm_prefetch::<_MM_HINT_T1>(p.cast());
    }
    #[inline(always)]
    unsafe fn abs(a: __m256) -> __m256 {
        _mm256_andnot_ps(_mm256_set1_ps(-0.0), a)
    }
    #[inline(always)]
    unsafe fn reduce_max(v: __m256) -> f32 {
        let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_max_ss(s, _mm_shuffle_ps::<1>(s, s)))
    }
    #[inline(always)]
    unsafe fn round_even(a: __m256) -> __m256 {
        _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a)
    }
    #[inline(always)]
    unsafe fn store_i8(p: *mut i8, v: __m256) {
        let i = _mm256_cvtps_epi32(v);
        let w = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256::<1>(i));
        _mm_storel_epi64(p as *mut __m128i, _mm_packs_epi16(w, w));
    }
    #[inline(always)]
    unsafe fn load_i32(p: *const i32) -> __m256 {
        _mm256_cvtepi32_ps(_mm256_loadu_si256(p as *const __m256i))
    }
}

/// # Safety
/// CPU must have AVX2, FMA and F16C; lengths as checked by `kernels::gemm`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemm<W: Elem>(g: &GemmArgs, b: *const W) {
    // SAFETY: the caller holds this ISA's `Kernels` token and checked every length
    // behind the pointers (see `kernels::leaf!`).
    unsafe {
        if core::mem::size_of::<W>() == 2 {
            simd::gemm::<Avx2, W, MR_F16, 2>(g, b)
        } else {
            simd::gemm::<Avx2, W, 6, 2>(g, b)
        }
    }
}

/// GEMM rows per tile for f16 weights, which cannot be FMA memory operands: the two
/// converted weight vectors take registers of their own, and 6 rows (12 accumulators)
/// spilled an accumulator to the stack every k step (QuadraNet36-T in f16 ran 1.9x slower
/// than f32; with 5 rows, at f32's speed). int8 weights keep 6 rows: 5 measured 3% slower.
const MR_F16: usize = 5;

/// # Safety
/// CPU must have AVX2, FMA and F16C; pointers as checked by `kernels::qdw_row`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn qdw_row<W: Elem>(k: usize, a: &QdwArgs, taps: *const W) {
    // SAFETY: the caller holds this ISA's `Kernels` token and checked every length
    // behind the pointers (see `kernels::leaf!`).
    unsafe {
        match k {
            3 => simd::qdw_row::<Avx2, W, 3, 3>(a, taps),
            5 => simd::qdw_row::<Avx2, W, 5, 3>(a, taps),
            _ => simd::qdw_row::<Avx2, W, 7, 3>(a, taps),
        }
    }
}

/// # Safety
/// CPU must have AVX2, FMA and F16C; `p` valid for `len` floats.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gelu_slice(p: *mut f32, len: usize) {
    // SAFETY: the caller holds this ISA's `Kernels` token and checked every length
    // behind the pointers (see `kernels::leaf!`).
    unsafe { simd::gelu_slice::<Avx2>(p, len) }
}

/// # Safety
/// CPU must have AVX2, FMA and F16C; pointers in `a` valid as `simd::layer_norm_rows` requires.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn layer_norm_rows(a: &LnArgs) {
    // SAFETY: the caller holds this ISA's `Kernels` token and checked every length
    // behind the pointers (see `kernels::leaf!`).
    unsafe { simd::layer_norm_rows::<Avx2>(a) }
}

/// # Safety
/// CPU must have AVX2, FMA and F16C; pointers as checked by `kernels::dw_row`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dw_row(k: usize, a: &DwArgs) {
    // SAFETY: the caller holds this ISA's `Kernels` token and checked every length
    // behind the pointers (see `kernels::leaf!`).
    unsafe {
        match k {
            3 => simd::dw_row::<Avx2, 3, 8>(a),
            5 => simd::dw_row::<Avx2, 5, 8>(a),
            _ => simd::dw_row::<Avx2, 7, 8>(a),
        }
    }
}

/// # Safety
/// CPU must have AVX2+FMA; lengths as checked by `kernels::block_row`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn block_row(src: *const f32, w: usize, c: usize, k: usize, dst: *mut f32) {
    // SAFETY: the caller holds this ISA's `Kernels` token and checked every length
    // behind the pointers (see `kernels::leaf!`).
    unsafe { simd::block_row::<Avx2>(src, w, c, k, dst) }
}

/// The AVX2 int8 product by `vpmaddubsw` without saturation: the unsigned operand is
/// `|a|` and the signed one `b·sign(a)`, so every product is `a·b` and a pair sums to at
/// most `2·127·127 = 32258 < 2^15` (activations never reach -128 by construction, and w8a8
/// weights are checked to lie in `-127..=127` at load). `vpmaddwd` by ones widens the pair
/// sums into the int32 lanes. A vector covers 8 columns (32 bytes of a panel), one column
/// per lane: no reduction at the end.
#[derive(Clone, Copy)]
pub(crate) struct SignMadd;

// The impl is one unsafe group, under the SAFETY note below.
#[allow(unsafe_op_in_unsafe_fn)]
// SAFETY: AVX2 intrinsics, only reachable from the leaves below (AVX2 enabled); pointers
// as the trait requires.
unsafe impl Dot for SignMadd {
    type Acc = __m256i;
    /// Four activations in every lane, and their absolute values.
    type A = (__m256i, __m256i);
    type B = __m256i;
    const COLS: usize = 8;
    const OFFSET: bool = false;
    #[inline(always)]
    unsafe fn init(_: i32) -> __m256i {
        _mm256_setzero_si256()
    }
    #[inline(always)]
    unsafe fn bcast_a(p: *const i8) -> (__m256i, __m256i) {
        let a = _mm256_set1_epi32((p as *const i32).read_unaligned());
        (a, _mm256_abs_epi8(a))
    }
    #[inline(always)]
    unsafe fn load_b(p: *const i8) -> __m256i {
        _mm256_loadu_si256(p as *const __m256i)
    }
    #[inline(always)]
    unsafe fn dot(acc: __m256i, (a, abs_a): (__m256i, __m256i), b: __m256i) -> __m256i {
        let pairs = _mm256_maddubs_epi16(abs_a, _mm256_sign_epi8(b, a));
        _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
    }
    #[inline(always)]
    unsafe fn store(p: *mut i32, acc: __m256i) {
        _mm256_storeu_si256(p as *mut __m256i, acc)
    }
    type F = __m256;
    #[inline(always)]
    unsafe fn scaled(acc: __m256i, scale: f32) -> __m256 {
        _mm256_mul_ps(_mm256_cvtepi32_ps(acc), _mm256_set1_ps(scale))
    }
}

/// # Safety
/// CPU must have AVX2, FMA and F16C; pointers as checked by `q8::quantize_rows`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_rows(q: &QuantArgs) {
    // SAFETY: the caller holds this ISA's `Kernels` token and checked every length
    // behind the pointers (see `kernels::leaf!`).
    unsafe { q8::quantize::<Avx2>(q) }
}

/// # Safety
/// CPU must have AVX2, FMA and F16C; pointers as checked by `q8::gemm_q8`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemm_q8(g: &Q8Args) {
    // SAFETY: the caller holds this ISA's `Kernels` token and checked every length
    // behind the pointers (see `kernels::leaf!`).
    unsafe {
        if (WIDE_MIN_K..=WIDE_K).contains(&g.k) {
            gemm_q8_wide(g)
        } else {
            q8::gemm::<SignMadd, Avx2, 2, 4>(g)
        }
    }
}

/// 256-bit VNNI: `vpdpbusd ymm` multiplies u8 by s8 in groups of four into i32 lanes (32
/// MACs per instruction), the AVX-512 [`super::x86_avx512::Vnni`] scheme at half width: the
/// weights offset to u8 on load (`b ^ 0x80`), the accumulators starting at `-128·Σa`.
/// `VEX`: the AVX-VNNI encoding (Alder Lake and later, Zen 5), which the `avx2+vnni`
/// kernels run; otherwise the EVEX (AVX-512 VL) encoding of the same instruction, a twin
/// that tests this arithmetic on AVX-512 VNNI CPUs, which lack AVX-VNNI.
#[derive(Clone, Copy)]
pub(crate) struct VnniY<const VEX: bool>;

// The impl is one unsafe group, under the SAFETY note below.
#[allow(unsafe_op_in_unsafe_fn)]
// SAFETY: AVX2 and VNNI intrinsics, only reachable from `gemm_q8_avxvnni` (AVX-VNNI
// enabled, for `VEX`) and `gemm_q8_vnni_ymm` (AVX-512 VL/VNNI enabled, otherwise); pointers
// as the trait requires.
unsafe impl<const VEX: bool> Dot for VnniY<VEX> {
    type Acc = __m256i;
    type A = __m256i;
    type B = __m256i;
    const COLS: usize = 8;
    const OFFSET: bool = true;
    #[inline(always)]
    unsafe fn init(v: i32) -> __m256i {
        _mm256_set1_epi32(v)
    }
    #[inline(always)]
    unsafe fn bcast_a(p: *const i8) -> __m256i {
        _mm256_set1_epi32((p as *const i32).read_unaligned())
    }
    #[inline(always)]
    unsafe fn load_b(p: *const i8) -> __m256i {
        _mm256_xor_si256(
            _mm256_loadu_si256(p as *const __m256i),
            _mm256_set1_epi32(0x8080_8080u32 as i32),
        )
    }
    #[inline(always)]
    unsafe fn dot(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        if VEX {
            _mm256_dpbusd_avx_epi32(acc, b, a)
        } else {
            _mm256_dpbusd_epi32(acc, b, a)
        }
    }
    #[inline(always)]
    unsafe fn store(p: *mut i32, acc: __m256i) {
        _mm256_storeu_si256(p as *mut __m256i, acc)
    }
    type F = __m256;
    #[inline(always)]
    unsafe fn scaled(acc: __m256i, scale: f32) -> __m256 {
        _mm256_mul_ps(_mm256_cvtepi32_ps(acc), _mm256_set1_ps(scale))
    }
}

/// The `avx2+vnni` int8 GEMM: 6 rows x 16 columns of [`VnniY`] (12 accumulators, two
/// weight vectors and a broadcast in the 16 registers).
///
/// # Safety
/// CPU must have AVX2, FMA, F16C and AVX-VNNI; pointers as checked by `q8::gemm_q8`.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
pub(crate) unsafe fn gemm_q8_avxvnni(g: &Q8Args) {
    // SAFETY: the caller holds the `avx2+vnni` token and checked every length behind the
    // pointers.
    unsafe { q8::gemm::<VnniY<true>, Avx2, 6, 2>(g) }
}

/// [`gemm_q8_avxvnni`] in the EVEX encoding (see [`VnniY`]).
///
/// # Safety
/// CPU must have AVX2, FMA, F16C and AVX-512F/VL/BW/VNNI; pointers as checked by
/// `q8::gemm_q8_vnni_ymm`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
pub(crate) unsafe fn gemm_q8_vnni_ymm(g: &Q8Args) {
    // SAFETY: the caller promised these features and checked every length behind the
    // pointers.
    unsafe { q8::gemm::<VnniY<false>, Avx2, 6, 2>(g) }
}

/// Largest inner dimension of the widened int8 GEMM ([`gemm_q8_wide`]): its stack copy of
/// two panels' weights in i16 is `WIDE_K·64` bytes (32 KB). Beyond it (QuadraNet36-T's
/// widest pointwise layer has `k = 512`; `-b` presets reach 1024) the [`SignMadd`] tiles run.
const WIDE_K: usize = 512;

/// Smallest inner dimension of the widened int8 GEMM: its one-row tiles pay their epilogue
/// per row, which below this `k` cost more than the [`SignMadd`] tiles' extra multiplies
/// (QuadraNet25-XXS, whose first stages have `k` = 16 to 64, ran 2% slower on them).
const WIDE_MIN_K: usize = 128;

/// The int8 GEMM by `vpmaddwd` alone: two 16-column weight panels are sign-extended to i16
/// once per call, into a stack buffer, and every row of the GEMM then streams past them,
/// its four activations of a k-group sign-extended and broadcast once for all 32 columns.
/// Products are exact in i16 x i16 -> i32 pairs. A Zen 4 core issues 16-bit multiplies on
/// two pipes: this scheme needs two of them per 32 multiply-adds where [`SignMadd`] needs
/// three (`vpsignb`, `vpmaddubsw`, `vpmaddwd`); the widening costs `1/m` of the work. One
/// row per tile: more rows gave LLVM more live vectors than the 16 registers and it
/// spilled; per k-group a row needs one widened broadcast per eight `vpmaddwd` either way.
///
/// # Safety
/// AVX2 available; pointers as checked by `q8::gemm_q8`; `g.k <= WIDE_K`.
#[inline(always)]
unsafe fn gemm_q8_wide(g: &Q8Args) {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        // Vector `8·kg + 4p + v` holds columns `4v..4v+4` of panel `p`, k-group `kg`: per
        // column its four k in i16 (the dot layout's 16 bytes, sign-extended). Every vector
        // a tile reads is written first.
        let mut wide = core::mem::MaybeUninit::<[__m256i; 2 * WIDE_K]>::uninit();
        let wp = wide.as_mut_ptr().cast::<__m256i>();
        let mut j0 = 0;
        while j0 < g.n {
            let cols = (g.n - j0).min(2 * PANEL);
            let np = cols.div_ceil(PANEL);
            // Whole panels: `k·16` bytes each (the last is padded to 16 columns).
            for p in 0..np {
                let src = g.b.add((j0 / PANEL + p) * g.pstride);
                for t in 0..g.k {
                    let v = _mm_loadu_si128(src.add(16 * t) as *const __m128i);
                    wp.add(2 * t - t % 4 + 4 * p).write(_mm256_cvtepi8_epi16(v));
                }
            }
            for i in 0..g.m {
                if np == 2 {
                    wide_row::<8>(g, wp, i, j0, cols);
                } else {
                    wide_row::<4>(g, wp, i, j0, cols);
                }
            }
            j0 += 2 * PANEL;
        }
    }
}

/// Row `i` x `4·NV` columns of [`gemm_q8_wide`]: `NV` accumulators, each lane the sum of
/// one column's even or odd k-pairs, added across at the end.
///
/// # Safety
/// As [`gemm_q8_wide`]; `wp` holds the widened panels of columns `j0..j0+4·NV`; row `i`
/// exists.
#[inline(always)]
unsafe fn wide_row<const NV: usize>(
    g: &Q8Args,
    wp: *const __m256i,
    i: usize,
    j0: usize,
    cols: usize,
) {
    // SAFETY: the caller's contract (the ISA enabled, every pointer valid for the
    // lengths documented above) is what the body relies on.
    unsafe {
        let a = g.a.add(i * g.k);
        let mut acc = [_mm256_setzero_si256(); NV];
        for kg in 0..g.k / 4 {
            // Four activations as i16, repeated across the vector: `(a0,a1)` meets each
            // column's first k-pair, `(a2,a3)` its second.
            let x = (a.add(4 * kg) as *const i32).read_unaligned();
            let av = _mm256_cvtepi8_epi16(_mm_set1_epi32(x));
            for (v, acc) in acc.iter_mut().enumerate() {
                let b = wp.add(8 * kg + v).read();
                *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(av, b));
            }
        }
        let mut t = core::mem::MaybeUninit::<[i32; TILE_COLS]>::uninit();
        let tp = t.as_mut_ptr().cast::<i32>();
        for h in 0..NV / 2 {
            // hadd gives columns (0,1,4,5 | 2,3,6,7) of the eight; the permute orders them.
            let s = _mm256_hadd_epi32(acc[2 * h], acc[2 * h + 1]);
            let s = _mm256_permute4x64_epi64::<0b11_01_10_00>(s);
            _mm256_storeu_si256(tp.add(8 * h) as *mut __m256i, s);
        }
        q8::finish::<Avx2, 1>(g, tp, i, j0, cols, false);
    }
}
