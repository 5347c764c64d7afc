//! Unit tests of the core: every SIMD path against the scalar reference, the GEMM against
//! matrixmultiply, the scheduler against an unfused full-tensor reference, and strip
//! heights against each other.

use std::vec;
use std::vec::Vec;

use crate::arch::{block_scratch_len, Arch, BlockSpec, Stage};
use crate::block::{block_forward, qdw_forward, qdw_scratch_len, BlockDims, BlockWeights};
use crate::isa::{Isa, Kernels};
use crate::kernels::{self, Dtype, Epilogue, MatData, MatMut, MatRef, PackedB, QdwWeights};
use crate::math::{erf_rational, gelu_exact, layer_norm};
use crate::net::{pack_model, quantize_model, visit_tensors, MatDataMut, Model};
use crate::weights::Weights;

/// Small deterministic PRNG (xorshift64*), uniform in [lo, hi).
pub(crate) struct Rng(u64);
impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(crate) fn f32(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
    pub(crate) fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32(lo, hi)).collect()
    }
    pub(crate) fn usize(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo) as u64) as usize
    }
}

/// Kernel paths this machine can run. With `QUADRA_REQUIRE_ISA=avx2,avx512` (or `neon`)
/// the run fails if a named path is not available, so a skipped path cannot hide.
/// The AVX-512 and NEON tokens carry their int8 dot-product extension where the CPU has
/// it; [`available_q8`] adds them without it too. `QUADRA_REQUIRE_ISA` also takes
/// `avx512+vnni` and `neon+dotprod`.
pub(crate) fn available() -> Vec<Kernels> {
    let mut v = vec![Kernels::scalar()];
    #[cfg(target_arch = "x86_64")]
    {
        // Every feature the AVX2 leaves are compiled with (F16C widens f16 weights); the
        // AVX-512 int8 GEMM without VNNI runs the AVX2 leaf.
        let avx2 = std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c");
        if avx2 {
            // SAFETY: detected just above.
            v.push(unsafe { Kernels::new_unchecked(Isa::Avx2) });
        }
        if avx2 && std::is_x86_feature_detected!("avx512f") {
            // SAFETY: detected just above.
            let k = unsafe { Kernels::new_unchecked(Isa::Avx512) };
            let vnni = std::is_x86_feature_detected!("avx512vnni")
                && std::is_x86_feature_detected!("avx512bw");
            if vnni {
                // SAFETY: VNNI and BW detected just above.
                v.push(unsafe { k.with_int8_dot_unchecked() });
            } else {
                v.push(k);
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            // SAFETY: detected just above.
            let k = unsafe { Kernels::new_unchecked(Isa::Neon) };
            if std::arch::is_aarch64_feature_detected!("dotprod") {
                // SAFETY: DotProd detected just above.
                v.push(unsafe { k.with_int8_dot_unchecked() });
            } else {
                v.push(k);
            }
        }
    }
    if let Ok(req) = std::env::var("QUADRA_REQUIRE_ISA") {
        for name in req.split(',').filter(|s| !s.is_empty()) {
            let (isa, dot) = name.split_once('+').unwrap_or((name, ""));
            let isa = Isa::from_name(isa).expect("QUADRA_REQUIRE_ISA names an unknown ISA");
            assert!(
                v.iter()
                    .any(|k| k.isa() == isa && (dot.is_empty() || k.int8_dot())),
                "QUADRA_REQUIRE_ISA demands {name}, which this CPU cannot run"
            );
        }
    }
    v
}

/// [`available`], plus each token that has an int8 dot-product extension without it: every
/// int8 GEMM path this CPU can run.
pub(crate) fn available_q8() -> Vec<Kernels> {
    let mut v = available();
    let extra: Vec<Kernels> = v
        .iter()
        .filter(|k| k.int8_dot())
        .map(|k| k.without_int8_dot())
        .collect();
    v.extend(extra);
    v
}

fn assert_close(got: &[f32], want: &[f32], rel: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = 1.0 + want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= rel * scale,
            "{what}: element {i}: got {g}, want {w} (tolerance {})",
            rel * scale
        );
    }
}

#[test]
fn rational_erf_matches_libm_everywhere() {
    let mut worst = 0.0f32;
    let mut x = -10.0f32;
    while x <= 10.0 {
        worst = worst.max((erf_rational(x) - libm::erff(x)).abs());
        x += 1.0 / 4096.0;
    }
    // 1e-7 in exact arithmetic; f32 evaluation near |x| = 3.9 (erf within 4e-8 of 1)
    // rounds to at most ~7 ulp of 1.0.
    assert!(worst < 5e-7, "max |erf_rational - erff| = {worst}");
}

#[test]
fn simd_gelu_matches_exact_gelu() {
    let xs: Vec<f32> = (-40_000..=40_000).map(|i| i as f32 / 4000.0).collect();
    let want: Vec<f32> = xs.iter().map(|&x| gelu_exact(x)).collect();
    for kern in available() {
        for len in [1usize, 3, 7, 8, 15, 16, 17, xs.len()] {
            let mut got = xs[..len].to_vec();
            kernels::gelu_slice(kern, &mut got);
            for (i, (g, w)) in got.iter().zip(&want[..len]).enumerate() {
                let tol = 4e-7 * (1.0 + xs[i].abs());
                assert!(
                    (g - w).abs() <= tol,
                    "{:?} gelu({}) = {g}, want {w}",
                    kern.isa(),
                    xs[i]
                );
            }
        }
    }
}

/// A matrix in all three storage types, each with its per-column scales, plus the values
/// the stored data stands for (`stored · scale`).
struct Stored {
    f32: Vec<f32>,
    f16: Vec<u16>,
    i8: Vec<i8>,
    ones: Vec<f32>,
    i8_scales: Vec<f32>,
}

impl Stored {
    /// Quantises `packed` with `channel(i)` giving the scale index of element `i`
    /// (`None` for padding) among `chans` channels.
    fn new(packed: &[f32], chans: usize, channel: impl Fn(usize) -> Option<usize>) -> Self {
        let mut amax = vec![0.0f32; chans];
        for (i, v) in packed.iter().enumerate() {
            if let Some(c) = channel(i) {
                amax[c] = amax[c].max(v.abs());
            }
        }
        let i8_scales: Vec<f32> = amax.iter().map(|a| a / 127.0).collect();
        let i8 = packed
            .iter()
            .enumerate()
            .map(|(i, v)| match channel(i) {
                Some(c) if i8_scales[c] > 0.0 => (v / i8_scales[c]).round() as i8,
                _ => 0,
            })
            .collect();
        Stored {
            f32: packed.to_vec(),
            f16: packed
                .iter()
                .map(|v| half::f16::from_f32(*v).to_bits())
                .collect(),
            i8,
            ones: vec![1.0; chans],
            i8_scales,
        }
    }

    fn data(&self, dtype: Dtype) -> (MatData<'_>, &[f32]) {
        match dtype {
            Dtype::F32 => (MatData::F32(&self.f32), &self.ones),
            Dtype::F16 => (MatData::F16(&self.f16), &self.ones),
            Dtype::I8 | Dtype::W8A8 => (MatData::I8(&self.i8), &self.i8_scales),
        }
    }
}

const DTYPES: [Dtype; 3] = [Dtype::F32, Dtype::F16, Dtype::I8];

fn random_b(rng: &mut Rng, k: usize, n: usize) -> Stored {
    let dense = rng.vec(k * n, -1.0, 1.0);
    let mut packed = vec![0.0; PackedB::packed_len(k, n)];
    PackedB::pack(k, n, &mut packed, |kk, j| dense[kk * n + j]).unwrap();
    Stored::new(&packed, n, |i| {
        Some(PackedB::column_of(k, i)).filter(|&j| j < n)
    })
}

fn matrixmultiply_ref(a: &[f32], m: usize, lda: usize, k: usize, b: &[f32], n: usize) -> Vec<f32> {
    let mut c = vec![0.0f32; m * n];
    // SAFETY: all pointers cover the strided extents given.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            lda as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
    c
}

#[test]
fn gemm_matches_matrixmultiply_on_awkward_shapes() {
    let mut rng = Rng::new(1);
    let ms = [1usize, 2, 3, 5, 6, 7, 11, 12, 13, 25, 37];
    let ks = [1usize, 2, 3, 7, 16, 17, 48, 67];
    let ns = [1usize, 3, 8, 15, 16, 17, 31, 32, 33, 48, 64, 97];
    let kerns = available();
    for &m in &ms {
        for &k in &ks {
            for &n in &ns {
                let lda = k + rng.usize(0, 3);
                let a = rng.vec(m * lda, -1.0, 1.0);
                let stored = random_b(&mut rng, k, n);
                let bias = rng.vec(n, -0.5, 0.5);
                let gamma = rng.vec(n, 0.5, 1.5);
                let ldo = n + 1;
                let init = rng.vec(m * ldo, -1.0, 1.0);
                for dtype in DTYPES {
                    let (data, scales) = stored.data(dtype);
                    let b = PackedB::new(data, scales, k, n).unwrap();
                    // What the stored weights stand for, as a dense matrix.
                    let dense: Vec<f32> = (0..k * n)
                        .map(|i| b.get(i / n, i % n) * scales[i % n])
                        .collect();
                    let base = matrixmultiply_ref(&a, m, lda, k, &dense, n);
                    for epi in 0..3 {
                        let e = match epi {
                            0 => Epilogue::Bias(&bias),
                            1 => Epilogue::BiasGelu(&bias),
                            _ => Epilogue::BiasScaleAdd {
                                bias: &bias,
                                gamma: &gamma,
                            },
                        };
                        let mut want = init.clone();
                        for i in 0..m {
                            for j in 0..n {
                                let v = base[i * n + j] + bias[j];
                                let o = &mut want[i * ldo + j];
                                match epi {
                                    0 => *o = v,
                                    1 => *o = gelu_exact(v),
                                    _ => *o += gamma[j] * v,
                                }
                            }
                        }
                        for &kern in &kerns {
                            let mut out = init.clone();
                            let am = MatRef {
                                data: &a,
                                rows: m,
                                cols: k,
                                stride: lda,
                            };
                            let om = MatMut {
                                data: &mut out,
                                rows: m,
                                cols: n,
                                stride: ldo,
                            };
                            kernels::gemm(kern, am, b, e, om).unwrap();
                            // Padding between output rows must stay untouched too.
                            let what = std::format!(
                                "{:?} {dtype:?} m={m} k={k} n={n} epi={epi}",
                                kern.isa()
                            );
                            assert_close(&out, &want, 2e-6 * (k as f32).sqrt().max(1.0), &what);
                        }
                    }
                }
            }
        }
    }
}

fn random_qdw(rng: &mut Rng, k: usize, c: usize) -> (Stored, Vec<f32>) {
    let taps = rng.vec(QdwWeights::taps_len(k, c), -0.3, 0.3);
    // Element i of the channel-blocked taps: lane i % CBLOCK, filter (i / CBLOCK) % 3,
    // block i / (3·K²·CBLOCK); lanes past `c` are padding.
    let bl = crate::kernels::CBLOCK;
    let channel = move |i: usize| {
        let (lane, rest) = (i % bl, i / bl);
        let ch = rest / (3 * k * k) * bl + lane;
        (ch < c).then_some((rest % 3) * c + ch)
    };
    (
        Stored::new(&taps, 3 * c, channel),
        rng.vec(3 * c, -0.5, 0.5),
    )
}

#[test]
fn block_row_simd_writes_the_scalar_bits() {
    let mut rng = Rng::new(9);
    for k in [3usize, 5, 7] {
        for c in [1usize, 3, 4, 7, 8, 9, 15, 16, 17, 31, 33, 64] {
            for w in [1usize, 2, 5, 7, 14, 19] {
                let src = rng.vec(w * c, -1.0, 1.0);
                let len = kernels::qdw_row_len(w, c, k);
                let mut want = std::vec![0.0f32; len];
                kernels::block_row(Kernels::scalar(), &src, w, c, k, &mut want).unwrap();
                for kern in available() {
                    // Padding must be left alone: start from a marker.
                    let mut got = std::vec![7.0f32; len];
                    kernels::block_row(kern, &src, w, c, k, &mut got).unwrap();
                    for (i, (g, wv)) in got.iter().zip(&want).enumerate() {
                        let pad = *wv == 0.0 && *g == 7.0;
                        assert!(
                            g.to_bits() == wv.to_bits() || pad,
                            "{:?} k{k} c{c} w{w} at {i}",
                            kern.isa()
                        );
                    }
                }
            }
        }
    }
    let short = kernels::block_row(Kernels::scalar(), &[0.0; 3], 2, 2, 3, &mut [0.0; 64]);
    assert!(short.is_err());
}

#[test]
fn layer_norm_blocked_is_layer_norm_then_block_row() {
    let mut rng = Rng::new(10);
    for k in [3usize, 5, 7] {
        for c in [1usize, 3, 8, 15, 16, 17, 33, 64] {
            let (lw, lb) = (rng.vec(c, 0.5, 1.5), rng.vec(c, -0.5, 0.5));
            for w in [1usize, 2, 7, 14] {
                let src = rng.vec(w * c, -2.0, 2.0);
                let len = kernels::qdw_row_len(w, c, k);
                for kern in available() {
                    let mut normed = std::vec![0.0f32; w * c];
                    kernels::layer_norm_rows(kern, &src, c, &lw, &lb, &mut normed).unwrap();
                    let mut want = std::vec![0.0f32; len];
                    kernels::block_row(kern, &normed, w, c, k, &mut want).unwrap();
                    let mut got = std::vec![0.0f32; len];
                    kernels::layer_norm_blocked_row(kern, &src, w, c, &lw, &lb, k, &mut got)
                        .unwrap();
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(g, v)| g.to_bits() == v.to_bits());
                    assert!(same, "{:?} k{k} c{c} w{w}", kern.isa());
                }
            }
        }
    }
}

#[test]
fn qdw_row_simd_matches_scalar() {
    let mut rng = Rng::new(2);
    let kerns = available();
    for k in [3usize, 5, 7] {
        for c in [1usize, 3, 4, 5, 8, 9, 15, 16, 17, 24, 31, 33, 64] {
            let (stored, bias) = random_qdw(&mut rng, k, c);
            let gamma = rng.vec(c, 0.5, 1.5);
            for w in 1..=40 {
                let rows: Vec<Vec<f32>> = (0..k)
                    .map(|_| rng.vec(kernels::qdw_row_len(w, c, k), -1.0, 1.0))
                    .collect();
                let refs: Vec<&[f32]> = rows.iter().map(|r| r.as_slice()).collect();
                let init = rng.vec(w * c, -1.0, 1.0);
                for dtype in DTYPES {
                    let (taps, scales) = stored.data(dtype);
                    let wts = QdwWeights::new(k, c, taps, scales, &bias).unwrap();
                    for g in [None, Some(gamma.as_slice())] {
                        let mut want = init.clone();
                        kernels::qdw_row(Kernels::scalar(), &wts, &refs, w, g, &mut want).unwrap();
                        for &kern in &kerns[1..] {
                            let mut got = init.clone();
                            kernels::qdw_row(kern, &wts, &refs, w, g, &mut got).unwrap();
                            let what = std::format!("{:?} {dtype:?} k={k} c={c} w={w}", kern.isa());
                            assert_close(&got, &want, 1e-5, &what);
                            if g.is_none() {
                                check_qdw_row_and_block(kern, &wts, &refs, w, &init, &got, &what);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `qdw_row_and_block` gives `qdw_row`'s bits (`plain`) and writes `block_row`'s bits,
/// leaving the padding alone; a next row of the wrong length is an error.
fn check_qdw_row_and_block(
    kern: Kernels,
    wts: &QdwWeights<'_>,
    rows: &[&[f32]],
    w: usize,
    init: &[f32],
    plain: &[f32],
    what: &str,
) {
    let (k, c) = (wts.k(), wts.c());
    let src: Vec<f32> = (0..w * c).map(|i| i as f32 * 0.5 - 3.0).collect();
    let len = kernels::qdw_row_len(w, c, k);
    let mut want = std::vec![7.0f32; len];
    kernels::block_row(Kernels::scalar(), &src, w, c, k, &mut want).unwrap();
    let mut got = init.to_vec();
    let mut dst = std::vec![7.0f32; len];
    kernels::qdw_row_and_block(kern, wts, rows, w, &mut got, &src, &mut dst).unwrap();
    let bits = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
    assert!(bits(&got, plain), "{what}: output differs from qdw_row");
    assert!(bits(&dst, &want), "{what}: next row differs from block_row");
    let short = kernels::qdw_row_and_block(kern, wts, rows, w, &mut got, &src[1..], &mut dst);
    assert!(short.is_err(), "{what}: short next row accepted");
}

// ---- An unfused, full-tensor reference of the model (channels-last), for the tests. ----

fn ln_all(x: &[f32], c: usize, w: &[f32], b: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for (xi, oi) in x.chunks_exact(c).zip(out.chunks_exact_mut(c)) {
        layer_norm(xi, w, b, oi);
    }
    out
}

/// Depthwise KxK conv, zero padding, from PyTorch-layout weights `[C,1,K,K]`.
fn dwconv(x: &[f32], h: usize, w: usize, c: usize, k: usize, wt: &[f32], b: &[f32]) -> Vec<f32> {
    let p = (k / 2) as isize;
    let mut out = vec![0.0; x.len()];
    for y in 0..h {
        for xx in 0..w {
            for ch in 0..c {
                let mut acc = b[ch];
                for ky in 0..k {
                    for kx in 0..k {
                        let (iy, ix) =
                            (y as isize + ky as isize - p, xx as isize + kx as isize - p);
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                            acc += wt[ch * k * k + ky * k + kx]
                                * x[(iy as usize * w + ix as usize) * c + ch];
                        }
                    }
                }
                out[(y * w + xx) * c + ch] = acc;
            }
        }
    }
    out
}

/// Linear from PyTorch layout `[n, k]`.
fn linear(x: &[f32], k: usize, wt: &[f32], b: &[f32], n: usize) -> Vec<f32> {
    let m = x.len() / k;
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = b[j];
            for kk in 0..k {
                acc += x[i * k + kk] * wt[j * k + kk];
            }
            out[i * n + j] = acc;
        }
    }
    out
}

/// PyTorch-layout tensors of a model, by name.
pub(crate) struct StateDict(Vec<(std::string::String, Vec<usize>, Vec<f32>)>);

impl StateDict {
    pub(crate) fn random(arch: &Arch<'_>, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut v = Vec::new();
        crate::net::visit_tensors::<crate::Error>(arch, |slot| {
            let n: usize = slot.shape.iter().product();
            let is_scale = ["gamma", "norm", ".0.1.weight"]
                .iter()
                .any(|p| slot.name.contains(p))
                && slot.name.ends_with("weight")
                || slot.name.contains("gamma");
            let is_ds_norm = slot.name.starts_with("downsample_layers.")
                && slot.name.contains(".0.weight")
                && slot.shape.len() == 1;
            let data = if is_scale || is_ds_norm {
                rng.vec(n, 0.7, 1.3)
            } else {
                let fan_in: usize = slot.shape[1..].iter().product::<usize>().max(1);
                let s = 1.0 / (fan_in as f32).sqrt();
                rng.vec(n, -s, s)
            };
            v.push((slot.name.into(), slot.shape.to_vec(), data));
            Ok(())
        })
        .unwrap();
        StateDict(v)
    }
    fn get(&self, name: &str) -> &[f32] {
        &self
            .0
            .iter()
            .find(|t| t.0 == name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
            .2
    }
    pub(crate) fn pack(&self, arch: &Arch<'_>) -> Packed {
        let len = arch.weights_len();
        let (mut vecs, mut mats) = (vec![0.0; len.vecs], vec![0.0; len.mats]);
        pack_model::<crate::Error>(arch, &mut vecs, &mut mats, |name, shape| {
            let t = self.0.iter().find(|t| t.0 == name).unwrap();
            assert_eq!(t.1, shape);
            Ok(&t.2)
        })
        .unwrap();
        Packed { vecs, mats }
    }
}

/// A packed f32 model.
pub(crate) struct Packed {
    pub(crate) vecs: Vec<f32>,
    pub(crate) mats: Vec<f32>,
}

impl Packed {
    pub(crate) fn weights(&self) -> Weights<'_> {
        Weights {
            vecs: &self.vecs,
            mats: MatData::F32(&self.mats),
        }
    }
}

fn ref_block(sd: &StateDict, pre: &str, x: &mut [f32], d: BlockDims) {
    let BlockDims { h, w, c, k, e } = d;
    let g = |n: &str| sd.get(&std::format!("{pre}.{n}"));
    let n1 = ln_all(x, c, g("norm1.weight"), g("norm1.bias"));
    let a = dwconv(
        &n1,
        h,
        w,
        c,
        k,
        g("QuadraConv.conv1.weight"),
        g("QuadraConv.conv1.bias"),
    );
    let b = dwconv(
        &n1,
        h,
        w,
        c,
        k,
        g("QuadraConv.conv2.weight"),
        g("QuadraConv.conv2.bias"),
    );
    let cc = dwconv(
        &n1,
        h,
        w,
        c,
        k,
        g("QuadraConv.conv3.weight"),
        g("QuadraConv.conv3.bias"),
    );
    let g1 = g("gamma1");
    for i in 0..x.len() {
        x[i] += g1[i % c] * (a[i] * b[i] + cc[i]);
    }
    let n2 = ln_all(x, c, g("norm2.weight"), g("norm2.bias"));
    let mut hid = linear(&n2, c, g("pwconv1.weight"), g("pwconv1.bias"), e * c);
    hid.iter_mut().for_each(|v| *v = gelu_exact(*v));
    let o = linear(&hid, e * c, g("pwconv2.weight"), g("pwconv2.bias"), c);
    let g2 = g("gamma2");
    for i in 0..x.len() {
        x[i] += g2[i % c] * o[i];
    }
}

/// Patch conv (kernel = stride = `p`) of an `(h, w, c)` channels-last map.
fn ref_patch_conv(
    x: &[f32],
    (h, w, c): (usize, usize, usize),
    p: usize,
    wt: &[f32],
    b: &[f32],
    n: usize,
) -> (Vec<f32>, usize, usize) {
    let (ho, wo) = (h / p, w / p);
    let mut out = vec![0.0; ho * wo * n];
    for y in 0..ho {
        for xx in 0..wo {
            for j in 0..n {
                let mut acc = b[j];
                for ci in 0..c {
                    for ky in 0..p {
                        for kx in 0..p {
                            acc += wt[((j * c + ci) * p + ky) * p + kx]
                                * x[((y * p + ky) * w + xx * p + kx) * c + ci];
                        }
                    }
                }
                out[(y * wo + xx) * n + j] = acc;
            }
        }
    }
    (out, ho, wo)
}

fn ref_model(arch: &Arch<'_>, sd: &StateDict, input: &[f32], h: usize, w: usize) -> Vec<f32> {
    let c0 = arch.dim(0);
    let (x, mut hh, mut ww) = ref_patch_conv(
        input,
        (h, w, arch.in_chans),
        4,
        sd.get("downsample_layers.0.0.weight"),
        sd.get("downsample_layers.0.0.bias"),
        c0,
    );
    let mut x = ln_all(
        &x,
        c0,
        sd.get("downsample_layers.0.1.weight"),
        sd.get("downsample_layers.0.1.bias"),
    );
    for s in 0..4 {
        let d = arch.dim(s);
        if s > 0 {
            let dp = arch.dim(s - 1);
            let n = ln_all(
                &x,
                dp,
                sd.get(&std::format!("downsample_layers.{s}.0.weight")),
                sd.get(&std::format!("downsample_layers.{s}.0.bias")),
            );
            let r = ref_patch_conv(
                &n,
                (hh, ww, dp),
                2,
                sd.get(&std::format!("downsample_layers.{s}.1.weight")),
                sd.get(&std::format!("downsample_layers.{s}.1.bias")),
                d,
            );
            (x, hh, ww) = r;
        }
        for (b, spec) in arch.stages[s].blocks.iter().enumerate() {
            if !spec.is_identity() {
                ref_block(
                    sd,
                    &std::format!("stages.{s}.{b}"),
                    &mut x,
                    BlockDims {
                        h: hh,
                        w: ww,
                        c: d,
                        k: spec.kernel as usize,
                        e: spec.expansion as usize,
                    },
                );
            }
        }
    }
    let d3 = arch.dim(3);
    let mut pooled = vec![0.0f32; d3];
    for px in x.chunks_exact(d3) {
        for (p, v) in pooled.iter_mut().zip(px) {
            *p += v;
        }
    }
    pooled.iter_mut().for_each(|p| *p /= (hh * ww) as f32);
    let n = ln_all(&pooled, d3, sd.get("norm.weight"), sd.get("norm.bias"));
    linear(
        &n,
        d3,
        sd.get("head.weight"),
        sd.get("head.bias"),
        arch.num_classes,
    )
}

fn one_block_arch(c: usize, spec: &[BlockSpec]) -> Arch<'_> {
    Arch {
        in_chans: 3,
        num_classes: 5,
        stages: [
            Stage {
                dim: c,
                blocks: spec,
            },
            Stage {
                dim: c,
                blocks: &[],
            },
            Stage {
                dim: c,
                blocks: &[],
            },
            Stage {
                dim: c,
                blocks: &[],
            },
        ],
    }
}

#[test]
fn block_matches_unfused_reference_for_every_strip_height() {
    let mut rng = Rng::new(3);
    for (c, k, e, h, w) in [
        (8, 3, 4, 5, 7),
        (12, 5, 2, 9, 6),
        (17, 7, 4, 11, 9),
        (16, 7, 2, 3, 13),
    ] {
        let spec = [BlockSpec::quadra(k as u8, e as u8)];
        let arch = one_block_arch(c, &spec);
        let sd = StateDict::random(&arch, 10 + c as u64);
        let packed = sd.pack(&arch);
        let mut start = None;
        visit_tensors::<crate::Error>(&arch, |slot| {
            if slot.name.starts_with("stages.0.0.") && start.is_none() {
                start = Some((slot.vec_offset, slot.mat_offset));
            }
            Ok(())
        })
        .unwrap();
        let (vo, mo) = start.unwrap();
        let len = spec[0].weights_len(c);
        let block_w = Weights {
            vecs: &packed.vecs[vo..vo + len.vecs],
            mats: MatData::F32(&packed.mats[mo..mo + len.mats]),
        };
        let bw = BlockWeights::from_weights(c, k, e, block_w).unwrap();
        let x0 = rng.vec(h * w * c, -2.0, 2.0);
        let mut want = x0.clone();
        ref_block(&sd, "stages.0.0", &mut want, BlockDims { h, w, c, k, e });
        for kern in available() {
            let mut first: Option<Vec<f32>> = None;
            for strip in 1..=h + 1 {
                let mut x = x0.clone();
                let mut scratch = vec![f32::NAN; block_scratch_len(w, c, k, e, strip)];
                let d = BlockDims { h, w, c, k, e };
                block_forward(kern, d, strip, &bw, &mut x, &mut scratch).unwrap();
                let what = std::format!("{:?} c={c} k={k} e={e} strip={strip}", kern.isa());
                assert_close(&x, &want, 2e-5, &what);
                match &first {
                    None => first = Some(x),
                    Some(f) => assert!(f == &x, "{what}: strip height changed the result"),
                }
            }
        }
    }
}

#[test]
fn lone_qdw_matches_reference() {
    let mut rng = Rng::new(4);
    for (k, c, h, w) in [
        (3, 5, 4, 9),
        (5, 16, 7, 7),
        (7, 33, 9, 11),
        (7, 8, 1, 1),
        (7, 64, 12, 13),
        (5, 17, 10, 6),
        (3, 24, 2, 5),
    ] {
        let wts: Vec<Vec<f32>> = (0..3).map(|_| rng.vec(c * k * k, -0.3, 0.3)).collect();
        let bias = rng.vec(3 * c, -0.5, 0.5);
        let mut taps = vec![0.0; QdwWeights::taps_len(k, c)];
        for (f, wt) in wts.iter().enumerate() {
            for t in 0..k * k {
                for ch in 0..c {
                    taps[QdwWeights::tap_index(k, t, f, ch)] = wt[ch * k * k + t];
                }
            }
        }
        let ones = vec![1.0; 3 * c];
        let q = QdwWeights::new(k, c, MatData::F32(&taps), &ones, &bias).unwrap();
        let x0 = rng.vec(h * w * c, -1.0, 1.0);
        let a = dwconv(&x0, h, w, c, k, &wts[0], &bias[..c]);
        let b = dwconv(&x0, h, w, c, k, &wts[1], &bias[c..2 * c]);
        let cc = dwconv(&x0, h, w, c, k, &wts[2], &bias[2 * c..]);
        let want: Vec<f32> = (0..x0.len()).map(|i| a[i] * b[i] + cc[i]).collect();
        for kern in available() {
            let mut x = x0.clone();
            let mut scratch = vec![f32::NAN; qdw_scratch_len(w, c, k)];
            qdw_forward(kern, h, w, &q, &mut x, &mut scratch).unwrap();
            assert_close(
                &x,
                &want,
                1e-5,
                &std::format!("{:?} k={k} c={c}", kern.isa()),
            );
        }
    }
}

fn check_model(arch: &Arch<'_>, h: usize, w: usize, seed: u64) {
    let sd = StateDict::random(arch, seed);
    let packed = sd.pack(arch);
    let model = Model::new(*arch, packed.weights()).unwrap();
    let mut rng = Rng::new(seed + 1);
    let input = rng.vec(h * w * arch.in_chans, -1.0, 1.0);
    let want = ref_model(arch, &sd, &input, h, w);
    for kern in available() {
        let mut arena = vec![f32::NAN; arch.arena_len(h, w)];
        let mut logits = vec![0.0; arch.num_classes];
        model
            .forward(kern, &input, h, w, &mut arena, &mut logits)
            .unwrap();
        assert_close(
            &logits,
            &want,
            1e-4,
            &std::format!("{:?} {h}x{w}", kern.isa()),
        );
    }
}

#[test]
fn small_model_matches_unfused_reference() {
    const B: [BlockSpec; 2] = [BlockSpec::quadra(3, 4), BlockSpec::quadra(7, 2)];
    const M: [BlockSpec; 3] = [
        BlockSpec::quadra(5, 4),
        BlockSpec::IDENTITY,
        BlockSpec::quadra(3, 2),
    ];
    let arch = Arch {
        in_chans: 3,
        num_classes: 10,
        stages: [
            Stage { dim: 8, blocks: &B },
            Stage {
                dim: 16,
                blocks: &M,
            },
            Stage {
                dim: 32,
                blocks: &B[..1],
            },
            Stage {
                dim: 64,
                blocks: &B[1..],
            },
        ],
    };
    check_model(&arch, 32, 32, 5);
    check_model(&arch, 70, 45, 6);
}

#[test]
fn downsample_that_widens_a_lot_still_runs_in_one_region() {
    // dims that more than double force the planner to start the input behind the output.
    const B: [BlockSpec; 1] = [BlockSpec::quadra(3, 2)];
    let arch = Arch {
        in_chans: 2,
        num_classes: 3,
        stages: [
            Stage { dim: 4, blocks: &B },
            Stage {
                dim: 20,
                blocks: &B,
            },
            Stage {
                dim: 12,
                blocks: &[],
            },
            Stage {
                dim: 40,
                blocks: &B,
            },
        ],
    };
    assert!(arch.plan(64, 64).offsets[0] > 0);
    check_model(&arch, 64, 64, 7);
}

#[test]
fn arena_is_close_to_largest_activation() {
    let arch = crate::arch::presets::quadranet36(64);
    let plan = arch.plan(224, 224);
    assert_eq!(plan.act_len, arch.largest_activation(224, 224));
    assert!(
        plan.scratch_len * 4 < 512 * 1024,
        "scratch {} floats",
        plan.scratch_len
    );
}

#[test]
fn errors_name_the_problem() {
    let arch = crate::arch::presets::quadranet25(16);
    let len = arch.weights_len();
    let (v, mats) = (vec![0.0f32; 10], vec![0.0f32; len.mats]);
    let e = Model::new(
        arch,
        Weights {
            vecs: &v,
            mats: MatData::F32(&mats),
        },
    )
    .unwrap_err();
    assert_eq!(
        std::format!("{e}"),
        std::format!("weights has 10 elements, expected {}", len.vecs)
    );
    let v = vec![0.0f32; len.vecs];
    let m = Model::new(
        arch,
        Weights {
            vecs: &v,
            mats: MatData::F32(&mats),
        },
    )
    .unwrap();
    let mut logits = vec![0.0; 1000];
    let mut arena = vec![0.0; 10];
    let input = vec![0.0; 16 * 16 * 3];
    let e = m
        .forward(Kernels::scalar(), &input, 16, 16, &mut arena, &mut logits)
        .unwrap_err();
    assert!(matches!(e, crate::Error::InputSize { h: 16, w: 16 }));
    let input = vec![0.0; 32 * 32 * 3];
    let e = m
        .forward(Kernels::scalar(), &input, 32, 32, &mut arena, &mut logits)
        .unwrap_err();
    assert!(matches!(
        e,
        crate::Error::Length {
            buffer: crate::error::Buffer::Arena,
            ..
        }
    ));
    let bad = [BlockSpec::quadra(4, 4)];
    let bad_arch = one_block_arch(8, &bad);
    assert_eq!(
        bad_arch.validate(),
        Err(crate::Error::Arch("block kernel must be 3, 5 or 7"))
    );
}

#[test]
fn static_types_agree_with_dynamic() {
    use crate::fixed::{QuadraBlock, QuadraDwConv};
    const C: usize = 9;
    let mut rng = Rng::new(8);
    let spec = BlockSpec::quadra(5, 2);
    let len = spec.weights_len(C);
    let (vecs, mats) = (rng.vec(len.vecs, -0.3, 0.3), rng.vec(len.mats, -0.3, 0.3));
    let packed = Weights {
        vecs: &vecs,
        mats: MatData::F32(&mats),
    };
    let blk = QuadraBlock::<C, 5, 2>::new(packed).unwrap();
    let mut x = [[[0.0f32; C]; 6]; 4];
    for v in x.iter_mut().flatten().flatten() {
        *v = rng.f32(-1.0, 1.0);
    }
    let mut flat: Vec<f32> = x.iter().flatten().flatten().copied().collect();
    let mut scratch = [0.0f32; QuadraBlock::<C, 5, 2>::scratch_len::<6, 2>()];
    blk.forward::<4, 6, 2, { QuadraBlock::<C, 5, 2>::scratch_len::<6, 2>() }>(
        Kernels::scalar(),
        &mut x,
        &mut scratch,
    )
    .unwrap();
    let bw = BlockWeights::from_weights(C, 5, 2, packed).unwrap();
    let mut s2 = vec![0.0; block_scratch_len(6, C, 5, 2, 1)];
    block_forward(
        Kernels::scalar(),
        BlockDims {
            h: 4,
            w: 6,
            c: C,
            k: 5,
            e: 2,
        },
        1,
        &bw,
        &mut flat,
        &mut s2,
    )
    .unwrap();
    assert_eq!(
        x.iter().flatten().flatten().copied().collect::<Vec<_>>(),
        flat
    );

    let taps = rng.vec(QuadraDwConv::<C, 3>::TAPS, -0.3, 0.3);
    let bias = rng.vec(3 * C, -0.3, 0.3);
    let ones = [1.0f32; 3 * C];
    let conv = QuadraDwConv::<C, 3>::new(MatData::F32(&taps), &ones, &bias).unwrap();
    let mut scratch = [0.0f32; QuadraDwConv::<C, 3>::scratch_len::<6>()];
    let mut flat: Vec<f32> = x.iter().flatten().flatten().copied().collect();
    conv.forward(Kernels::scalar(), &mut x, &mut scratch)
        .unwrap();
    let q = QdwWeights::new(3, C, MatData::F32(&taps), &ones, &bias).unwrap();
    let mut s2 = vec![0.0; qdw_scratch_len(6, C, 3)];
    qdw_forward(Kernels::scalar(), 4, 6, &q, &mut flat, &mut s2).unwrap();
    assert_eq!(
        x.iter().flatten().flatten().copied().collect::<Vec<_>>(),
        flat
    );
}

#[test]
fn no_std_detection_agrees_with_std_detection() {
    // `Kernels::detect` (CPUID/XGETBV, no std) picks what std's feature detection makes
    // the best path of `available()`, int8 extension included.
    let best = *available().last().unwrap();
    let got = Kernels::detect();
    assert_eq!(got.isa(), best.isa(), "detect() chose {}", got.describe());
    if cfg!(target_arch = "x86_64") {
        // CPUID finds the VNNI extension as std does.
        assert_eq!(
            got.int8_dot(),
            best.int8_dot(),
            "detect() chose {}",
            got.describe()
        );
    } else {
        // Elsewhere detect() is the compile-time choice: DotProd only if built with it.
        assert_eq!(got, Kernels::compiled());
    }
}

#[test]
fn compiled_kernels_follow_target_features() {
    // Built with `-C target-feature=+avx2,+fma,+f16c` (CI does), the no_std selection must not
    // silently fall back to scalar.
    let want = if cfg!(all(target_arch = "x86_64", target_feature = "avx512f")) {
        Isa::Avx512
    } else if cfg!(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )) {
        Isa::Avx2
    } else if cfg!(all(target_arch = "aarch64", target_feature = "neon")) {
        Isa::Neon
    } else {
        Isa::Scalar
    };
    assert_eq!(Kernels::compiled().isa(), want);
    if let Ok(expect) = std::env::var("QUADRA_EXPECT_COMPILED") {
        assert_eq!(Kernels::compiled().isa().name(), expect);
    }
}

pub(crate) fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn f16_and_int8_models_track_f32() {
    const B: [BlockSpec; 2] = [BlockSpec::quadra(3, 4), BlockSpec::quadra(7, 2)];
    let arch = Arch {
        in_chans: 3,
        num_classes: 50,
        stages: [
            Stage {
                dim: 16,
                blocks: &B,
            },
            Stage {
                dim: 32,
                blocks: &B[..1],
            },
            Stage {
                dim: 64,
                blocks: &B[1..],
            },
            Stage {
                dim: 128,
                blocks: &B[..1],
            },
        ],
    };
    let sd = StateDict::random(&arch, 21);
    let mut packed = sd.pack(&arch);
    let (h, w) = (64, 64);
    let input = Rng::new(22).vec(h * w * 3, -1.0, 1.0);
    let run = |wts: Weights<'_>, kern: Kernels| {
        let model = Model::new(arch, wts).unwrap();
        let mut arena = vec![0.0; arch.arena_len(h, w)];
        let mut logits = vec![0.0; arch.num_classes];
        model
            .forward(kern, &input, h, w, &mut arena, &mut logits)
            .unwrap();
        logits
    };
    let want = run(packed.weights(), Kernels::scalar());
    let mut f16 = vec![0u16; packed.mats.len()];
    let mut seen = 0;
    let mut vecs = packed.vecs.clone();
    quantize_model(
        &arch,
        &mut vecs,
        &packed.mats,
        MatDataMut::F16(&mut f16),
        |_, e| {
            assert!(e.rel_rms < 1e-3);
            seen += 1;
        },
    )
    .unwrap();
    // stem, 3 downsamples, head, and per block 3 QDW filters + 2 linears.
    assert_eq!(seen, 1 + 3 + 1 + 5 * 5);
    let mut i8s = vec![0i8; packed.mats.len()];
    quantize_model(
        &arch,
        &mut packed.vecs,
        &packed.mats,
        MatDataMut::I8(&mut i8s),
        |n, e| {
            assert!(e.rel_rms < 0.02, "{n}: {e:?}");
        },
    )
    .unwrap();
    for kern in available() {
        let got = run(
            Weights {
                vecs: &vecs,
                mats: MatData::F16(&f16),
            },
            kern,
        );
        let c = cosine(&got, &want);
        assert!(c >= 0.9999, "{:?} f16 cosine {c}", kern.isa());
        let got = run(
            Weights {
                vecs: &packed.vecs,
                mats: MatData::I8(&i8s),
            },
            kern,
        );
        let c = cosine(&got, &want);
        assert!(c >= 0.999, "{:?} int8 cosine {c}", kern.isa());
    }
}

/// 64-byte aligned copy of some bytes (tests only).
pub(crate) struct AlignedBuf(Vec<crate::format::Aligned<[u8; 64]>>, usize);

impl AlignedBuf {
    pub(crate) fn new(bytes: &[u8]) -> Self {
        let mut v: Vec<crate::format::Aligned<[u8; 64]>> = (0..bytes.len().div_ceil(64))
            .map(|_| crate::format::Aligned([0u8; 64]))
            .collect();
        for (chunk, src) in v.iter_mut().zip(bytes.chunks(64)) {
            chunk.0[..src.len()].copy_from_slice(src);
        }
        AlignedBuf(v, bytes.len())
    }
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: the Vec holds `0.len() * 64` contiguous initialised bytes (Aligned is
        // repr(C) around [u8; 64] with size 64), of which the first `1` are used.
        unsafe { core::slice::from_raw_parts(self.0.as_ptr().cast::<u8>(), self.1) }
    }
}

#[test]
fn qnet_roundtrips_and_rejects_every_corruption() {
    use crate::format::{write, FileLayout, QnetFile};
    const B: [BlockSpec; 2] = [BlockSpec::quadra(3, 2), BlockSpec::IDENTITY];
    let arch = Arch {
        in_chans: 1,
        num_classes: 4,
        stages: [
            Stage { dim: 4, blocks: &B },
            Stage {
                dim: 8,
                blocks: &B[..1],
            },
            Stage {
                dim: 8,
                blocks: &[],
            },
            Stage {
                dim: 16,
                blocks: &B[1..],
            },
        ],
    };
    let sd = StateDict::random(&arch, 31);
    let packed = sd.pack(&arch);
    let meta = r#"{"source":"test"}"#;
    let lay = FileLayout::of(&arch, Dtype::F32, meta.len());
    let mut out = vec![0u8; lay.len];
    write(&arch, packed.weights(), meta, &mut out).unwrap();
    let buf = AlignedBuf::new(&out);
    let file = QnetFile::parse(buf.bytes()).unwrap();
    assert_eq!(file.arch, arch);
    assert_eq!(file.meta, meta);
    let (h, w) = (32, 32);
    let input = Rng::new(32).vec(h * w, -1.0, 1.0);
    let mut arena = vec![0.0; arch.arena_len(h, w)];
    let (mut a, mut b) = (vec![0.0; 4], vec![0.0; 4]);
    file.model()
        .unwrap()
        .forward(Kernels::scalar(), &input, h, w, &mut arena, &mut a)
        .unwrap();
    Model::new(arch, packed.weights())
        .unwrap()
        .forward(Kernels::scalar(), &input, h, w, &mut arena, &mut b)
        .unwrap();
    assert_eq!(a, b);

    // Every truncation is an error.
    for cut in 0..out.len() {
        let t = AlignedBuf::new(&out[..cut]);
        assert!(
            QnetFile::parse(t.bytes()).is_err(),
            "truncated to {cut} bytes parsed"
        );
    }
    // Every single-bit flip is an error (the CRC sees it; header checks see the rest).
    let mut rng = Rng::new(33);
    for _ in 0..2000 {
        let mut c = out.clone();
        let i = rng.usize(0, c.len());
        c[i] ^= 1 << rng.usize(0, 8);
        let t = AlignedBuf::new(&c);
        assert!(
            QnetFile::parse(t.bytes()).is_err(),
            "bit flip at byte {i} parsed"
        );
    }
    // `reparse` gives the same file without reading the values: a flipped weight bit
    // (which `parse` refuses by its checksum) passes it, while every truncation is still
    // refused, and a flipped header bit exactly when `parse` refuses it with the checksum
    // recomputed.
    let again = QnetFile::reparse(buf.bytes()).unwrap();
    assert_eq!((again.arch, again.meta), (file.arch, file.meta));
    let mut c = out.clone();
    let last = lay.mats + 4;
    c[last] ^= 1;
    let t = AlignedBuf::new(&c);
    assert!(QnetFile::parse(t.bytes()).is_err());
    assert!(QnetFile::reparse(t.bytes()).is_ok());
    for cut in 0..out.len() {
        let t = AlignedBuf::new(&out[..cut]);
        assert!(QnetFile::reparse(t.bytes()).is_err(), "truncated to {cut}");
    }
    for i in (0..128).filter(|i| !(96..100).contains(i)) {
        let mut c = out.clone();
        c[i] ^= 0x10;
        let t = AlignedBuf::new(&c);
        let crc = crate::format::file_crc(&c);
        c[96..100].copy_from_slice(&crc.to_le_bytes());
        let sealed = AlignedBuf::new(&c);
        assert_eq!(
            QnetFile::reparse(t.bytes()).is_ok(),
            QnetFile::parse(sealed.bytes()).is_ok(),
            "header byte {i} flipped: reparse and (resealed) parse disagree"
        );
    }
    // A misaligned buffer is reported, not read.
    let mut shifted = vec![0u8; out.len() + 1];
    shifted[1..].copy_from_slice(&out);
    let t = AlignedBuf::new(&shifted);
    let e = QnetFile::parse(&t.bytes()[1..]).unwrap_err();
    assert!(std::format!("{e}").contains("aligned"), "{e}");
    // The checksum of any bytes, however short, is a value, not a panic; the checksum
    // field counts as zero wherever the bytes end.
    for len in [0usize, 1, 95, 96, 97, 99, 100, 101] {
        let _ = crate::format::file_crc(&out[..len]);
    }
    let mut other = out.clone();
    other[96..100].copy_from_slice(&[1, 2, 3, 4]);
    assert_eq!(
        crate::format::file_crc(&other),
        crate::format::file_crc(&out)
    );
    // Other versions are refused by name; version 1 (the old tap layout) with the fix.
    for (v, says) in [(1u8, "reconvert"), (4, "version")] {
        let mut other = out.clone();
        other[8] = v;
        let crc = crate::format::file_crc(&other);
        other[96..100].copy_from_slice(&crc.to_le_bytes());
        let t = AlignedBuf::new(&other);
        let e = std::format!("{}", QnetFile::parse(t.bytes()).unwrap_err());
        assert!(e.contains("version") && e.contains(says), "{e}");
    }
}

/// Splits layers into `0` bands and runs them serially in reverse order (any order must
/// give the same result).
pub(crate) struct SplitReverse(pub(crate) usize);

impl crate::exec::Executor for SplitReverse {
    fn width(&self) -> usize {
        self.0
    }
    fn run<T: Send>(&self, tasks: &mut [T], f: &(dyn Fn(&mut T) + Sync)) {
        tasks.iter_mut().rev().for_each(f);
    }
}

#[test]
fn bands_give_bit_identical_results() {
    const B: [BlockSpec; 3] = [
        BlockSpec::quadra(7, 4),
        BlockSpec::quadra(3, 2),
        BlockSpec::quadra(5, 4),
    ];
    let arch = Arch {
        in_chans: 3,
        num_classes: 10,
        stages: [
            Stage { dim: 8, blocks: &B },
            Stage {
                dim: 16,
                blocks: &B[1..],
            },
            Stage {
                dim: 24,
                blocks: &B[..1],
            },
            Stage {
                dim: 64,
                blocks: &B[..1],
            },
        ],
    };
    // Stage 3 (64 channels, E = 4, 2x2 at 64x64) runs the grouped MLP.
    assert!(crate::arch::grouped_mlp(2, 2, 64, 4));
    let sd = StateDict::random(&arch, 41);
    let packed = sd.pack(&arch);
    let model = Model::new(arch, packed.weights()).unwrap();
    for (h, w) in [(64, 64), (96, 40), (70, 45)] {
        let input = Rng::new(42).vec(h * w * 3, -1.0, 1.0);
        for kern in available() {
            let mut arena = vec![0.0; arch.arena_len(h, w)];
            let mut want = vec![0.0; 10];
            model
                .forward(kern, &input, h, w, &mut arena, &mut want)
                .unwrap();
            for bands in [2, 3, 5, 16] {
                let mut arena = vec![f32::NAN; arch.arena_len_with(h, w, bands)];
                let mut got = vec![0.0; 10];
                let exec = SplitReverse(bands);
                model
                    .forward_with(&exec, kern, &input, h, w, &mut arena, &mut got)
                    .unwrap();
                assert_eq!(got, want, "{:?} {h}x{w} in {bands} bands", kern.isa());
            }
        }
    }
}

#[test]
fn absurd_sizes_in_a_model_file_are_refused_not_overflowed() {
    // Found by the fuzzer: a stage width of 0xf6000004 overflowed the size arithmetic.
    let seed = include_bytes!("../../fuzz/corpus/qnet_parse/tiny-f32.qnet");
    for (at, value) in [
        (28usize, 0xf600_0004u32),
        (16, 1 << 20),
        (20, u32::MAX),
        (24, 1 << 15),
    ] {
        let mut b = seed.to_vec();
        b[at..at + 4].copy_from_slice(&value.to_le_bytes());
        let crc = crate::format::file_crc(&b);
        b[96..100].copy_from_slice(&crc.to_le_bytes());
        let t = AlignedBuf::new(&b);
        let e = crate::format::QnetFile::parse(t.bytes()).unwrap_err();
        assert!(
            matches!(e, crate::Error::Arch(_)),
            "header field at {at} = {value}: {e}"
        );
    }
    let arch = crate::arch::presets::quadranet25(16);
    let len = arch.weights_len();
    let (v, m) = (vec![0.0; len.vecs], vec![0.0; len.mats]);
    let model = Model::new(
        arch,
        Weights {
            vecs: &v,
            mats: MatData::F32(&m),
        },
    )
    .unwrap();
    let e = model
        .forward(
            Kernels::scalar(),
            &[],
            1 << 40,
            1 << 40,
            &mut [],
            &mut [0.0; 1000],
        )
        .unwrap_err();
    assert!(matches!(e, crate::Error::InputSize { .. }), "{e}");
}

#[test]
fn simd_layer_norm_matches_scalar() {
    let mut rng = Rng::new(51);
    for c in [1usize, 3, 7, 8, 15, 16, 17, 31, 33, 64, 100, 257] {
        let rows = 5;
        // An offset mean and a spread: the two-pass variance must hold up.
        let x: Vec<f32> = rng
            .vec(rows * c, -3.0, 3.0)
            .iter()
            .map(|v| v + 40.0)
            .collect();
        let (w, b) = (rng.vec(c, 0.5, 1.5), rng.vec(c, -0.5, 0.5));
        let mut want = vec![0.0; rows * c];
        crate::math::layer_norm_rows(&x, c, &w, &b, &mut want);
        for kern in available() {
            let mut got = vec![f32::NAN; rows * c];
            kernels::layer_norm_rows(kern, &x, c, &w, &b, &mut got).unwrap();
            assert_close(&got, &want, 2e-5, &std::format!("{:?} c={c}", kern.isa()));
            let mut inplace = x.clone();
            kernels::layer_norm_rows_inplace(kern, &mut inplace, c, &w, &b).unwrap();
            assert_eq!(inplace, got, "{:?} c={c} in place", kern.isa());
        }
    }
}

#[test]
fn plain_depthwise_row_simd_matches_scalar() {
    let mut rng = Rng::new(61);
    let kerns = available();
    for k in [3usize, 5, 7] {
        for c in [1usize, 5, 8, 16, 17, 33, 64] {
            let taps = rng.vec(k * k * c, -0.3, 0.3);
            let bias = rng.vec(c, -0.5, 0.5);
            for w in [1usize, 2, 7, 8, 9, 15, 16, 17, 40] {
                let rows: Vec<Vec<f32>> = (0..k)
                    .map(|_| rng.vec((w + k - 1) * c, -1.0, 1.0))
                    .collect();
                let refs: Vec<&[f32]> = rows.iter().map(|r| r.as_slice()).collect();
                let mut want = vec![0.0; w * c];
                let conv = kernels::DwConv {
                    k,
                    c,
                    taps: &taps,
                    bias: &bias,
                };
                kernels::dw_row(Kernels::scalar(), &conv, &refs, w, &mut want).unwrap();
                for &kern in &kerns[1..] {
                    let mut got = vec![f32::NAN; w * c];
                    kernels::dw_row(kern, &conv, &refs, w, &mut got).unwrap();
                    assert_close(
                        &got,
                        &want,
                        1e-5,
                        &std::format!("{:?} k={k} c={c} w={w}", kern.isa()),
                    );
                }
            }
        }
    }
}

/// The scratch plan's lengths and carvings agree for every preset, input size, band count
/// and dtype: each layout's regions sum to its length and tile the slice in order, a slice
/// one float short is refused, and the arena plan gives every block at least what its
/// layout needs.
#[test]
fn scratch_plan_lengths_and_carvings_agree_for_every_preset_and_band_count() {
    use crate::arch::presets;
    use crate::plan::{
        block_scratch_split, default_strip, grouped_mlp, BlockScratch, GroupedScratch, MlpScratch,
    };
    fn tiles(parts: &[&mut [f32]], whole: *const f32, len: usize) -> bool {
        let mut at = whole;
        let mut sum = 0;
        for p in parts {
            if !p.is_empty() && p.as_ptr() != at {
                return false;
            }
            at = at.wrapping_add(p.len());
            sum += p.len();
        }
        sum <= len
    }
    let mut checked = 0usize;
    for (name, _) in presets::SIZES {
        for family in ["quadranet25", "quadranet36"] {
            let arch = presets::by_name(&std::format!("{family}-{name}")).unwrap();
            for (h, w) in [(224, 224), (64, 96), (160, 32)] {
                for bands in 1..=4 {
                    for dtype in [Dtype::F32, Dtype::W8A8] {
                        let q8 = dtype == Dtype::W8A8;
                        let plan = arch.plan_for(h, w, bands, dtype);
                        for s in 0..4 {
                            let (sh, sw) = Arch::stage_hw(h, w)[s];
                            let c = arch.dim(s);
                            for spec in arch.stages[s].blocks.iter().filter(|b| !b.is_identity()) {
                                let (k, e) = (spec.kernel as usize, spec.expansion as usize);
                                let grouped = grouped_mlp(sh, sw, c, e);
                                let strip = if grouped {
                                    1
                                } else {
                                    default_strip(sh, sw, c, e)
                                };
                                let lay = BlockScratch::of(sw, c, k, e, strip, q8, bands > 1);
                                let (per, shared) = block_scratch_split(sh, sw, c, k, e, bands, q8);
                                assert!(per >= lay.floats() && plan.band_scratch >= per);
                                assert!(plan.scratch_len >= bands * per + shared);
                                let n = lay.floats();
                                let mut buf = std::vec![0.0f32; n];
                                let base = buf.as_ptr();
                                let r = lay.split(&mut buf).unwrap();
                                assert_eq!(
                                    r.ring.len() + r.ln2.len() + r.mlp.len() + r.below.len(),
                                    n
                                );
                                let mlp_len = r.mlp.len();
                                assert!(tiles(&[r.ring, r.ln2, r.mlp, r.below], base, n));
                                assert!(lay.split(&mut buf[..n - 1]).is_err());
                                let m = MlpScratch::of(strip * sw, c, e, q8);
                                assert_eq!(m.floats(), mlp_len);
                                let mut mb = std::vec![0.0f32; m.floats()];
                                let mp = mb.as_ptr();
                                let [a, b, cc] = m.split(&mut mb).unwrap();
                                assert_eq!(
                                    (a.len(), b.len(), cc.len()),
                                    (m.hidden, m.ln2_q, m.hidden_q)
                                );
                                assert!(tiles(&[a, b, cc], mp, m.floats()));
                                assert_eq!(m.ln2_q == 0, !q8);
                                if grouped {
                                    let g = GroupedScratch::of(sh, sw, c, e, q8);
                                    assert_eq!(g.floats(), shared);
                                    let mut gb = std::vec![0.0f32; g.floats()];
                                    let gp = gb.as_ptr();
                                    let r = g.split(&mut gb, c).unwrap();
                                    assert_eq!(r.ones.len(), c);
                                    assert_eq!(
                                        r.hiddens.len(),
                                        crate::plan::MLP_GROUPS * g.per_group
                                    );
                                    assert!(tiles(
                                        &[r.ln2, r.accs, r.hiddens, r.ones],
                                        gp,
                                        g.floats()
                                    ));
                                    assert!(g.split(&mut gb[..g.floats() - 1], c).is_err());
                                }
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 1000, "{checked} blocks checked");
}
