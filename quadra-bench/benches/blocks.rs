//! Fusion, streaming and the price of the quadratic term, then whole networks.
//!
//! `cargo bench -p quadra-bench --bench blocks`
//!
//! * `qdw_fusion`: the one-pass QDW against three depthwise convs + multiply-add.
//! * `block/<shape>`: a QuadraBlock streamed in place against the same block layer by layer
//!   with full intermediates, and a ConvBlock (plain depthwise conv) and a SkipBlock (no
//!   spatial mixing) run layer by layer, as the paper's Table II prices the quadratic term.
//! * `network`: QuadraNet25-XXS and QuadraNet36-T at 224x224, batch 1, 1 and 2 threads.
//!
//! Throughput is in FLOPs (a multiply-add is 2): criterion's "elem/s" are FLOP/s.

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use quadra_bench::baseline::{block_layer_by_layer, Mixer, UnfusedQdw};
use quadra_bench::{qdw_flops, random, random_weights};
use quadra_core::arch::BlockSpec;
use quadra_core::block::{qdw_forward, qdw_scratch_len, BlockDims, BlockWeights};
use quadra_core::kernels::{DwConv, QdwWeights};
use quadra_core::net::{run_block, run_block_scratch};
use quadra_core::{MatData, Serial};
use quadra_cpu::config::ArchConfig;
use quadra_cpu::AlignedF32;
use quadra_cpu::Network;

fn best() -> quadra_core::Kernels {
    quadra_cpu::dispatch::best()
}

fn qdw_fusion(cr: &mut Criterion) {
    let kern = best();
    let mut g = cr.benchmark_group("qdw_fusion");
    let (c, hw, k) = (64, 56, 7);
    let taps = AlignedF32::from(random(QdwWeights::taps_len(k, c), 1));
    let bias = random(3 * c, 2);
    let ones = vec![1.0; 3 * c];
    let wts = QdwWeights::new(k, c, MatData::F32(&taps), &ones, &bias).unwrap();
    let unfused = UnfusedQdw::from_packed(&taps, &bias, k, c);
    let x0 = AlignedF32::from(random(hw * hw * c, 3));
    g.throughput(Throughput::Elements(qdw_flops(hw, hw, c, k)));
    let mut scratch = AlignedF32::zeros(qdw_scratch_len(hw, c, k));
    g.bench_function(BenchmarkId::new("fused", "c64_56x56_k7"), |b| {
        b.iter_batched_ref(
            || x0.clone(),
            |x| qdw_forward(kern, hw, hw, &wts, x, scratch.as_mut_slice()).unwrap(),
            BatchSize::LargeInput,
        )
    });
    let mut y = AlignedF32::zeros(x0.len());
    g.bench_function(BenchmarkId::new("unfused", "c64_56x56_k7"), |b| {
        b.iter(|| unfused.run(kern, &x0, hw, hw, &mut y).unwrap())
    });
    g.finish();
}

fn blocks(cr: &mut Criterion) {
    let kern = best();
    for (c, hw) in [(64usize, 56usize), (128, 28), (256, 14), (512, 7)] {
        let mut g = cr.benchmark_group(format!("block/c{c}_{hw}x{hw}"));
        let spec = BlockSpec::quadra(7, 4);
        let owned = random_weights(spec.weights_len(c), 4);
        let bw = BlockWeights::from_weights(c, 7, 4, owned.view()).unwrap();
        let x0 = AlignedF32::from(random(hw * hw * c, 5));
        let dims = BlockDims {
            h: hw,
            w: hw,
            c,
            k: 7,
            e: 4,
        };
        let (per, total) = run_block_scratch(dims, 1);
        let mut scratch = AlignedF32::zeros(total);
        let quad_flops = 2 * spec.macs(hw, hw, c);
        g.throughput(Throughput::Elements(quad_flops));
        g.bench_function("quadra_streamed", |b| {
            b.iter_batched_ref(
                || x0.clone(),
                |x| run_block(&Serial, kern, dims, &bw, x, scratch.as_mut_slice(), per).unwrap(),
                BatchSize::LargeInput,
            )
        });
        g.bench_function("quadra_layer_by_layer", |b| {
            b.iter_batched_ref(
                || x0.clone(),
                |x| block_layer_by_layer(kern, &bw, &Mixer::Quadratic, (hw, hw, c), x).unwrap(),
                BatchSize::LargeInput,
            )
        });
        let dw_taps = AlignedF32::from(random(49 * c, 6));
        let dw_bias = random(c, 7);
        let conv = DwConv {
            k: 7,
            c,
            taps: &dw_taps,
            bias: &dw_bias,
        };
        let mlp_flops = (hw * hw) as u64 * 2 * 2 * 4 * (c * c) as u64;
        g.throughput(Throughput::Elements(
            mlp_flops + (hw * hw * c) as u64 * 2 * 49,
        ));
        g.bench_function("conv_layer_by_layer", |b| {
            b.iter_batched_ref(
                || x0.clone(),
                |x| block_layer_by_layer(kern, &bw, &Mixer::Linear(conv), (hw, hw, c), x).unwrap(),
                BatchSize::LargeInput,
            )
        });
        g.throughput(Throughput::Elements(mlp_flops));
        g.bench_function("skip_layer_by_layer", |b| {
            b.iter_batched_ref(
                || x0.clone(),
                |x| block_layer_by_layer(kern, &bw, &Mixer::Skip, (hw, hw, c), x).unwrap(),
                BatchSize::LargeInput,
            )
        });
        g.finish();
    }
}

fn networks(cr: &mut Criterion) {
    let mut g = cr.benchmark_group("network");
    g.sample_size(10);
    for name in ["quadranet25-xxs", "quadranet36-t"] {
        let cfg = ArchConfig::preset(name).unwrap();
        let arch = cfg.arch();
        g.throughput(Throughput::Elements(2 * arch.macs(224, 224)));
        let x =
            ndarray::Array4::from_shape_vec((1, 3, 224, 224), random(224 * 224 * 3, 8)).unwrap();
        for threads in [1usize, 2] {
            let net = Network::new(cfg.clone(), random_weights(arch.weights_len(), 9))
                .unwrap()
                .with_threads(threads)
                .unwrap();
            g.bench_function(BenchmarkId::new(name, format!("{threads}_threads")), |b| {
                b.iter(|| net.forward_nchw(x.view()).unwrap())
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(15).warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(2));
    targets = qdw_fusion, blocks, networks
}
criterion_main!(benches);
