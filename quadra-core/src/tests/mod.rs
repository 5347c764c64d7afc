//! Unit tests of the core: every SIMD path against the scalar reference, the GEMM against
//! matrixmultiply, the scheduler against an unfused full-tensor reference, and strip
//! heights against each other.
//!
//! Shared here: the random generator, the kernel paths to test, the unfused references and
//! the helpers every test module uses; the tests are in the submodules by concern.

use std::vec;
use std::vec::Vec;

use crate::arch::{Arch, BlockSpec, Stage};
use crate::block::BlockDims;
use crate::isa::{Isa, Kernels};
use crate::kernels::{Dtype, MatData, PackedB, QdwWeights};
use crate::math::{gelu_exact, layer_norm};
use crate::net::{pack_model, Model};
use crate::weights::Weights;

mod f16;
mod format;
mod fp16;
mod isa;
mod kernel_paths;
mod model;
mod q8;

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
    // x86: the core's own CPUID rules (`no_std_detection_agrees_with_std_detection` checks
    // them against std's detection); aarch64: std's detection (the core has no run-time
    // detection there).
    #[cfg(target_arch = "x86_64")]
    v.extend(
        [Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter_map(Kernels::supported),
    );
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
        match Kernels::first_missing(&v, &req) {
            Ok(None) => {}
            Ok(Some(name)) => {
                panic!("QUADRA_REQUIRE_ISA demands {name}, which this CPU cannot run")
            }
            Err(name) => panic!("QUADRA_REQUIRE_ISA names an unknown ISA: {name}"),
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

/// One GEMM call's operands: A (`m` rows, `lda` apart), the packed B, the epilogue, and the
/// output's contents before the call (`ldo` apart).
#[derive(Clone, Copy)]
pub(crate) struct GemmCase<'a> {
    pub a: &'a [f32],
    pub m: usize,
    pub lda: usize,
    pub b: PackedB<'a>,
    pub epi: crate::kernels::Epilogue<'a>,
    pub init: &'a [f32],
    pub ldo: usize,
}

impl GemmCase<'_> {
    /// The output of `kernels::gemm` on `kern`.
    pub(crate) fn run(&self, kern: Kernels) -> Vec<f32> {
        let mut out = self.init.to_vec();
        let am = crate::kernels::MatRef {
            data: self.a,
            rows: self.m,
            cols: self.b.k(),
            stride: self.lda,
        };
        let om = crate::kernels::MatMut {
            data: &mut out,
            rows: self.m,
            cols: self.b.n(),
            stride: self.ldo,
        };
        crate::kernels::gemm(kern, am, self.b, self.epi, om).unwrap();
        out
    }
}

pub(crate) fn assert_close(got: &[f32], want: &[f32], rel: f32, what: &str) {
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

/// A kernel's half-precision GELU outputs `got` against their definition
/// (`math::f16::gelu`) on the inputs `v`, as a GEMM epilogue computed them: within `slack`
/// (the epilogue's own f32 roundings of `v`); where those roundings can move `v` across an
/// f16 rounding boundary, also within what one f16 step of the input moves the result
/// (`|v|·φ·2^-11·|v|` <= 2^-11·0.21) plus one f16 ulp of `g` (2^-12) times `|v|`.
pub(crate) fn assert_fp16_gelu(got: &[f32], v: &[f32], slack: f32, what: &str) {
    use crate::math::f16;
    assert_eq!(got.len(), v.len(), "{what}: length");
    for (i, (&x, &g)) in v.iter().zip(got).enumerate() {
        let w = f16::gelu(x);
        let x64 = f64::from(x);
        let edge = f16::from_f64(x64 * (1.0 + 1e-6)) != f16::from_f64(x64 * (1.0 - 1e-6));
        let tol = if edge {
            x.abs() * 2f32.powi(-12) + 0.21 * 2f32.powi(-11) + slack
        } else {
            slack
        };
        // NaN-aware: a NaN fails the comparison.
        assert!(
            (g - w).abs() <= tol,
            "{what} fp16 GELU [{i}]: got {g}, want {w} (v {x})"
        );
    }
}

/// A matrix in all three storage types, each with its per-column scales, plus the values
/// the stored data stands for (`stored · scale`).
pub(crate) struct Stored {
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

pub(crate) const DTYPES: [Dtype; 3] = [Dtype::F32, Dtype::F16, Dtype::I8];

/// PW2's residual epilogue, with a bias (`BiasScaleAdd`, the first hidden slice's) or
/// without (`ScaleAdd`, the others').
pub(crate) fn residual_epi<'a>(
    with_bias: bool,
    bias: &'a [f32],
    gamma: &'a [f32],
) -> crate::kernels::Epilogue<'a> {
    use crate::kernels::Epilogue;
    if with_bias {
        Epilogue::BiasScaleAdd { bias, gamma }
    } else {
        Epilogue::ScaleAdd { gamma }
    }
}

pub(crate) fn random_b(rng: &mut Rng, k: usize, n: usize) -> Stored {
    let dense = rng.vec(k * n, -1.0, 1.0);
    let mut packed = vec![0.0; PackedB::packed_len(k, n)];
    PackedB::pack(k, n, &mut packed, |kk, j| dense[kk * n + j]).unwrap();
    Stored::new(&packed, n, |i| {
        Some(PackedB::column_of(k, i)).filter(|&j| j < n)
    })
}

pub(crate) fn matrixmultiply_ref(
    a: &[f32],
    m: usize,
    lda: usize,
    k: usize,
    b: &[f32],
    n: usize,
) -> Vec<f32> {
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

pub(crate) fn random_qdw(rng: &mut Rng, k: usize, c: usize) -> (Stored, Vec<f32>) {
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

pub(crate) fn ln_all(x: &[f32], c: usize, w: &[f32], b: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for (xi, oi) in x.chunks_exact(c).zip(out.chunks_exact_mut(c)) {
        layer_norm(xi, w, b, oi);
    }
    out
}

/// Depthwise KxK conv, zero padding, from PyTorch-layout weights `[C,1,K,K]`.
pub(crate) fn dwconv(
    x: &[f32],
    h: usize,
    w: usize,
    c: usize,
    k: usize,
    wt: &[f32],
    b: &[f32],
) -> Vec<f32> {
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
pub(crate) fn linear(x: &[f32], k: usize, wt: &[f32], b: &[f32], n: usize) -> Vec<f32> {
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

pub(crate) fn ref_block(sd: &StateDict, pre: &str, x: &mut [f32], d: BlockDims) {
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
pub(crate) fn ref_patch_conv(
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

pub(crate) fn ref_model(
    arch: &Arch<'_>,
    sd: &StateDict,
    input: &[f32],
    h: usize,
    w: usize,
) -> Vec<f32> {
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

pub(crate) fn one_block_arch(c: usize, spec: &[BlockSpec]) -> Arch<'_> {
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

pub(crate) fn check_model(arch: &Arch<'_>, h: usize, w: usize, seed: u64) {
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

pub(crate) use crate::compare::cosine;

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

/// Splits layers into bands in proportion to fixed weights (one per band: uneven bands,
/// one-row bands, empty bands) and runs them serially in reverse order.
pub(crate) struct SplitWeighted(pub(crate) &'static [u32]);

impl crate::exec::Executor for SplitWeighted {
    fn width(&self) -> usize {
        self.0.len()
    }
    fn run<T: Send>(&self, tasks: &mut [T], f: &(dyn Fn(&mut T) + Sync)) {
        tasks.iter_mut().rev().for_each(f);
    }
    fn split(&self, rows: usize, bands: usize, i: usize) -> (usize, usize) {
        crate::exec::weighted_band_rows(rows, &self.0[..bands], i)
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
