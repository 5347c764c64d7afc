//! Every fixture written by `tools/reference/make_fixtures.py` from the official PyTorch
//! definition, run through the library on every kernel path this CPU has.

use ndarray::ArrayView4;
use quadra_core::arch::{block_scratch_len, Arch, BlockSpec, Stage};
use quadra_core::block::{block_forward, qdw_forward, qdw_scratch_len, BlockDims, BlockWeights};
use quadra_core::kernels::QdwWeights;
use quadra_core::net::{pack_tensor, visit_tensors, Packing, TensorSlot};
use quadra_core::Dtype;
use quadra_core::{MatData, Weights};
use quadra_cpu::config::ArchConfig;
use quadra_cpu::Network;
use quadra_tests::{
    assert_matches_torch, cosine, fixture, kernel_paths, kernel_paths_q8, nchw_to_hwc,
};

fn meta_usize(meta: &str, key: &str) -> usize {
    let v: serde_json::Value = serde_json::from_str(meta).unwrap();
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("fixture description has no {key}")) as usize
}

fn qdw_fixture(name: &str) {
    let f = fixture(name);
    let [k, c, h, w] = ["kernel", "channels", "h", "w"].map(|key| meta_usize(&f.meta, key));
    let mut taps = vec![0.0; QdwWeights::taps_len(k, c)];
    let mut scales = vec![0.0; 3 * c];
    for fi in 0..3u8 {
        let wt = &f.weights.tensors[&format!("conv{}.weight", fi + 1)];
        let shape = [c, 1, k, k];
        let slot = TensorSlot {
            name: "qdw",
            shape: &shape,
            packing: Packing::QdwTaps(fi),
            vec_offset: 0,
            mat_offset: 0,
        };
        pack_tensor(&slot, &wt.data, &mut scales, &mut taps).unwrap();
    }
    let bias: Vec<f32> = (1..=3)
        .flat_map(|i| f.weights.tensors[&format!("conv{i}.bias")].data.clone())
        .collect();
    let q = QdwWeights::new(k, c, MatData::F32(&taps), &scales, &bias).unwrap();
    let x0 = nchw_to_hwc(&f.input.data, c, h, w);
    let want = nchw_to_hwc(&f.output.data, c, h, w);
    for kern in kernel_paths() {
        let mut x = x0.clone();
        let mut scratch = vec![f32::NAN; qdw_scratch_len(w, c, k)];
        qdw_forward(kern, h, w, &q, &mut x, &mut scratch).unwrap();
        assert_matches_torch(&x, &want, &format!("{name} on {}", kern.isa()));
    }
}

#[test]
fn qdw_k3_matches_pytorch() {
    qdw_fixture("qdw_k3");
}

#[test]
fn qdw_k5_matches_pytorch() {
    qdw_fixture("qdw_k5");
}

#[test]
fn qdw_k7_matches_pytorch() {
    qdw_fixture("qdw_k7");
}

#[test]
fn block_matches_pytorch() {
    let f = fixture("block");
    let [k, e, c, h, w] =
        ["kernel", "expansion", "channels", "h", "w"].map(|key| meta_usize(&f.meta, key));
    let spec = [BlockSpec::quadra(k as u8, e as u8)];
    let stage = |blocks| Stage { dim: c, blocks };
    let arch = Arch {
        in_chans: 1,
        num_classes: 1,
        stages: [stage(&spec[..]), stage(&[]), stage(&[]), stage(&[])],
    };
    // Pack the block's tensors where a one-block network would hold them.
    let len = arch.weights_len();
    let (mut vecs, mut mats) = (vec![0.0; len.vecs], vec![0.0; len.mats]);
    let mut base = None;
    visit_tensors::<quadra_core::Error>(&arch, |slot| {
        if let Some(key) = slot.name.strip_prefix("stages.0.0.") {
            base.get_or_insert((slot.vec_offset, slot.mat_offset));
            pack_tensor(&slot, &f.weights.tensors[key].data, &mut vecs, &mut mats)?;
        }
        Ok(())
    })
    .unwrap();
    let (vo, mo) = base.unwrap();
    let bl = spec[0].weights_len(c);
    let block_w = Weights {
        vecs: &vecs[vo..vo + bl.vecs],
        mats: MatData::F32(&mats[mo..mo + bl.mats]),
    };
    let bw = BlockWeights::from_weights(c, k, e, block_w).unwrap();
    let x0 = nchw_to_hwc(&f.input.data, c, h, w);
    let want = nchw_to_hwc(&f.output.data, c, h, w);
    for kern in kernel_paths() {
        for strip in [1, 3, h] {
            let mut x = x0.clone();
            let mut scratch = vec![f32::NAN; block_scratch_len(w, c, k, e, strip)];
            let d = BlockDims { h, w, c, k, e };
            block_forward(kern, d, strip, &bw, &mut x, &mut scratch).unwrap();
            let what = format!("block on {} strip {strip}", kern.isa());
            assert_matches_torch(&x, &want, &what);
        }
    }
}

/// Fixture `name` of a whole network: the fixture and the f32 network from its weights.
fn net_of(name: &str) -> (quadra_tests::Fixture, Network) {
    let f = fixture(name);
    let meta: serde_json::Value = serde_json::from_str(&f.meta).unwrap();
    let cfg = ArchConfig::from_json(&meta["config"].to_string()).unwrap();
    let base = Network::from_state_dict(cfg, &f.weights).unwrap();
    (f, base)
}

/// The NCHW input of a fixture.
fn input_of(f: &quadra_tests::Fixture) -> ArrayView4<'_, f32> {
    let shape: [usize; 4] = f.input.shape.as_slice().try_into().unwrap();
    ArrayView4::from_shape(shape, &f.input.data).unwrap()
}

fn net_fixture(name: &str) {
    let (f, base) = net_of(name);
    let x = input_of(&f);
    for kern in kernel_paths() {
        let net = Network::new(base.config().clone(), base.owned_weights().unwrap())
            .unwrap()
            .with_kernels(kern);
        let y = net.forward_nchw(x).unwrap();
        let what = format!("{name} on {}", kern.isa());
        let d = assert_matches_torch(y.as_slice().unwrap(), &f.output.data, &what);
        eprintln!("{what}: max |ours - torch| = {d:.3e}");
    }
}

#[test]
fn small_net_matches_pytorch() {
    net_fixture("net_small");
}

#[test]
fn mixed_kernel_net_in_bf16_matches_pytorch() {
    net_fixture("net_mixed");
}

#[test]
fn searched_net_with_identity_blocks_matches_pytorch() {
    net_fixture("net_searched");
}

#[test]
fn quadranet25_xxs_at_224_in_f16_matches_pytorch() {
    net_fixture("quadranet25_xxs");
}

/// Image by image: (index, our logits, PyTorch's), `classes` each.
fn images<'a>(
    ours: &'a [f32],
    torch: &'a [f32],
    classes: usize,
) -> impl Iterator<Item = (usize, &'a [f32], &'a [f32])> {
    ours.chunks(classes)
        .zip(torch.chunks(classes))
        .enumerate()
        .map(|(i, (a, b))| (i, a, b))
}

/// The w8a8 model of fixture `name` (int8 weights, int8 pointwise GEMMs with per-pixel
/// activation scales) against PyTorch's f32 output, on every int8 GEMM path; returns the
/// worst cosine.
fn w8a8_fixture(name: &str, min_cos: f64) -> f64 {
    let (f, base) = net_of(name);
    let x = input_of(&f);
    let (w8a8, _) = base
        .owned_weights()
        .unwrap()
        .quantize(&base.config().arch(), Dtype::W8A8)
        .unwrap();
    let classes = base.config().num_classes;
    let mut worst = 1.0f64;
    for kern in kernel_paths_q8() {
        let net = Network::new(base.config().clone(), w8a8.clone())
            .unwrap()
            .with_kernels(kern);
        let y = net.forward_nchw(x).unwrap();
        for (i, a, b) in images(y.as_slice().unwrap(), &f.output.data, classes) {
            let c = cosine(a, b);
            eprintln!(
                "{name} w8a8 on {} image {i}: cosine {c:.6}",
                kern.describe()
            );
            // NaN-aware: a NaN cosine fails.
            assert!(
                c >= min_cos,
                "{name} w8a8 on {} image {i}: cosine {c}",
                kern.describe()
            );
            worst = worst.min(c);
        }
    }
    worst
}

// The floors below are issue #11's target (0.999); what the runs measure is printed (the
// PyTorch simulation of this scheme gives 0.99990 small net, 0.99989 mixed, 0.99976 25-XXS).

#[test]
fn small_net_in_w8a8_tracks_pytorch() {
    w8a8_fixture("net_small", 0.999);
}

#[test]
fn mixed_kernel_net_in_w8a8_tracks_pytorch() {
    w8a8_fixture("net_mixed", 0.999);
}

#[test]
fn searched_net_in_w8a8_tracks_pytorch() {
    w8a8_fixture("net_searched", 0.999);
}

#[test]
fn quadranet25_xxs_at_224_in_w8a8_tracks_pytorch() {
    w8a8_fixture("quadranet25_xxs", 0.999);
}

/// `Precision::Fp16` (half-precision pointwise GEMMs and GELU) against PyTorch's f32 output,
/// f32 and f16 weights, and w8a8 with fp16 against w8a8 in f32: per image, the logits'
/// cosine (floor 0.9995, issue #24's target) and the same top-1 class; the max |difference|
/// printed. Runs where the CPU has FEAT_FP16 (qemu
/// here; `QUADRA_REQUIRE_FP16=1` makes its absence a failure); elsewhere fp16 runs f32,
/// which the f32 tests cover.
fn fp16_fixture(name: &str) {
    if !quadra_cpu::dispatch::cpu_supports_fp16() {
        assert!(
            std::env::var("QUADRA_REQUIRE_FP16").is_err(),
            "QUADRA_REQUIRE_FP16 is set but this CPU has no FEAT_FP16"
        );
        eprintln!("{name}: no FEAT_FP16 here, the fp16 path is not run");
        return;
    }
    let (f, base) = net_of(name);
    let x = input_of(&f);
    let classes = base.config().num_classes;
    let top = |v: &[f32]| (0..v.len()).fold(0, |b, j| if v[j] > v[b] { j } else { b });
    for dtype in [Dtype::F32, Dtype::F16, Dtype::W8A8] {
        let (w, _) = base
            .owned_weights()
            .unwrap()
            .quantize(&base.config().arch(), dtype)
            .unwrap();
        let mut net = Network::new(base.config().clone(), w)
            .unwrap()
            .with_precision(quadra_cpu::Precision::Fp16);
        assert!(net.kernels().fp16(), "{}", net.describe());
        let y = net.forward_nchw(x).unwrap();
        // w8a8 with fp16 (GELU's g in half precision) against the same w8a8 model in f32,
        // which `w8a8_fixture` holds to PyTorch: what fp16 adds, alone.
        let (want, against) = if dtype == Dtype::W8A8 {
            net.set_precision(quadra_cpu::Precision::F32);
            let y32 = net.forward_nchw(x).unwrap();
            (y32.as_slice().unwrap().to_vec(), "w8a8 in f32")
        } else {
            (f.output.data.clone(), "torch")
        };
        for (i, a, b) in images(y.as_slice().unwrap(), &want, classes) {
            let c = cosine(a, b);
            let d = a
                .iter()
                .zip(b)
                .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
            eprintln!(
                "{name} fp16 ({dtype:?} weights) image {i}: cosine {c:.7}, max |ours - {against}| {d:.3e}"
            );
            // NaN-aware: a NaN cosine fails.
            assert!(c >= 0.9995, "{name} fp16 {dtype:?} image {i}: cosine {c}");
            assert_eq!(top(a), top(b), "{name} fp16 {dtype:?} image {i}: top-1");
        }
    }
}

#[test]
fn small_net_in_fp16_tracks_pytorch() {
    fp16_fixture("net_small");
}

#[test]
fn mixed_kernel_net_in_fp16_tracks_pytorch() {
    fp16_fixture("net_mixed");
}

#[test]
fn searched_net_in_fp16_tracks_pytorch() {
    fp16_fixture("net_searched");
}

#[test]
fn quadranet25_xxs_in_fp16_tracks_pytorch() {
    fp16_fixture("quadranet25_xxs");
}
