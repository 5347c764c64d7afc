//! QDW per kernel path and shape. Run: `cargo bench -p quadra-bench --bench kernels`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quadra_bench::{qdw_flops, qdw_weights, random};
use quadra_core::block::{qdw_forward, qdw_scratch_len};
use quadra_core::kernels::QdwWeights;
use quadra_core::MatData;

fn qdw(cr: &mut Criterion) {
    let mut g = cr.benchmark_group("qdw");
    for (c, hw) in [(64usize, 56usize), (128, 28), (256, 14), (512, 7)] {
        for k in [3usize, 5, 7] {
            let (taps, bias) = qdw_weights(k, c);
            let ones = vec![1.0; 3 * c];
            let wts = QdwWeights::new(k, c, MatData::F32(&taps), &ones, &bias).unwrap();
            let x0 = random(hw * hw * c, 3);
            let mut scratch = vec![0.0; qdw_scratch_len(hw, c, k)];
            g.throughput(Throughput::Elements(qdw_flops(hw, hw, c, k)));
            for kern in quadra_cpu::dispatch::available() {
                let id =
                    BenchmarkId::new(format!("{}/k{k}", kern.isa()), format!("c{c}_{hw}x{hw}"));
                let mut x = x0.clone();
                g.bench_function(id, |b| {
                    b.iter(|| {
                        x.copy_from_slice(&x0);
                        qdw_forward(kern, hw, hw, &wts, &mut x, &mut scratch).unwrap()
                    })
                });
            }
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(1));
    targets = qdw
}
criterion_main!(benches);
