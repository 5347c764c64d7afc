//! How many of each vector instruction the int8 and f32 GEMMs lean on this core issues per
//! nanosecond: 12 independent chains of one instruction (enough to hide its latency), so the
//! rate is its issue throughput. `fma` is the f32 GEMM's; `madd` (`vpmaddwd`), `maddubs`
//! (`vpmaddubsw`) and `sign` (`vpsignb`) are what exact int8 on AVX2 without VNNI costs;
//! `sign+maddubs+madd` is the three-op sequence of the sign-moving scheme, counted in
//! sequences. Where `madd` runs at the `fma` rate, an exact int8 product costing two such ops
//! per 32 multiply-adds can reach 2x the FMA's 8 per op, three ops only 1.33x.
//!
//! `cargo bench -p quadra-bench --bench pipes` (x86_64 with AVX2; elsewhere it measures nothing).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;
    use std::hint::black_box;

    const CHAINS: usize = 12;

    macro_rules! chains {
        ($name:ident, $ty:ty, $init:expr, $op:expr) => {
            /// # Safety
            /// The CPU must have AVX2 and FMA.
            #[target_feature(enable = "avx2,fma")]
            pub unsafe fn $name(iters: u64) -> $ty {
                let c = black_box($init);
                let mut acc = [c; CHAINS];
                for _ in 0..iters {
                    for v in acc.iter_mut() {
                        *v = $op(*v, c);
                    }
                }
                black_box(acc)[0]
            }
        };
    }

    chains!(fma, __m256, _mm256_set1_ps(0.5), |v, c| _mm256_fmadd_ps(
        v, c, c
    ));
    chains!(madd, __m256i, _mm256_set1_epi16(3), |v, c| {
        _mm256_madd_epi16(v, c)
    });
    chains!(maddubs, __m256i, _mm256_set1_epi8(3), |v, c| {
        _mm256_maddubs_epi16(v, c)
    });
    chains!(sign, __m256i, _mm256_set1_epi8(-3), |v, c| {
        _mm256_sign_epi8(v, c)
    });
    chains!(sign_maddubs_madd, __m256i, _mm256_set1_epi8(3), |v, c| {
        let p = _mm256_maddubs_epi16(_mm256_abs_epi8(c), _mm256_sign_epi8(v, c));
        _mm256_madd_epi16(p, _mm256_set1_epi16(1))
    });
}

fn pipes(cr: &mut Criterion) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        let iters = 10_000u64;
        let mut g = cr.benchmark_group("pipes");
        g.throughput(Throughput::Elements(iters * 12));
        // SAFETY (every closure below): AVX2 and FMA were detected just above.
        g.bench_function("fma", |b| b.iter(|| unsafe { x86::fma(iters) }));
        g.bench_function("madd", |b| b.iter(|| unsafe { x86::madd(iters) }));
        g.bench_function("maddubs", |b| b.iter(|| unsafe { x86::maddubs(iters) }));
        g.bench_function("sign", |b| b.iter(|| unsafe { x86::sign(iters) }));
        g.bench_function("sign+maddubs+madd", |b| {
            b.iter(|| unsafe { x86::sign_maddubs_madd(iters) })
        });
        g.finish();
    }
    let _ = cr;
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(1));
    targets = pipes
}
criterion_main!(benches);
