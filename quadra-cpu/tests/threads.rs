//! Results are bit-identical for any thread count and any batch split, and equal to the
//! single-threaded no_std core path.

mod common;
use common::random;

use ndarray::{s, Array4};
use quadra_core::{Kernels, Model};
use quadra_cpu::config::ArchConfig;
use quadra_cpu::weights::{OwnedMats, OwnedWeights};
use quadra_cpu::{dispatch, Layout, Network};

fn network(preset: &str) -> Network {
    let cfg = ArchConfig::preset(preset).unwrap();
    let len = cfg.arch().weights_len();
    let w = OwnedWeights {
        vecs: random(len.vecs, 1, 0.5, 1.5).into(),
        mats: OwnedMats::F32(random(len.mats, 2, -0.08, 0.08).into()),
    };
    Network::new(cfg, w).unwrap()
}

fn core_serial(net: &Network, kern: Kernels, x: &Array4<f32>) -> Vec<Vec<f32>> {
    let arch = net.config().arch();
    let model = Model::new(arch, net.weights().unwrap()).unwrap();
    let (_, _, h, w) = x.dim();
    let mut arena = vec![0.0; arch.arena_len(h, w)];
    x.outer_iter()
        .map(|img| {
            let hwc: Vec<f32> = img.permuted_axes([1, 2, 0]).iter().copied().collect();
            let mut logits = vec![0.0; arch.num_classes];
            model
                .forward(kern, &hwc, h, w, &mut arena, &mut logits)
                .unwrap();
            logits
        })
        .collect()
}

#[test]
fn any_thread_count_and_batch_split_is_bit_identical() {
    let (n, h, w) = (3, 96, 64);
    let x = Array4::from_shape_vec((n, 3, h, w), random(n * 3 * h * w, 3, -2.0, 2.0)).unwrap();
    for kern in dispatch::available() {
        let base = network("quadranet25-xxs").with_kernels(kern);
        let want = core_serial(&base, kern, &x);
        for threads in [1, 2, 3] {
            let net = network("quadranet25-xxs")
                .with_kernels(kern)
                .with_threads(threads)
                .unwrap();
            let batch = net.forward_nchw(x.view()).unwrap();
            for (i, want_i) in want.iter().enumerate() {
                let single = net.forward_nchw(x.slice(s![i..i + 1, .., .., ..])).unwrap();
                let what = format!("{} {threads} threads image {i}", kern.isa());
                assert_eq!(&batch.row(i).to_vec(), want_i, "{what}: batch of {n}");
                assert_eq!(&single.row(0).to_vec(), want_i, "{what}: batch of 1");
            }
            let two = net.forward_nchw(x.slice(s![1..3, .., .., ..])).unwrap();
            assert_eq!(
                two.row(1).to_vec(),
                want[2],
                "{} {threads} threads: batch of 2",
                kern.isa()
            );
            // NHWC input and the pooled features go through the same paths.
            let nhwc = x
                .view()
                .permuted_axes([0, 2, 3, 1])
                .as_standard_layout()
                .to_owned();
            assert_eq!(net.forward_nhwc(nhwc.view()).unwrap(), batch);
            let f1 = net.features(x.view(), Layout::Nchw).unwrap();
            let f = base
                .features(x.slice(s![0..1, .., .., ..]), Layout::Nchw)
                .unwrap();
            assert_eq!(f1.row(0), f.row(0));
        }
    }
}

#[test]
fn bad_inputs_are_reported() {
    let net = network("quadranet25-xxs");
    let e = net
        .forward_nchw(Array4::zeros((1, 4, 64, 64)).view())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("input has 4 channels, the model expects 3"),
        "{e}"
    );
    let e = net
        .forward_nchw(Array4::zeros((1, 3, 31, 64)).view())
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least 32"), "{e}");
}

/// A Rust caller matches on what went wrong instead of parsing the message.
#[test]
fn errors_are_structured() {
    use quadra_cpu::{InputError, RunError, Session};
    let net = network("quadranet25-xxs");
    match net.forward_nchw(Array4::zeros((1, 4, 64, 64)).view()) {
        Err(RunError::Input(InputError::Channels {
            expected: 3,
            found: 4,
            ..
        })) => {}
        other => panic!("{other:?}"),
    }
    match net.forward_nchw(Array4::zeros((1, 3, 31, 64)).view()) {
        Err(RunError::Input(InputError::TooSmall { h: 31, w: 64 })) => {}
        other => panic!("{other:?}"),
    }
    match Network::load("/nonexistent/m.qnet") {
        Err(RunError::Io { path, source }) => {
            assert_eq!(path, "/nonexistent/m.qnet");
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("opened a file that does not exist"),
    }
    match network("quadranet25-xxs").with_threads(17) {
        Err(RunError::Threads {
            requested: 17,
            max: 16,
        }) => {}
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("17 threads accepted"),
    }
    let mut s = Session::new(&net, 64, 64, 1).unwrap();
    match s.run(&[0.0; 5], Layout::Nchw) {
        Err(RunError::Input(InputError::Length {
            expected, found: 5, ..
        })) => assert_eq!(expected, 3 * 64 * 64),
        other => panic!("{other:?}"),
    }
    // A file that is not a model is named in a Model error.
    let p = std::env::temp_dir().join(format!("quadra-not-a-model-{}.qnet", std::process::id()));
    std::fs::write(&p, vec![7u8; 5000]).unwrap();
    match Network::load(&p) {
        Err(RunError::Model { file, reason }) => {
            assert_eq!(file, p.display().to_string());
            assert!(reason.contains("magic"), "{reason}");
        }
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("loaded garbage"),
    }
    let _ = std::fs::remove_file(&p);
}
