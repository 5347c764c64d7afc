//! QDW and the pointwise GEMMs (f32 and int8) per kernel path and shape. Run:
//! `cargo bench -p quadra-bench --bench kernels`.

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use quadra_bench::{qdw_flops, qdw_weights, random};
use quadra_core::block::{qdw_forward, qdw_scratch_len};
use quadra_core::kernels::QdwWeights;
use quadra_core::MatData;
use quadra_cpu::AlignedF32;

fn qdw(cr: &mut Criterion) {
    let mut g = cr.benchmark_group("qdw");
    for (c, hw) in [(64usize, 56usize), (128, 28), (256, 14), (512, 7)] {
        for k in [3usize, 5, 7] {
            let (taps, bias) = qdw_weights(k, c);
            let taps = AlignedF32::from(taps);
            let ones = vec![1.0; 3 * c];
            let wts = QdwWeights::new(k, c, MatData::F32(&taps), &ones, &bias).unwrap();
            let x0 = AlignedF32::from(random(hw * hw * c, 3));
            let mut scratch = AlignedF32::zeros(qdw_scratch_len(hw, c, k));
            g.throughput(Throughput::Elements(qdw_flops(hw, hw, c, k)));
            for kern in quadra_cpu::dispatch::available() {
                let id =
                    BenchmarkId::new(format!("{}/k{k}", kern.isa()), format!("c{c}_{hw}x{hw}"));
                g.bench_function(id, |b| {
                    b.iter_batched_ref(
                        || x0.clone(),
                        |x| qdw_forward(kern, hw, hw, &wts, x, scratch.as_mut_slice()).unwrap(),
                        BatchSize::LargeInput,
                    )
                });
            }
        }
    }
    g.finish();
}

/// The pointwise GEMMs of a block strip: PW1 (C -> 4C, bias + GELU) and PW2 (4C -> C,
/// gamma + residual), against matrixmultiply (plain product) on the same shapes.
fn gemm(cr: &mut Criterion) {
    use quadra_core::kernels::{gemm, Epilogue, MatMut, MatRef, PackedB};
    let mut g = cr.benchmark_group("gemm");
    for (m, k, n) in [
        (224usize, 64usize, 256usize),
        (224, 256, 64),
        (196, 128, 512),
        (196, 512, 128),
    ] {
        let a = AlignedF32::from(random(m * k, 1));
        let dense = random(k * n, 2);
        let mut packed = AlignedF32::zeros(PackedB::packed_len(k, n));
        PackedB::pack(k, n, &mut packed, |kk, j| dense[kk * n + j]).unwrap();
        let ones = vec![1.0; n];
        let b = PackedB::new(MatData::F32(&packed), &ones, k, n).unwrap();
        let bias = random(n, 3);
        let mut out = AlignedF32::zeros(m * n);
        g.throughput(Throughput::Elements((2 * m * k * n) as u64));
        let id = format!("m{m}_k{k}_n{n}");
        for kern in quadra_cpu::dispatch::available().into_iter().skip(1) {
            for (label, epi) in [
                ("gelu", Epilogue::BiasGelu(&bias)),
                ("bias", Epilogue::Bias(&bias)),
            ] {
                g.bench_function(
                    BenchmarkId::new(format!("{}/{label}", kern.isa()), &id),
                    |bch| {
                        bch.iter(|| {
                            let am = MatRef::dense(&a, m, k);
                            let om = MatMut::dense(&mut out, m, n);
                            gemm(kern, am, b, epi, om).unwrap()
                        })
                    },
                );
            }
        }
        g.bench_function(BenchmarkId::new("matrixmultiply", &id), |bch| {
            bch.iter(|| {
                // SAFETY: a is m x k, dense k x n, out m x n, all row-major and in bounds.
                unsafe {
                    matrixmultiply::sgemm(
                        m,
                        k,
                        n,
                        1.0,
                        a.as_ptr(),
                        k as isize,
                        1,
                        dense.as_ptr(),
                        n as isize,
                        1,
                        0.0,
                        out.as_mut_ptr(),
                        n as isize,
                        1,
                    )
                }
            })
        });
    }
    g.finish();
}

/// The same block GEMM shapes in int8 (w8a8): the GEMM alone on quantised rows, and with
/// the per-pixel quantisation of its input, on every int8 path this CPU has (the dot
/// extension on and off). Compare with `gemm/` of the same run: same multiply-adds.
fn gemm_q8(cr: &mut Criterion) {
    use quadra_core::kernels::q8::{gemm_q8, quantize_rows, rows_in, scratch_len};
    use quadra_core::kernels::{Epilogue, MatMut, PackedB};
    let mut g = cr.benchmark_group("gemm_q8");
    for (m, k, n) in [
        (224usize, 64usize, 256usize),
        (224, 256, 64),
        (196, 128, 512),
        (196, 512, 128),
    ] {
        let a = AlignedF32::from(random(m * k, 1));
        let dense = random(k * n, 2);
        let mut packed = vec![0i8; PackedB::packed_len(k, n)];
        for kk in 0..k {
            for j in 0..n {
                packed[PackedB::dot_index(k, kk, j)] = (dense[kk * n + j] * 127.0) as i8;
            }
        }
        let scales = vec![1.0 / 127.0; n];
        let b = PackedB::new_dot(&packed, &scales, k, n).unwrap();
        let bias = random(n, 3);
        let mut out = AlignedF32::zeros(m * n);
        let mut qbuf = AlignedF32::zeros(scratch_len(m, k));
        g.throughput(Throughput::Elements((2 * m * k * n) as u64));
        let id = format!("m{m}_k{k}_n{n}");
        let mut kerns = quadra_cpu::dispatch::available();
        let plain: Vec<_> = kerns
            .iter()
            .filter(|k| k.int8_dot())
            .map(|k| k.without_int8_dot())
            .collect();
        kerns.extend(plain);
        for kern in kerns.into_iter().skip(1) {
            let mut q = rows_in(qbuf.as_mut_slice(), m, k).unwrap();
            quantize_rows(kern, &a, k, &mut q).unwrap();
            let q = q.as_ref();
            epilogues(
                &mut g,
                (&id, kern.describe()),
                &bias,
                (&mut out, m, n),
                |epi, om| gemm_q8(kern, q, b, epi, om).unwrap(),
            );
            let mut q2 = AlignedF32::zeros(scratch_len(m, k));
            g.bench_function(
                BenchmarkId::new(format!("{}/quantise+gelu", kern.describe()), &id),
                |bch| {
                    bch.iter(|| {
                        let mut q = rows_in(q2.as_mut_slice(), m, k).unwrap();
                        quantize_rows(kern, &a, k, &mut q).unwrap();
                        let om = MatMut::dense(&mut out, m, n);
                        gemm_q8(kern, q.as_ref(), b, Epilogue::BiasGelu(&bias), om).unwrap()
                    })
                },
            );
        }
        // The AVX-VNNI tiles (256-bit `vpdpbusd`) in their EVEX encoding, on a CPU with
        // AVX-512 VNNI: what an AVX-VNNI CPU's int8 GEMM does, measured where this one can.
        #[cfg(target_arch = "x86_64")]
        if quadra_core::Kernels::evex_vnni_twin_supported() {
            let kern = quadra_cpu::dispatch::available()[1];
            let mut q = rows_in(qbuf.as_mut_slice(), m, k).unwrap();
            quantize_rows(kern, &a, k, &mut q).unwrap();
            let q = q.as_ref();
            epilogues(
                &mut g,
                (&id, "avx2+vnni-evex"),
                &bias,
                (&mut out, m, n),
                |epi, om| {
                    // SAFETY: every feature the twin needs was detected above.
                    unsafe { quadra_core::kernels::q8::gemm_q8_vnni_ymm(q, b, epi, om) }.unwrap()
                },
            );
        }
    }
    g.finish();
}

/// `path/gelu/id` and `path/bias/id`: `run` with each epilogue into the `m x n` output.
fn epilogues(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    (id, path): (&str, &str),
    bias: &[f32],
    (out, m, n): (&mut [f32], usize, usize),
    run: impl Fn(quadra_core::kernels::Epilogue<'_>, quadra_core::kernels::MatMut<'_>),
) {
    use quadra_core::kernels::{Epilogue, MatMut};
    for (label, epi) in [
        ("gelu", Epilogue::BiasGelu(bias)),
        ("bias", Epilogue::Bias(bias)),
    ] {
        g.bench_function(BenchmarkId::new(format!("{path}/{label}"), id), |bch| {
            bch.iter(|| run(epi, MatMut::dense(&mut *out, m, n)))
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(1));
    targets = qdw, gemm, gemm_q8
}
criterion_main!(benches);
