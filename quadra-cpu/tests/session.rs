//! `Session` gives exactly what `Network::forward_*` gives, for every kernel path, thread
//! count, batch, layout and dtype; mapped and copied model files run the same weights.

mod common;
use common::random;

use ndarray::Array4;
use quadra_core::Dtype;
use quadra_cpu::config::ArchConfig;
use quadra_cpu::file::ModelFile;
use quadra_cpu::weights::{OwnedMats, OwnedWeights};
use quadra_cpu::{dispatch, Layout, Network, Session};

fn weights(cfg: &ArchConfig) -> OwnedWeights {
    let len = cfg.arch().weights_len();
    OwnedWeights {
        vecs: random(len.vecs, 1, 0.5, 1.5).into(),
        mats: OwnedMats::F32(random(len.mats, 2, -0.08, 0.08).into()),
    }
}

fn network(dtype: Dtype) -> Network {
    let cfg = ArchConfig::preset("quadranet25-xxs").unwrap();
    let (w, _) = weights(&cfg).quantize(&cfg.arch(), dtype).unwrap();
    Network::new(cfg, w).unwrap()
}

#[test]
fn session_equals_forward_on_every_path_thread_count_and_layout() {
    let (n, h, w) = (2, 64, 96);
    let x = Array4::from_shape_vec((n, 3, h, w), random(n * 3 * h * w, 3, -2.0, 2.0)).unwrap();
    let nhwc = x
        .view()
        .permuted_axes([0, 2, 3, 1])
        .as_standard_layout()
        .to_owned();
    for dtype in [Dtype::F32, Dtype::W8A8] {
        for kern in dispatch::available() {
            for threads in [1, 2, 3] {
                let net = network(dtype)
                    .with_kernels(kern)
                    .with_threads(threads)
                    .unwrap();
                let want = net.forward_nchw(x.view()).unwrap();
                let feats = net.features(x.view(), Layout::Nchw).unwrap();
                let mut s = Session::new(&net, h, w, n).unwrap();
                assert_eq!((s.input_len(), s.output_len()), (n * 3 * h * w, n * 1000));
                assert_eq!(s.threads(), threads);
                let what = format!("{dtype:?} {} {threads} threads", kern.describe());
                // Twice: the second run reuses the arena and the workers.
                for _ in 0..2 {
                    let got = s.run(x.as_slice().unwrap(), Layout::Nchw).unwrap();
                    assert!(
                        got == want.as_slice().unwrap(),
                        "{what}: NCHW logits differ"
                    );
                }
                let got = s.run(nhwc.as_slice().unwrap(), Layout::Nhwc).unwrap();
                assert!(
                    got == want.as_slice().unwrap(),
                    "{what}: NHWC logits differ"
                );
                let mut f = Session::for_features(&net, h, w, n).unwrap();
                let got = f.run(x.as_slice().unwrap(), Layout::Nchw).unwrap();
                assert!(got == feats.as_slice().unwrap(), "{what}: features differ");
            }
        }
    }
}

#[test]
fn session_refuses_wrong_sizes_with_the_numbers() {
    let net = network(Dtype::F32);
    let e = Session::new(&net, 16, 64, 1).err().unwrap().to_string();
    assert!(e.contains("16x64") && e.contains("at least 32"), "{e}");
    let e = Session::new(&net, 64, 100_000, 1)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("64x100000") && e.contains("at most"), "{e}");
    let e = Session::new(&net, 64, 64, 0).err().unwrap().to_string();
    assert!(e.contains("batch"), "{e}");
    let mut s = Session::new(&net, 64, 64, 1).unwrap();
    let e = s.run(&[0.0; 100], Layout::Nchw).unwrap_err().to_string();
    assert!(e.contains("100 floats") && e.contains("12288"), "{e}");
}

#[test]
fn mapped_and_copied_files_run_the_same_weights() {
    let dir = std::env::temp_dir().join(format!("quadra-map-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (h, w) = (64, 64);
    let x = Array4::from_shape_vec((1, 3, h, w), random(3 * h * w, 5, -2.0, 2.0)).unwrap();
    for dtype in [Dtype::F32, Dtype::F16, Dtype::I8, Dtype::W8A8] {
        let net = network(dtype);
        let want = net.forward_nchw(x.view()).unwrap();
        let bytes = net
            .owned_weights()
            .unwrap()
            .to_qnet(net.config(), "{}")
            .unwrap();
        let path = dir.join(format!("{dtype:?}.qnet"));
        std::fs::write(&path, &bytes).unwrap();
        assert!(ModelFile::open(&path).unwrap().is_mapped());
        let mapped = Network::load(&path).unwrap();
        assert_eq!(mapped.config(), net.config());
        assert!(
            mapped.forward_nchw(x.view()).unwrap() == want,
            "{dtype:?} mapped"
        );
        let copied = Network::from_bytes(&bytes, "memory").unwrap();
        assert!(
            copied.forward_nchw(x.view()).unwrap() == want,
            "{dtype:?} copied"
        );
        let mut s = Session::new(&mapped, h, w, 1).unwrap();
        assert!(s.run(x.as_slice().unwrap(), Layout::Nchw).unwrap() == want.as_slice().unwrap());
        // A corrupt file is refused when it is opened, naming it.
        let mut bad = bytes.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x40;
        std::fs::write(&path, &bad).unwrap();
        let e = Network::load(&path).err().unwrap().to_string();
        assert!(
            e.contains(&path.display().to_string()) && e.contains("checksum"),
            "{e}"
        );
        let e = Network::from_bytes(&bad[..200], "memory")
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("memory: "), "{e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
