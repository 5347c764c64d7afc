//! The unfused baselines compute what the fused kernels compute, so the benches compare
//! equal work.

use quadra_bench::baseline::{block_layer_by_layer, Mixer, UnfusedQdw};
use quadra_bench::{random, random_weights};
use quadra_core::arch::{block_scratch_len, BlockSpec};
use quadra_core::block::{block_forward, qdw_forward, qdw_scratch_len, BlockDims, BlockWeights};
use quadra_core::kernels::QdwWeights;
use quadra_core::MatData;

/// The fused and unfused paths run the same kernels in other orders: a few ulps apart.
fn close(a: &[f32], b: &[f32], tol: f32) {
    quadra_tests::assert_close(a, b, tol, "baseline vs fused");
}

#[test]
fn baselines_compute_the_same_thing() {
    for kern in quadra_cpu::dispatch::available() {
        let (c, h, w, k) = (24, 9, 11, 5);
        let taps = random(QdwWeights::taps_len(k, c), 1);
        let bias = random(3 * c, 2);
        let unfused = UnfusedQdw::from_packed(&taps, &bias, k, c);
        let ones = vec![1.0; 3 * c];
        let wts = QdwWeights::new(k, c, MatData::F32(&taps), &ones, &bias).unwrap();
        let x = random(h * w * c, 3);
        let mut fused = x.clone();
        qdw_forward(
            kern,
            h,
            w,
            &wts,
            &mut fused,
            &mut vec![0.0; qdw_scratch_len(w, c, k)],
        )
        .unwrap();
        let mut y = vec![0.0; x.len()];
        unfused.run(kern, &x, h, w, &mut y).unwrap();
        close(&y, &fused, 1e-5);

        let spec = BlockSpec::quadra(7, 4);
        let bw_owned = random_weights(spec.weights_len(c), 4);
        let bw = BlockWeights::from_weights(c, 7, 4, bw_owned.view()).unwrap();
        let mut streamed = x.clone();
        let d = BlockDims {
            h,
            w,
            c,
            k: 7,
            e: 4,
        };
        block_forward(
            kern,
            d,
            2,
            &bw,
            &mut streamed,
            &mut vec![0.0; block_scratch_len(w, c, 7, 4, 2)],
        )
        .unwrap();
        let mut lbl = x.clone();
        block_layer_by_layer(kern, &bw, &Mixer::Quadratic, (h, w, c), &mut lbl).unwrap();
        close(&lbl, &streamed, 1e-5);
    }
}
