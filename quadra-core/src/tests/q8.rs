//! int8 compute (w8a8): every int8 GEMM path against the scalar reference (the int32 sums
//! bit for bit), the quantisation bit for bit, the epilogues, and w8a8 models against f32.

use std::vec;
use std::vec::Vec;

use super::residual_epi;
use super::{
    assert_fp16_gelu, available, available_q8, cosine, AlignedBuf, Rng, SplitReverse,
    SplitWeighted, StateDict,
};
use crate::arch::{Arch, BlockSpec, Stage};
use crate::isa::Kernels;
use crate::kernels::q8::{self, QRows, QRowsMut};
use crate::kernels::{scalar, Dtype, Epilogue, MatData, MatMut, PackedB, PANEL};
use crate::net::{quantize_model, MatDataMut, Model};
use crate::weights::Weights;

/// One int8 GEMM leaf under test: a kernel token's, or the EVEX twin of the AVX-VNNI tiles
/// (the AVX-VNNI arithmetic on a CPU with AVX-512 VNNI, which has no AVX-VNNI itself).
#[derive(Clone, Copy)]
enum Q8Path {
    Kern(Kernels),
    #[cfg(target_arch = "x86_64")]
    VnniYmm,
}

/// Every int8 GEMM leaf this CPU runs.
fn q8_paths() -> Vec<Q8Path> {
    // `mut` is used on x86_64 only.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut v: Vec<Q8Path> = available_q8().into_iter().map(Q8Path::Kern).collect();
    #[cfg(target_arch = "x86_64")]
    if crate::isa::Kernels::evex_vnni_twin_supported() {
        v.push(Q8Path::VnniYmm);
    }
    // Each NEON token once more with FEAT_FP16 (the half-precision GELU epilogue).
    #[cfg(target_arch = "aarch64")]
    if std::arch::is_aarch64_feature_detected!("fp16") {
        let half: Vec<Q8Path> = available_q8()
            .into_iter()
            // SAFETY: FEAT_FP16 detected above.
            .map(|k| Q8Path::Kern(unsafe { k.with_fp16_unchecked() }))
            .collect();
        v.extend(half);
    }
    v
}

impl Q8Path {
    fn name(self) -> &'static str {
        match self {
            Q8Path::Kern(k) => k.describe(),
            #[cfg(target_arch = "x86_64")]
            Q8Path::VnniYmm => "avx2+vnni tiles in EVEX",
        }
    }

    fn i32(self, a: QRows<'_>, b: PackedB<'_>, out: &mut [i32]) {
        match self {
            Q8Path::Kern(k) => q8::gemm_q8_i32(k, a, b, out).unwrap(),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `q8_paths` offers this path only on a CPU with AVX-512F/VL/BW/VNNI and
            // the AVX2 kernels (AVX2, FMA, F16C).
            Q8Path::VnniYmm => unsafe { q8::gemm_q8_i32_vnni_ymm(a, b, out) }.unwrap(),
        }
    }

    fn f32(self, a: QRows<'_>, b: PackedB<'_>, epi: Epilogue<'_>, out: MatMut<'_>) {
        match self {
            Q8Path::Kern(k) => q8::gemm_q8(k, a, b, epi, out).unwrap(),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in `i32`.
            Q8Path::VnniYmm => unsafe { q8::gemm_q8_vnni_ymm(a, b, epi, out) }.unwrap(),
        }
    }
}

/// Owned quantised rows.
struct QBuf {
    q: Vec<i8>,
    scales: Vec<f32>,
    sums: Vec<i32>,
    rows: usize,
    cols: usize,
}

impl QBuf {
    fn new(rows: usize, cols: usize) -> Self {
        QBuf {
            q: vec![0; rows * cols],
            scales: vec![0.0; rows],
            sums: vec![0; rows],
            rows,
            cols,
        }
    }
    /// Random int8 rows in `lo..=hi`, with made-up scales and their true sums.
    fn random(rng: &mut Rng, rows: usize, cols: usize, lo: i32, hi: i32) -> Self {
        let mut b = QBuf::new(rows, cols);
        for v in &mut b.q {
            *v = (lo + rng.usize(0, (hi - lo + 1) as usize) as i32) as i8;
        }
        for i in 0..rows {
            b.sums[i] = b.q[i * cols..(i + 1) * cols]
                .iter()
                .map(|&v| v as i32)
                .sum();
            b.scales[i] = rng.f32(0.001, 0.05);
        }
        b
    }
    fn view(&self) -> QRows<'_> {
        QRows {
            q: &self.q,
            scales: &self.scales,
            sums: &self.sums,
            rows: self.rows,
            cols: self.cols,
        }
    }
    fn view_mut(&mut self) -> QRowsMut<'_> {
        QRowsMut {
            q: &mut self.q,
            scales: &mut self.scales,
            sums: &mut self.sums,
            rows: self.rows,
            cols: self.cols,
        }
    }
}

/// `b` with its checksum recomputed, in aligned storage: a file edited on purpose.
fn resealed(mut b: Vec<u8>) -> AlignedBuf {
    let crc = crate::format::file_crc(&b);
    b[96..100].copy_from_slice(&crc.to_le_bytes());
    AlignedBuf::new(&b)
}

/// Asserts that `b`, resealed, is refused with a message containing `says`.
fn refuse(b: Vec<u8>, says: &str) {
    let e = std::format!(
        "{}",
        crate::format::QnetFile::parse(resealed(b).bytes()).unwrap_err()
    );
    assert!(e.contains(says), "want '{says}': {e}");
}

/// A mixed-precision w8a8 stream: int8 values `q`, float units `flags` with their `f32`.
fn w8a8_mats<'a>(q: &'a [i8], flags: &'a [u8], f32s: &'a [f32]) -> MatData<'a> {
    MatData::W8A8(q, crate::FloatBlocks { flags, mats: f32s })
}

/// A `k x n` int8 matrix `dense[kk·n + j]` in the dot-product layout.
fn dot_pack(dense: &[i8], k: usize, n: usize) -> Vec<i8> {
    let mut out = vec![0i8; PackedB::packed_len(k, n)];
    for kk in 0..k {
        for j in 0..n {
            out[PackedB::dot_index(k, kk, j)] = dense[kk * n + j];
        }
    }
    out
}

fn random_i8(rng: &mut Rng, len: usize, lo: i32, hi: i32) -> Vec<i8> {
    (0..len)
        .map(|_| (lo + rng.usize(0, (hi - lo + 1) as usize) as i32) as i8)
        .collect()
}

#[test]
fn dot_layout_get_reads_what_was_packed() {
    let mut rng = Rng::new(70);
    let (k, n) = (12, 37);
    let dense = random_i8(&mut rng, k * n, -127, 127);
    let packed = dot_pack(&dense, k, n);
    let scales = vec![1.0; n];
    let b = PackedB::new_dot(&packed, &scales, k, n).unwrap();
    for kk in 0..k {
        for j in 0..n {
            assert_eq!(b.get(kk, j), dense[kk * n + j] as f32, "B[{kk}][{j}]");
        }
    }
    // Row slices stay on 4-row groups; odd ones are refused, not misread.
    let r = b.rows(4, 12).unwrap();
    assert_eq!(r.get(0, 5), dense[4 * n + 5] as f32);
    assert!(b.rows(2, 12).is_none() && b.rows(0, 6).is_none());
    assert!(PackedB::new_dot(&packed[..PackedB::packed_len(6, n)], &scales, 6, n).is_err());
}

#[test]
fn quantize_rows_simd_writes_the_reference_bits() {
    let mut rng = Rng::new(71);
    for kern in available() {
        for k in [1usize, 3, 4, 7, 8, 15, 16, 17, 31, 33, 64, 100, 128, 515] {
            for m in [1usize, 2, 5] {
                let lda = k + 3;
                let mut a = rng.vec(m * lda, -3.0, 3.0);
                // Row 0: exact ties (amax 127 makes the inverse scale 1): 2.5 -> 2, 3.5 -> 4.
                if k >= 4 {
                    a[..4].copy_from_slice(&[127.0, 2.5, -3.5, 0.5]);
                }
                // Row 1 of zeros.
                if m > 1 {
                    a[lda..lda + k].fill(0.0);
                }
                let mut want = QBuf::new(m, k);
                q8::quantize_rows_ref(&a, lda, &mut want.view_mut());
                let mut got = QBuf::new(m, k);
                q8::quantize_rows(kern, &a, lda, &mut got.view_mut()).unwrap();
                let what = std::format!("{} k={k} m={m}", kern.describe());
                assert_eq!(got.q, want.q, "{what}: values");
                assert_eq!(got.sums, want.sums, "{what}: sums");
                let bits = |v: &[f32]| v.iter().map(|s| s.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got.scales), bits(&want.scales), "{what}: scales");
                if k >= 4 {
                    assert_eq!(&got.q[..4], &[127, 2, -4, 0], "{what}: ties to even");
                }
                if m > 1 {
                    assert!(got.q[k..2 * k].iter().all(|&v| v == 0) && got.scales[1] == 0.0);
                }
                let sums: Vec<i32> = (0..m)
                    .map(|i| got.q[i * k..(i + 1) * k].iter().map(|&v| v as i32).sum())
                    .collect();
                assert_eq!(got.sums, sums, "{what}: sums are the sums");
                assert!(
                    got.q.iter().all(|&v| v != -128),
                    "{what}: -128 never occurs"
                );
            }
        }
        // A NaN or an infinity anywhere in a row makes its scale NaN (never finite garbage),
        // wherever it sits (the main loop or the tail); that row's int8 values are then
        // unspecified (every output from them is NaN), the clean row's match the
        // reference's. A row whose `max|x|` is so small that `127 / amax` would overflow
        // is zeros with scale 0 on every path.
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e-39, -2e-45] {
            for at in [0usize, 5, 16, 33, 39] {
                let mut a = rng.vec(2 * 40, -1.0, 1.0);
                if bad.is_finite() {
                    a[40..].iter_mut().for_each(|v| *v *= bad.abs() * 1e-3);
                    a[40 + 7] = 0.0;
                }
                a[40 + at] = bad;
                let mut want = QBuf::new(2, 40);
                q8::quantize_rows_ref(&a, 40, &mut want.view_mut());
                let mut got = QBuf::new(2, 40);
                q8::quantize_rows(kern, &a, 40, &mut got.view_mut()).unwrap();
                let what = std::format!("{}: {bad} at {at}", kern.describe());
                assert!(got.scales[0].is_finite(), "{what}: clean row");
                assert_eq!(got.scales[1].is_nan(), !bad.is_finite(), "{what}: scale");
                if bad.is_finite() {
                    assert!(
                        got.scales[1] == 0.0 && got.q[40..].iter().all(|&v| v == 0),
                        "{what}"
                    );
                }
                let rows = if bad.is_finite() { 2 } else { 1 };
                assert_eq!(got.q[..40 * rows], want.q[..40 * rows], "{what}: values");
                assert_eq!(got.sums[..rows], want.sums[..rows], "{what}: sums");
                assert!(
                    got.q.iter().all(|&v| v != -128),
                    "{what}: -128 never occurs"
                );
            }
        }
    }
}

#[test]
fn int8_gemm_sums_are_bit_identical_on_every_path() {
    let mut rng = Rng::new(72);
    let paths = q8_paths();
    let ms = [1usize, 2, 3, 4, 5, 6, 7, 11, 13, 25];
    // The AVX2 widened-weights path takes k = 128..=512 (132, 256, 512 here); the others,
    // 516 included, run its sign tiles.
    let ks = [4usize, 8, 12, 16, 60, 64, 132, 256, 512, 516];
    let ns = [1usize, 3, 4, 15, 16, 17, 31, 33, 48, 64, 65, 100, 130];
    for &k in &ks {
        for &n in &ns {
            // The whole weight range of the contract (-127..=127; loading refuses -128).
            let dense = random_i8(&mut rng, k * n, -127, 127);
            let packed = dot_pack(&dense, k, n);
            let scales = vec![1.0; n];
            let b = PackedB::new_dot(&packed, &scales, k, n).unwrap();
            for &m in &ms {
                let a = QBuf::random(&mut rng, m, k, -127, 127);
                let mut want = vec![0i32; m * n];
                q8::gemm_q8_i32_ref(a.view(), b, &mut want);
                // The reference is the plain sum.
                let (i, j) = (m - 1, n - 1);
                let exact: i32 = (0..k)
                    .map(|kk| a.q[i * k + kk] as i32 * dense[kk * n + j] as i32)
                    .sum();
                assert_eq!(want[i * n + j], exact);
                for &path in &paths {
                    let mut got = vec![i32::MIN; m * n];
                    path.i32(a.view(), b, &mut got);
                    assert_eq!(got, want, "{} m={m} k={k} n={n}", path.name());
                }
            }
        }
    }
}

#[test]
fn int8_gemm_sums_are_exact_at_the_largest_inner_dimension() {
    // 16384 channels x E = 8: |sum| up to 131072·127·127, just under 2^31. VNNI's offset
    // form sums (b + 128)·a, up to 131072·255·127, which wraps past 2^31 on the way and
    // must come back exact.
    let (m, k, n) = (2, q8::MAX_K, 16);
    let mut a = QBuf::new(m, k);
    for (i, v) in a.q.iter_mut().enumerate() {
        *v = if i < k { 127 } else { -127 };
    }
    for i in 0..m {
        a.sums[i] = a.q[i * k..(i + 1) * k].iter().map(|&v| v as i32).sum();
        a.scales[i] = 1.0;
    }
    let dense: Vec<i8> = (0..k * n)
        .map(|i| if i % n < 8 { -127 } else { 127 })
        .collect();
    let packed = dot_pack(&dense, k, n);
    let scales = vec![1.0; n];
    let b = PackedB::new_dot(&packed, &scales, k, n).unwrap();
    let want: Vec<i32> = (0..m * n)
        .map(|t| {
            let (i, j) = (t / n, t % n);
            let (av, bv) = (a.q[i * k] as i64, dense[j] as i64);
            i32::try_from(av * bv * k as i64).unwrap()
        })
        .collect();
    for path in q8_paths() {
        let mut got = vec![0i32; m * n];
        path.i32(a.view(), b, &mut got);
        assert_eq!(got, want, "{}", path.name());
    }
}

#[test]
fn int8_gemm_epilogues_match_the_reference() {
    let mut rng = Rng::new(73);
    for (m, k, n) in [
        (1, 4, 1),
        (7, 64, 33),
        (13, 128, 100),
        (6, 256, 64),
        (25, 16, 130),
    ] {
        let dense = random_i8(&mut rng, k * n, -127, 127);
        let packed = dot_pack(&dense, k, n);
        let cs = rng.vec(n, 0.001, 0.02);
        let b = PackedB::new_dot(&packed, &cs, k, n).unwrap();
        let a = QBuf::random(&mut rng, m, k, -127, 127);
        let bias = rng.vec(n, -1.0, 1.0);
        let gamma = rng.vec(n, 0.5, 1.5);
        let base = rng.vec(m * n, -1.0, 1.0);
        let epis = [
            Epilogue::Bias(&bias),
            Epilogue::BiasGelu(&bias),
            Epilogue::BiasScaleAdd {
                bias: &bias,
                gamma: &gamma,
            },
            Epilogue::ScaleAdd { gamma: &gamma },
        ];
        // `sum·scales + bias`, GELU's input.
        let mut v = base.clone();
        q8::gemm_q8_ref(a.view(), b, Epilogue::Bias(&bias), &mut v, n);
        for epi in epis {
            let mut want = base.clone();
            q8::gemm_q8_ref(a.view(), b, epi, &mut want, n);
            let scale = 1.0 + want.iter().fold(0.0f32, |s, v| s.max(v.abs()));
            for path in q8_paths() {
                let mut got = base.clone();
                path.f32(a.view(), b, epi, MatMut::dense(&mut got, m, n));
                if matches!((path, epi), (Q8Path::Kern(k), Epilogue::BiasGelu(_)) if k.fp16()) {
                    // Half-precision GELU: its definition on the same input.
                    let what = std::format!("{} {m}x{k}x{n}", path.name());
                    assert_fp16_gelu(&got, &v, 2e-6 * scale, &what);
                    continue;
                }
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    // The sums are exact; what differs is f32 rounding in the epilogue (a
                    // fused multiply-add, the rational erf in GELU): a few ulps of the
                    // largest output.
                    assert!(
                        (g - w).abs() <= 2e-6 * scale,
                        "{} {m}x{k}x{n} {epi:?} [{i}]: {g} vs {w}",
                        path.name()
                    );
                }
            }
        }
    }
}

/// PW2's residual epilogues (`ScaleAdd`, `BiasScaleAdd`) on every SIMD int8 path, bit for
/// bit in the kernels' order of operations, `out = fma(gamma, fma((acc as f32)·rs, cs,
/// bias), out)`: NEON applies them from the tile's registers where its columns are whole
/// (`simd::residual`; the 5 x 16 sdot tile's in assembly for k <= 256), the others (and
/// NEON's partial columns) from the parked tile; the same bits either way. Rows around
/// the 5-, 4- and 2-row tiles, columns around the 16-column tile. (The scalar reference
/// rounds `v·cs` and `+ bias` apart: not compared.)
#[test]
fn int8_residual_epilogues_are_the_kernels_order_bit_for_bit() {
    let mut rng = Rng::new(74);
    let mut checked = 0usize;
    for (m, k, n) in [
        (1, 4, 16),
        (5, 64, 16),
        (7, 128, 48),
        (13, 16, 64),
        (4, 260, 33),
        (11, 32, 130),
        (2, 8, 15),
        (9, 512, 32),
    ] {
        let dense = random_i8(&mut rng, k * n, -127, 127);
        let a = QBuf::random(&mut rng, m, k, -127, 127);
        checked += check_residual(&mut rng, &a, &dense, n);
    }
    std::eprintln!("int8 residual epilogues: {checked} outputs in the kernels' order, bit for bit");
}

/// ... at the largest sums the contract allows (every product ±127·127), around k = 256:
/// NEON's assembly 5 x 16 tile converts its sums by an integer trick exact only within
/// ±2^22 (k <= 256 keeps them there: 256·127·127 = 4,129,024), both in PW2's residual and
/// where it parks the tile for the other epilogues (here the bias one, `fma(acc·rs, cs,
/// bias)`); larger k take `scvtf`. k = 300 (sums of 4.8M) fails if the trick is used past
/// its range.
#[test]
fn int8_epilogues_are_exact_at_the_largest_sums() {
    let mut rng = Rng::new(75);
    let mut checked = 0usize;
    for (m, k, n) in [(5, 252, 16), (10, 256, 32), (5, 260, 16), (11, 300, 48)] {
        // Columns alternately all +127 and all -127; rows alternately of +127 and -127:
        // sums of ±k·127·127.
        let dense: Vec<i8> = (0..k * n)
            .map(|e| if e % n % 2 == 0 { 127 } else { -127 })
            .collect();
        let mut a = QBuf::random(&mut rng, m, k, -127, 127);
        for i in 0..m {
            let v = if i % 2 == 0 { 127 } else { -127 };
            a.q[i * k..(i + 1) * k].fill(v);
            a.sums[i] = v as i32 * k as i32;
        }
        checked += check_residual(&mut rng, &a, &dense, n);
        let packed = dot_pack(&dense, k, n);
        let cs = rng.vec(n, 0.001, 0.02);
        let b = PackedB::new_dot(&packed, &cs, k, n).unwrap();
        let bias = rng.vec(n, -1.0, 1.0);
        let mut sums = vec![0i32; m * n];
        q8::gemm_q8_i32_ref(a.view(), b, &mut sums);
        for path in q8_paths() {
            // (The scalar reference rounds `v·cs` and `+ bias` apart.)
            if matches!(path, Q8Path::Kern(k) if k.isa() == crate::isa::Isa::Scalar) {
                continue;
            }
            let mut got = vec![f32::NAN; m * n];
            path.f32(
                a.view(),
                b,
                Epilogue::Bias(&bias),
                MatMut::dense(&mut got, m, n),
            );
            for (e, g) in got.iter().enumerate() {
                let (i, j) = (e / n, e % n);
                let w = libm::fmaf(sums[e] as f32 * a.scales[i], cs[j], bias[j]);
                assert!(
                    g.to_bits() == w.to_bits() && g.is_finite(),
                    "{} bias epilogue {m}x{k}x{n} [{e}]: {g:e} vs {w:e}",
                    path.name()
                );
            }
            checked += got.len();
        }
    }
    std::eprintln!("int8 epilogues at |sum| up to 4.8M: {checked} outputs, bit for bit");
}

/// Both residual epilogues of `a` times the dense `k x n` int8 weights (random scales,
/// bias, gamma and output) on every SIMD int8 path against `fma(gamma, fma((acc as
/// f32)·rs, cs, bias), out)`; the outputs compared.
fn check_residual(rng: &mut Rng, a: &QBuf, dense: &[i8], n: usize) -> usize {
    let (m, k) = (a.rows, a.cols);
    let packed = dot_pack(dense, k, n);
    let cs = rng.vec(n, 0.001, 0.02);
    let b = PackedB::new_dot(&packed, &cs, k, n).unwrap();
    let (bias, gamma) = (rng.vec(n, -1.0, 1.0), rng.vec(n, 0.5, 1.5));
    let base = rng.vec(m * n, -1.0, 1.0);
    let mut sums = vec![0i32; m * n];
    q8::gemm_q8_i32_ref(a.view(), b, &mut sums);
    let mut checked = 0;
    for with_bias in [false, true] {
        let epi = residual_epi(with_bias, &bias, &gamma);
        let want: Vec<f32> = (0..m * n)
            .map(|e| {
                let (i, j) = (e / n, e % n);
                let b = if with_bias { bias[j] } else { 0.0 };
                let v = libm::fmaf(sums[e] as f32 * a.scales[i], cs[j], b);
                libm::fmaf(gamma[j], v, base[e])
            })
            .collect();
        for path in q8_paths() {
            if matches!(path, Q8Path::Kern(k) if k.isa() == crate::isa::Isa::Scalar) {
                continue;
            }
            let mut got = base.clone();
            path.f32(a.view(), b, epi, MatMut::dense(&mut got, m, n));
            for (e, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    g.to_bits() == w.to_bits() && g.is_finite(),
                    "{} {m}x{k}x{n} bias {with_bias} [{e}]: {g:e} vs {w:e}",
                    path.name()
                );
            }
            checked += got.len();
        }
    }
    checked
}

#[test]
fn int8_gemm_refuses_what_it_cannot_compute() {
    let packed = vec![0i8; PackedB::packed_len(8, 16)];
    let scales = vec![1.0; 16];
    let dot = PackedB::new_dot(&packed, &scales, 8, 16).unwrap();
    let plain = PackedB::new(MatData::I8(&packed), &scales, 8, 16).unwrap();
    let a = QBuf::new(3, 8);
    let mut out = vec![0.0; 48];
    let e = q8::gemm_q8(
        Kernels::scalar(),
        a.view(),
        plain,
        Epilogue::Bias(&scales),
        MatMut::dense(&mut out, 3, 16),
    )
    .unwrap_err();
    assert!(std::format!("{e}").contains("dot-product layout"), "{e}");
    // The f32 GEMM will not misread dot-layout weights.
    let f = vec![0.0f32; 24];
    let e = crate::kernels::gemm(
        Kernels::scalar(),
        crate::kernels::MatRef::dense(&f, 3, 8),
        dot,
        Epilogue::Bias(&scales),
        MatMut::dense(&mut out, 3, 16),
    )
    .unwrap_err();
    assert!(std::format!("{e}").contains("gemm_q8"), "{e}");
    // Short buffers are errors.
    assert!(q8::gemm_q8_i32(Kernels::scalar(), a.view(), dot, &mut [0; 47]).is_err());
    let mut short = QBuf::new(3, 8);
    short.q.pop();
    assert!(q8::gemm_q8_i32(Kernels::scalar(), short.view(), dot, &mut [0; 48]).is_err());
}

/// A small network with every stage width a multiple of 4 (all pointwise GEMMs int8) and
/// one stage of width 6 (PW1's k = 6 stays weight-only; PW2's k = 12 computes in int8).
fn mixed_arch() -> Arch<'static> {
    const B: [BlockSpec; 2] = [BlockSpec::quadra(3, 4), BlockSpec::quadra(7, 2)];
    Arch {
        in_chans: 3,
        num_classes: 20,
        stages: [
            Stage {
                dim: 16,
                blocks: &B,
            },
            Stage {
                dim: 6,
                blocks: &B[1..],
            },
            Stage {
                dim: 64,
                blocks: &B[..1],
            },
            Stage {
                dim: 128,
                blocks: &B,
            },
        ],
    }
}

/// The packed f32 model of `arch` and its w8a8 form (`vecs` with int8 scales, `mats`).
fn w8a8_of(arch: &Arch<'_>, seed: u64) -> (crate::tests::Packed, Vec<f32>, Vec<i8>) {
    let packed = StateDict::random(arch, seed).pack(arch);
    let (vecs, q, _, _) = mixed_of(arch, &packed, &[]);
    (packed, vecs, q)
}

#[test]
fn w8a8_model_tracks_f32_and_is_the_same_in_any_bands() {
    let arch = mixed_arch();
    let (packed, vecs, q) = w8a8_of(&arch, 81);
    let w8a8 = Weights {
        vecs: &vecs,
        mats: MatData::W8A8(&q, crate::FloatBlocks::NONE),
    };
    let model = Model::new(arch, w8a8).unwrap();
    let f32_model = Model::new(arch, packed.weights()).unwrap();
    assert!(model.arena_len(64, 64, 1) > arch.arena_len(64, 64));
    for (h, w) in [(64, 64), (70, 45)] {
        let input = Rng::new(82).vec(h * w * 3, -1.0, 1.0);
        let mut arena = vec![0.0; arch.arena_len(h, w)];
        let mut want = vec![0.0; 20];
        f32_model
            .forward(Kernels::scalar(), &input, h, w, &mut arena, &mut want)
            .unwrap();
        let mut by_kernel = Vec::new();
        for kern in available_q8() {
            let mut arena = vec![f32::NAN; model.arena_len(h, w, 1)];
            let mut got = vec![0.0; 20];
            model
                .forward(kern, &input, h, w, &mut arena, &mut got)
                .unwrap();
            assert!(got.iter().all(|v| v.is_finite()), "{}", kern.describe());
            let c = cosine(&got, &want);
            // What int8 weights and per-pixel int8 activations cost on random weights
            // (measured ~0.9999; the PyTorch simulation of the scheme gives 0.9999 too).
            assert!(c >= 0.999, "{} {h}x{w}: cosine {c}", kern.describe());
            for bands in [2, 3, 16] {
                let mut arena = vec![f32::NAN; model.arena_len(h, w, bands)];
                let mut split = vec![0.0; 20];
                model
                    .forward_with(
                        &SplitReverse(bands),
                        kern,
                        &input,
                        h,
                        w,
                        &mut arena,
                        &mut split,
                    )
                    .unwrap();
                assert_eq!(split, got, "{} {h}x{w} in {bands} bands", kern.describe());
            }
            // Uneven bands (unequal cores): 3:1, an empty band, one-row bands.
            for weights in [&[3u32, 1][..], &[1, 0, 5], &[1, 1000, 1]] {
                let mut arena = vec![f32::NAN; model.arena_len(h, w, weights.len())];
                let mut split = vec![0.0; 20];
                let exec = SplitWeighted(weights);
                model
                    .forward_with(&exec, kern, &input, h, w, &mut arena, &mut split)
                    .unwrap();
                assert_eq!(
                    split,
                    got,
                    "{} {h}x{w} in bands {weights:?}",
                    kern.describe()
                );
            }
            by_kernel.push((kern, got));
        }
        // Across kernels the int32 sums agree; the f32 parts (QDW, LayerNorm, GELU) differ
        // as they do in f32 models, and a rounding flip of an activation now and then.
        let (_, first) = &by_kernel[0];
        for (kern, got) in &by_kernel[1..] {
            let d = got
                .iter()
                .zip(first)
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            let scale = first.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!(d <= 1e-2 * scale, "{} vs scalar: {d}", kern.describe());
        }
    }
}

#[test]
fn w8a8_files_round_trip_and_bad_scales_are_refused() {
    use crate::format::{write, FileLayout, QnetFile};
    let arch = mixed_arch();
    let (_, vecs, q) = w8a8_of(&arch, 83);
    let weights = Weights {
        vecs: &vecs,
        mats: MatData::W8A8(&q, crate::FloatBlocks::NONE),
    };
    let lay = FileLayout::of(&arch, Dtype::W8A8, 2);
    let mut out = vec![0u8; lay.len];
    write(&arch, weights, "{}", &mut out).unwrap();
    assert_eq!(out[8], 3, "w8a8 files are version 3");
    let buf = AlignedBuf::new(&out);
    let file = QnetFile::parse(buf.bytes()).unwrap();
    assert_eq!(file.dtype(), Dtype::W8A8);
    let (h, w) = (64, 64);
    let input = Rng::new(84).vec(h * w * 3, -1.0, 1.0);
    let run = |m: Model<'_>| {
        let mut arena = vec![0.0; m.arena_len(h, w, 1)];
        let mut l = vec![0.0; 20];
        m.forward(Kernels::scalar(), &input, h, w, &mut arena, &mut l)
            .unwrap();
        l
    };
    assert_eq!(
        run(file.model().unwrap()),
        run(Model::new(arch, weights).unwrap())
    );
    // A w8a8 dtype code in a version 2 file, and an unknown dtype, are refused by name.
    let mut v2 = out.clone();
    v2[8] = 2;
    let e = std::format!("{}", QnetFile::parse(resealed(v2).bytes()).unwrap_err());
    assert!(e.contains("version 2") && e.contains("w8a8"), "{e}");
    let mut unknown = out.clone();
    unknown[12] = 9;
    refuse(unknown, "unknown matrix dtype");
    // The stem's first scale (the first matrix's scales start the vector stream) zero,
    // negative, NaN or absurd: refused even with a valid checksum.
    for bad in [0.0f32, -0.01, f32::NAN, 3e38] {
        let mut b = out.clone();
        b[lay.vecs..lay.vecs + 4].copy_from_slice(&bad.to_le_bytes());
        let e = std::format!("{}", QnetFile::parse(resealed(b).bytes()).unwrap_err());
        assert!(e.contains("scale") || e.contains("NaN"), "{bad}: {e}");
    }
    // An int8 weight of -128 (outside the symmetric range the int8 kernels rely on).
    let mut b = out.clone();
    b[lay.mats + 5] = 0x80;
    refuse(b, "-128");
    // A truncated file (the scale table cut short) is an error, never a panic.
    for cut in [lay.vecs + 8, lay.mats - 4, lay.len - 1] {
        assert!(QnetFile::parse(AlignedBuf::new(&out[..cut]).bytes()).is_err());
    }
}

#[test]
fn w8a8_weights_are_the_int8_weights_reordered() {
    // Same values and scales as int8 storage, only the pointwise panels' order differs:
    // the dot-layout view reads back what the plain int8 view reads.
    let arch = mixed_arch();
    let packed = StateDict::random(&arch, 85).pack(&arch);
    let (mut v8, mut vw) = (packed.vecs.clone(), packed.vecs.clone());
    let (mut i8s, mut w8) = (vec![0i8; packed.mats.len()], vec![0i8; packed.mats.len()]);
    quantize_model(
        &arch,
        &mut v8,
        &packed.mats,
        MatDataMut::I8(&mut i8s),
        |_, _| {},
    )
    .unwrap();
    quantize_model(
        &arch,
        &mut vw,
        &packed.mats,
        MatDataMut::W8A8(&mut w8),
        |_, _| {},
    )
    .unwrap();
    assert!(v8 == vw, "the scales differ");
    assert!(i8s != w8, "no panel was reordered");
    let mut sorted = (i8s.clone(), w8.clone());
    sorted.0.sort_unstable();
    sorted.1.sort_unstable();
    assert!(sorted.0 == sorted.1, "the values differ");
    // Element by element through the two views of the first block's PW1 (16 -> 64).
    let (c, n) = (16, 64);
    let w_i8 = Weights {
        vecs: &v8,
        mats: MatData::I8(&i8s),
    };
    let w_dot = Weights {
        vecs: &vw,
        mats: MatData::W8A8(&w8, crate::FloatBlocks::NONE),
    };
    let (a, b) = (stage0_block(w_i8, 0).pw1, stage0_block(w_dot, 0).pw1);
    assert!(!a.is_dot() && b.is_dot());
    for kk in 0..c {
        for j in 0..n {
            assert_eq!(a.get(kk, j), b.get(kk, j), "B[{kk}][{j}]");
        }
    }
}

/// Block `i` (0 or 1) of stage 0 of [`mixed_arch`], read from `w` as a model reads it.
fn stage0_block(w: Weights<'_>, i: usize) -> crate::block::BlockWeights<'_> {
    let mut cur = crate::weights::Cursor::new(w);
    // The stem: its conv, bias and LayerNorm.
    cur.layer(16 * 3, 16).unwrap();
    for _ in 0..3 {
        cur.vec(16).unwrap();
    }
    let mut block = None;
    for (k, e) in [(3, 4), (7, 2)].into_iter().take(i + 1) {
        block = Some(crate::block::BlockWeights::read(&mut cur, 16, k, e).unwrap());
    }
    block.unwrap()
}

/// The f32 model of `packed` with the stem, downsample and head matrices replaced by their
/// int8 values (`q`, the w8a8 stream) times their scales (`vecs`): a w8a8 model whose
/// blocks are all float.
fn fake_quantized(
    arch: &Arch<'_>,
    packed: &crate::tests::Packed,
    vecs: &[f32],
    q: &[i8],
) -> crate::tests::Packed {
    use crate::net::Packing;
    let mut mats = packed.mats.clone();
    crate::net::visit_tensors::<crate::Error>(arch, |slot| {
        let (mo, vo) = (slot.mat_offset, slot.vec_offset);
        match slot.packing {
            Packing::Linear | Packing::PatchConv => {
                let (n, k) = (slot.shape[0], slot.shape[1..].iter().product::<usize>());
                for kk in 0..k {
                    for j in 0..n {
                        let i = mo + (j / PANEL) * k * PANEL + kk * PANEL + j % PANEL;
                        mats[i] = q[i] as f32 * vecs[vo + j];
                    }
                }
            }
            _ => {}
        }
        Ok(())
    })
    .unwrap();
    crate::tests::Packed {
        vecs: packed.vecs.clone(),
        mats,
    }
}

/// The w8a8 weights of [`mixed_arch`] with the quadratic blocks `float` kept in f32:
/// `(vecs, int8 stream, bitmap, f32 stream)`.
fn mixed_of(
    arch: &Arch<'_>,
    packed: &crate::tests::Packed,
    float: &[usize],
) -> (Vec<f32>, Vec<i8>, Vec<u8>, Vec<f32>) {
    let mut vecs = packed.vecs.clone();
    let mut q = vec![0i8; packed.mats.len()];
    quantize_model(
        arch,
        &mut vecs,
        &packed.mats,
        MatDataMut::W8A8(&mut q),
        |n, e| assert!(e.rel_rms < 0.02, "{n}: {e:?}"),
    )
    .unwrap();
    let mut flags = vec![0u8; crate::FloatBlocks::flags_len(arch)];
    for &b in float {
        flags[(b + 1) / 8] |= 1 << ((b + 1) % 8);
    }
    let mut f = vec![0.0; crate::FloatBlocks::stream_len(arch, &flags)];
    crate::net::pack_float_blocks(arch, &packed.mats, &flags, &mut f).unwrap();
    (vecs, q, flags, f)
}

#[test]
fn float_blocks_compute_with_their_f32_weights() {
    use crate::FloatBlocks;
    let arch = mixed_arch();
    assert_eq!(arch.quadratic_blocks(), 6);
    let packed = StateDict::random(&arch, 91).pack(&arch);
    let (vecs, q, flags, f) = mixed_of(&arch, &packed, &[1, 4]);
    let mixed = Weights {
        vecs: &vecs,
        mats: w8a8_mats(&q, &flags, &f),
    };
    let model = Model::new(arch, mixed).unwrap();
    let f32_model = Model::new(arch, packed.weights()).unwrap();
    let int8 = Weights {
        vecs: &vecs,
        mats: MatData::W8A8(&q, FloatBlocks::NONE),
    };
    let int8_model = Model::new(arch, int8).unwrap();
    let (h, w) = (64, 64);
    let input = Rng::new(92).vec(h * w * 3, -1.0, 1.0);
    let run = |m: &Model<'_>, kern: Kernels, bands: usize| {
        let mut arena = vec![f32::NAN; m.arena_len(h, w, bands)];
        let mut l = vec![0.0; 20];
        m.forward_with(&SplitReverse(bands), kern, &input, h, w, &mut arena, &mut l)
            .unwrap();
        l
    };
    for kern in available() {
        let want = run(&f32_model, kern, 1);
        let got = run(&model, kern, 1);
        assert!(got.iter().all(|v| v.is_finite()));
        for bands in [2, 5] {
            assert_eq!(run(&model, kern, bands), got, "{} bands", kern.describe());
        }
        // Every block float: the model is the f32 model whose other matrices (stem,
        // downsample, head) are their int8 values times their scales.
        let every: Vec<usize> = (0..6).collect();
        let (v2, q2, fl2, f2) = mixed_of(&arch, &packed, &every);
        let all_float = Weights {
            vecs: &v2,
            mats: MatData::W8A8(
                &q2,
                FloatBlocks {
                    flags: &fl2,
                    mats: &f2,
                },
            ),
        };
        let fake = fake_quantized(&arch, &packed, &v2, &q2);
        let reference = Model::new(arch, fake.weights()).unwrap();
        let (got_all, want_all) = (
            run(&Model::new(arch, all_float).unwrap(), kern, 1),
            run(&reference, kern, 1),
        );
        let scale = 1.0 + want_all.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (a, b) in got_all.iter().zip(&want_all) {
            // int8 weight-only kernels multiply by the scale after the sum, the reference
            // before: f32 rounding apart.
            assert!(
                (a - b).abs() <= 1e-5 * scale,
                "{}: {a} vs {b}",
                kern.describe()
            );
        }
        assert!(
            run(&int8_model, kern, 1) != got_all,
            "float blocks changed nothing"
        );
        assert!(cosine(&got, &want) >= 0.999);
    }
    // A float block's pointwise weights are the f32 ones, element for element.
    let (b1, p1) = (stage0_block(mixed, 1), stage0_block(packed.weights(), 1));
    assert!(!b1.q8(), "a float block computes in f32");
    for kk in 0..16 {
        for j in 0..32 {
            assert_eq!(b1.pw1.get(kk, j), p1.pw1.get(kk, j));
            assert_eq!(b1.pw1.scales()[j], 1.0);
        }
    }
}

#[test]
fn mixed_w8a8_files_round_trip_and_damaged_float_sections_are_refused() {
    use crate::format::{write, FileLayout, QnetFile};
    let arch = mixed_arch();
    let packed = StateDict::random(&arch, 93).pack(&arch);
    let (vecs, q, flags, f) = mixed_of(&arch, &packed, &[0, 5]);
    let weights = Weights {
        vecs: &vecs,
        mats: w8a8_mats(&q, &flags, &f),
    };
    let lay = FileLayout::for_weights(&arch, &weights, 2);
    assert!(lay.float > 0 && lay.len > lay.float_mats);
    let mut out = vec![0u8; lay.len];
    write(&arch, weights, "{}", &mut out).unwrap();
    let buf = AlignedBuf::new(&out);
    let file = QnetFile::parse(buf.bytes()).unwrap();
    let MatData::W8A8(_, back) = file.weights.mats else {
        panic!("not w8a8")
    };
    assert_eq!(back.count(), 2);
    assert!(back.is_float(0) && back.is_float(5) && !back.is_float(1));
    assert!(back.mats == &f[..]);
    // The count disagrees with the bitmap.
    let mut b = out.clone();
    b[124] = 3;
    refuse(b, "count");
    // A bit for a block that does not exist (the layers and 6 blocks: bit 7 is past the
    // end).
    let mut b = out.clone();
    b[lay.float] |= 0x80;
    b[124] = 3;
    refuse(b, "does not exist");
    // An extra flagged block without its f32 weights.
    let mut b = out.clone();
    b[lay.float] |= 0x04;
    b[124] = 3;
    refuse(b, "weights");
    // The section pointing into the int8 stream.
    let mut b = out.clone();
    b[116..124].copy_from_slice(&(lay.mats as u64).to_le_bytes());
    refuse(b, "overlaps");
    // A NaN among the f32 weights.
    let mut b = out.clone();
    b[lay.float_mats..lay.float_mats + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    refuse(b, "NaN");
    // Float fields in a file of another dtype are not reserved-zero.
    let lay32 = FileLayout::of(&arch, Dtype::F32, 2);
    let mut o32 = vec![0u8; lay32.len];
    write(&arch, packed.weights(), "{}", &mut o32).unwrap();
    o32[124] = 1;
    refuse(o32, "reserved");
}

#[test]
fn moved_sections_and_non_finite_matrices_are_refused_even_with_a_valid_checksum() {
    use crate::format::{write, FileLayout, QnetFile};
    let arch = mixed_arch();
    let packed = StateDict::random(&arch, 95).pack(&arch);
    let lay = FileLayout::of(&arch, Dtype::F32, 2);
    let mut out = vec![0u8; lay.len];
    write(&arch, packed.weights(), "{}", &mut out).unwrap();
    // The vector stream moved over the header, and onto the matrix stream.
    for at in [0u64, lay.mats as u64] {
        let mut b = out.clone();
        b[64..72].copy_from_slice(&at.to_le_bytes());
        refuse(b, "where the layout puts them");
    }
    // A NaN and an infinity in the f32 matrix stream (the vector stream was checked before).
    for bad in [f32::NAN, f32::INFINITY] {
        let mut b = out.clone();
        let at = lay.mats + 4 * 100;
        b[at..at + 4].copy_from_slice(&bad.to_le_bytes());
        refuse(b, "matrix weights contain NaN or infinity");
    }
    // And in an f16 stream.
    let mut vecs = packed.vecs.clone();
    let mut h = vec![0u16; packed.mats.len()];
    quantize_model(
        &arch,
        &mut vecs,
        &packed.mats,
        MatDataMut::F16(&mut h),
        |_, _| {},
    )
    .unwrap();
    let w16 = Weights {
        vecs: &vecs,
        mats: MatData::F16(&h),
    };
    let lay16 = FileLayout::of(&arch, Dtype::F16, 2);
    let mut o16 = vec![0u8; lay16.len];
    write(&arch, w16, "{}", &mut o16).unwrap();
    assert!(QnetFile::parse(AlignedBuf::new(&o16).bytes()).is_ok());
    o16[lay16.mats + 6..lay16.mats + 8].copy_from_slice(&0x7C00u16.to_le_bytes());
    refuse(o16, "matrix weights contain NaN or infinity");
}

/// Every int8 kernel token with an fp16 token (NEON with FEAT_FP16), or none.
fn q8_fp16_kernels() -> Vec<Kernels> {
    q8_paths()
        .into_iter()
        .filter_map(|p| match p {
            Q8Path::Kern(k) if k.fp16() => Some(k),
            _ => None,
        })
        .collect()
}

/// PW1 of w8a8 with `Precision::Fp16` (`q8::gemm_q8_gelu_half`: GELU in half precision,
/// halves out) equals its definition (`gemm_q8_gelu_half_ref`) bit for bit on every
/// FEAT_FP16 int8 leaf: shapes around the row tiles, the 16-column panels, the 8-column
/// epilogue groups and the int8 k-groups; nothing written past the `m·n` halves. Without an
/// fp16 token, or with short buffers, an error.
#[test]
fn fp16_int8_gelu_half_rows_are_their_definition_bit_for_bit() {
    let mut rng = Rng::new(97);
    let (k, n) = (8usize, 16usize);
    let packed = dot_pack(&random_i8(&mut rng, k * n, -127, 127), k, n);
    let cs = rng.vec(n, 0.001, 0.02);
    let b = PackedB::new_dot(&packed, &cs, k, n).unwrap();
    let a = QBuf::random(&mut rng, 3, k, -127, 127);
    let bias = rng.vec(n, -1.0, 1.0);
    let mut out = vec![0.0f32; 24];
    for kern in available_q8() {
        let kern = kern.without_fp16();
        assert!(q8::gemm_q8_gelu_half(kern, a.view(), b, &bias, &mut out).is_err());
    }
    let kerns = q8_fp16_kernels();
    if kerns.is_empty() {
        std::eprintln!("no FEAT_FP16 here: the int8 GEMM's half-precision rows are not run");
        return;
    }
    for &kern in &kerns {
        let short = q8::gemm_q8_gelu_half(kern, a.view(), b, &bias, &mut out[..23]);
        assert!(short.is_err(), "3 x 16 halves need 24 floats");
        assert!(q8::gemm_q8_gelu_half(kern, a.view(), b, &bias[..15], &mut out).is_err());
    }
    let mut checked = 0usize;
    for &m in &[1usize, 2, 3, 4, 5, 6, 9, 11, 33] {
        for &k in &[4usize, 12, 16, 20, 64, 132] {
            for &n in &[1usize, 7, 8, 9, 16, 17, 40, 64, 65] {
                let packed = dot_pack(&random_i8(&mut rng, k * n, -127, 127), k, n);
                let cs = rng.vec(n, 0.001, 0.02);
                let b = PackedB::new_dot(&packed, &cs, k, n).unwrap();
                let a = QBuf::random(&mut rng, m, k, -127, 127);
                let bias = rng.vec(n, -2.0, 2.0);
                let len = (m * n).div_ceil(2) + 2;
                let mut want = vec![7.0f32; len];
                q8::gemm_q8_gelu_half_ref(a.view(), b, &bias, &mut want);
                for &kern in &kerns {
                    let mut got = vec![7.0f32; len];
                    q8::gemm_q8_gelu_half(kern, a.view(), b, &bias, &mut got).unwrap();
                    for i in 0..2 * len {
                        let (g, w) = (scalar::half(&got, i), scalar::half(&want, i));
                        assert!(
                            g == w && (i >= m * n || g & 0x7c00 != 0x7c00),
                            "{} m={m} k={k} n={n}: half {i}: got {g:#06x}, want {w:#06x}",
                            kern.describe()
                        );
                    }
                    checked += m * n;
                }
            }
        }
    }
    std::eprintln!("int8 GELU to half rows: {checked} outputs equal to the definition bit for bit");
}

/// `q8::quantize_rows_half` equals `quantize_row_half_ref` bit for bit (int8 values, scales,
/// sums): random rows of every length around the 16-value iteration, rows whose
/// `127 / max|x|` is past f16's range (quantised in f32: tiny values and subnormals), zeros,
/// values on the rounding ties, and rows with a NaN or an infinity (scale NaN, values
/// unspecified) in the main loop and in the tail. Without an fp16 token, or with short
/// buffers, an error.
#[test]
fn fp16_quantize_half_rows_is_its_definition_bit_for_bit() {
    use crate::math::f16;
    let mut rng = Rng::new(101);
    let kerns = q8_fp16_kernels();
    let mut q = QBuf::new(2, 8);
    for kern in available_q8() {
        let kern = kern.without_fp16();
        assert!(q8::quantize_rows_half(kern, &[0.0; 8], &mut q.view_mut()).is_err());
    }
    if kerns.is_empty() {
        std::eprintln!("no FEAT_FP16 here: the half-precision quantiser is not run");
        return;
    }
    for &kern in &kerns {
        let r = q8::quantize_rows_half(kern, &[0.0; 7], &mut q.view_mut());
        assert!(r.is_err(), "2 x 8 halves need 8 floats");
    }
    let mut rows = 0usize;
    for &k in &[1usize, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100, 128, 129] {
        // Row kinds: 0 random, 1 tiny (f32 path), 2 subnormal halves, 3 zeros, 4 ties,
        // 5 a NaN, 6 an infinity, 7 one large value among small ones.
        let kinds = 8;
        let mut h = vec![0u16; kinds * k];
        for kind in 0..kinds {
            let row = &mut h[kind * k..(kind + 1) * k];
            for (j, v) in row.iter_mut().enumerate() {
                let x = match kind {
                    0 => rng.f32(-8.0, 8.0),
                    1 => rng.f32(-1e-3, 1e-3),
                    2 => rng.f32(-5e-5, 5e-5),
                    3 => 0.0,
                    // max|x| 127, so the inverse scale is 1 and every other value a tie.
                    4 if j == 0 => 127.0,
                    4 => (j % 17) as f32 - 8.5,
                    7 if j == k / 2 => 300.0,
                    _ => rng.f32(-1.0, 1.0),
                };
                *v = f16::from_f64(f64::from(x));
            }
            let at = (k - 1) / 2 + (kind % 2) * (k / 2);
            match kind {
                5 => row[at.min(k - 1)] = 0x7e00,
                6 => row[k - 1] = 0xfc00,
                _ => {}
            }
        }
        let mut packed = vec![0.0f32; (kinds * k).div_ceil(2)];
        for (i, &v) in h.iter().enumerate() {
            scalar::set_half(&mut packed, i, v);
        }
        let mut want = QBuf::new(kinds, k);
        for r in 0..kinds {
            let (s, sum) =
                q8::quantize_row_half_ref(&h[r * k..(r + 1) * k], &mut want.q[r * k..(r + 1) * k]);
            want.scales[r] = s;
            want.sums[r] = sum;
        }
        for &kern in &kerns {
            let mut got = QBuf::new(kinds, k);
            q8::quantize_rows_half(kern, &packed, &mut got.view_mut()).unwrap();
            for r in 0..kinds {
                let what = std::format!("{} k={k} row kind {r}", kern.describe());
                if r == 5 || r == 6 {
                    assert!(got.scales[r].is_nan(), "{what}: scale {}", got.scales[r]);
                    continue;
                }
                assert_eq!(
                    got.scales[r].to_bits(),
                    want.scales[r].to_bits(),
                    "{what}: scale"
                );
                assert_eq!(
                    got.q[r * k..(r + 1) * k],
                    want.q[r * k..(r + 1) * k],
                    "{what}: values"
                );
                assert_eq!(got.sums[r], want.sums[r], "{what}: sum");
                rows += 1;
            }
        }
    }
    std::eprintln!("half-precision quantiser: {rows} rows equal to the definition bit for bit");
}
