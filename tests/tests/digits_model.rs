//! The bundled default model (issue: a real, trained default model): the f32 weights
//! reproduce PyTorch's logits, the compiled-in w8a8 model is exactly as accurate as PyTorch
//! (357/360), int8 weight-only storage within one image, and the committed w8a8 file is
//! exactly what converting the committed checkpoint gives.

use std::path::PathBuf;

use ndarray::{Array1, Array2, Array4};
use ndarray_npy::ReadNpyExt;
use quadra_core::Dtype;
use quadra_cpu::checkpoint::StateDict;
use quadra_cpu::config::ArchConfig;
use quadra_cpu::weights::LoadedModel;
use quadra_cpu::Network;
use quadra_tests::{assert_matches_torch, kernel_paths, kernel_paths_q8};

#[path = "../../models/digits/rust/model.rs"]
mod bundled;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/digits")
}

fn npy<T: ndarray_npy::ReadableElement, D: ndarray::Dimension>(name: &str) -> ndarray::Array<T, D> {
    let f = std::fs::File::open(dir().join(name)).unwrap();
    ndarray::ArrayD::<T>::read_npy(f)
        .unwrap()
        .into_dimensionality()
        .unwrap()
}

fn f32_network() -> Network {
    let cfg = ArchConfig::from_json(&std::fs::read_to_string(dir().join("digits.json")).unwrap())
        .unwrap();
    let sd = StateDict::load(dir().join("digits.safetensors")).unwrap();
    Network::from_state_dict(cfg, &sd).unwrap()
}

fn report() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("train_report.json")).unwrap())
        .unwrap()
}

#[test]
fn f32_logits_match_pytorch_on_the_test_set() {
    let x: Array4<f32> = npy("test_images.npy");
    let want: Array2<f32> = npy("pytorch_logits.npy");
    let base = f32_network();
    for kern in kernel_paths() {
        let net = Network::new(base.config().clone(), base.owned_weights().unwrap())
            .unwrap()
            .with_kernels(kern);
        let y = net.forward_nchw(x.view()).unwrap();
        for (i, (a, b)) in y.outer_iter().zip(want.outer_iter()).enumerate() {
            let what = format!("{} image {i}", kern.isa());
            assert_matches_torch(&a.to_vec(), &b.to_vec(), &what);
        }
    }
}

#[test]
fn compiled_in_w8a8_model_is_as_accurate_as_pytorch() {
    let x: Array4<f32> = npy("test_images.npy");
    let labels: Array1<i64> = npy("test_labels.npy");
    let pytorch_correct = report()["correct"].as_i64().unwrap();
    let model = bundled::model().unwrap();
    assert_eq!(model.weights().mats.dtype(), Dtype::W8A8);
    let flat = x.as_slice().unwrap();
    let mut arena = vec![0.0f32; bundled::ARENA_LEN];
    let mut logits = [0.0f32; bundled::NUM_CLASSES];
    for kern in kernel_paths_q8() {
        let mut correct = 0i64;
        for (i, &label) in labels.iter().enumerate() {
            let img = &flat[i * bundled::INPUT_LEN..(i + 1) * bundled::INPUT_LEN];
            model
                .forward(
                    kern,
                    img,
                    bundled::INPUT_H,
                    bundled::INPUT_W,
                    &mut arena,
                    &mut logits,
                )
                .unwrap();
            let pred = (0..logits.len()).fold(0, |b, j| if logits[j] > logits[b] { j } else { b });
            correct += (pred as i64 == label) as i64;
        }
        assert_eq!(
            correct,
            pytorch_correct,
            "{}: w8a8 {correct} correct, PyTorch {pytorch_correct}",
            kern.describe()
        );
    }
}

#[test]
fn committed_w8a8_file_is_the_conversion_of_the_committed_checkpoint() {
    let committed = LoadedModel::load(dir().join("rust/model.qnet")).unwrap();
    let net = f32_network();
    let (again, _) = net
        .owned_weights()
        .unwrap()
        .quantize(&net.config().arch(), Dtype::W8A8)
        .unwrap();
    assert_eq!(committed.config, *net.config());
    assert!(
        committed.weights == again,
        "models/digits/rust/model.qnet is stale: reconvert it"
    );
}

/// Test images the checkpoint converted to `dtype` classifies right, run through
/// `quadra-cpu`, and PyTorch's count.
fn correct_as(dtype: Dtype) -> (i64, i64) {
    correct_at(dtype, quadra_cpu::Precision::F32)
}

/// [`correct_as`] at `precision`.
fn correct_at(dtype: Dtype, precision: quadra_cpu::Precision) -> (i64, i64) {
    let x: Array4<f32> = npy("test_images.npy");
    let labels: Array1<i64> = npy("test_labels.npy");
    let f32_net = f32_network();
    let (w, _) = f32_net
        .owned_weights()
        .unwrap()
        .quantize(&f32_net.config().arch(), dtype)
        .unwrap();
    let net = Network::new(f32_net.config().clone(), w)
        .unwrap()
        .with_precision(precision);
    let y = net.forward_nchw(x.view()).unwrap();
    let correct = y
        .outer_iter()
        .zip(labels.iter())
        .filter(|(row, &l)| {
            let pred = (0..row.len()).fold(0, |b, j| if row[j] > row[b] { j } else { b });
            pred as i64 == l
        })
        .count() as i64;
    (correct, report()["correct"].as_i64().unwrap())
}

#[test]
fn int8_weight_only_model_is_within_one_image_of_pytorch() {
    let (correct, pytorch) = correct_as(Dtype::I8);
    assert!(
        (correct - pytorch).abs() <= 1,
        "int8 {correct} correct, PyTorch {pytorch}"
    );
}

#[test]
fn f16_model_is_within_one_image_of_pytorch() {
    let (correct, pytorch) = correct_as(Dtype::F16);
    assert!(
        (correct - pytorch).abs() <= 1,
        "f16 {correct} correct, PyTorch {pytorch}"
    );
}

/// Half-precision GEMMs (`--precision fp16`, f16 weights) where the CPU has FEAT_FP16
/// (qemu here): the test set's count, against PyTorch's, within one image as the f16
/// weights alone are.
#[test]
fn fp16_precision_is_within_one_image_of_pytorch() {
    if !quadra_cpu::dispatch::cpu_supports_fp16() {
        assert!(
            std::env::var("QUADRA_REQUIRE_FP16").is_err(),
            "no FEAT_FP16 here"
        );
        return;
    }
    let (correct, pytorch) = correct_at(Dtype::F16, quadra_cpu::Precision::Fp16);
    eprintln!("digits fp16: {correct} correct, PyTorch {pytorch}");
    assert!(
        (correct - pytorch).abs() <= 1,
        "fp16 {correct} correct, PyTorch {pytorch}"
    );
}
