//! The machine's FMA peak, measured: 12 independent chains of fused multiply-adds on the
//! widest vectors the kernel path uses, enough to cover FMA latency on two ports.

use std::time::Instant;

use quadra_core::Isa;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;

    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn avx512(iters: u64) -> f32 {
        let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
        let mut acc = [_mm512_set1_ps(1.0); 12];
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm512_fmadd_ps(*v, a, b);
            }
        }
        acc.iter().map(|v| _mm512_reduce_add_ps(*v)).sum()
    }

    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2(iters: u64) -> f32 {
        let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        let mut acc = [_mm256_set1_ps(1.0); 12];
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm256_fmadd_ps(*v, a, b);
            }
        }
        let mut out = [0.0f32; 8];
        let mut s = 0.0;
        for v in acc {
            _mm256_storeu_ps(out.as_mut_ptr(), v);
            s += out.iter().sum::<f32>();
        }
        s
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use core::arch::aarch64::*;

    /// # Safety
    /// The CPU must have NEON.
    #[target_feature(enable = "neon")]
    pub unsafe fn neon(iters: u64) -> f32 {
        let (a, b) = (vdupq_n_f32(0.999_999), vdupq_n_f32(1e-7));
        let mut acc = [vdupq_n_f32(1.0); 12];
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = vfmaq_f32(b, *v, a);
            }
        }
        acc.iter().map(|v| vaddvq_f32(*v)).sum()
    }
}

/// Scalar multiply-add chains (a multiply and an add, 2 FLOPs, as the scalar kernels do:
/// without the FMA target feature `mul_add` would be a library call).
fn scalar(iters: u64) -> f32 {
    let mut acc = [1.0f32; 12];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = *v * 0.999_999 + 1e-7;
        }
    }
    acc.iter().sum()
}

/// (lanes, run) of the peak loop for `isa` on this CPU.
fn chains(isa: Isa) -> (u64, Box<dyn Fn(u64) -> f32>) {
    if quadra_cpu::dispatch::kernels_for(isa).is_err() {
        return (1, Box::new(scalar));
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: runtime detection just confirmed AVX-512F.
        Isa::Avx512 => (16, Box::new(|n| unsafe { x86::avx512(n) })),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: runtime detection just confirmed AVX2 and FMA.
        Isa::Avx2 => (8, Box::new(|n| unsafe { x86::avx2(n) })),
        #[cfg(target_arch = "aarch64")]
        // SAFETY: runtime detection just confirmed NEON.
        Isa::Neon => (4, Box::new(|n| unsafe { arm::neon(n) })),
        _ => (1, Box::new(scalar)),
    }
}

/// Short samples of the FMA peak, to pair with measurements of a kernel taken between
/// them: on a shared machine the core's speed drifts, and a ratio of two numbers measured
/// seconds apart drifts with it.
pub struct PeakSampler {
    lanes: u64,
    run: Box<dyn Fn(u64) -> f32>,
    iters: u64,
}

impl PeakSampler {
    /// A sampler for the vectors of `isa`, calibrated so that one sample takes about
    /// `seconds`.
    pub fn new(isa: Isa, seconds: f64) -> Self {
        let (lanes, run) = chains(isa);
        let mut iters = 1u64 << 12;
        loop {
            let t = Instant::now();
            std::hint::black_box(run(iters));
            let dt = t.elapsed().as_secs_f64();
            if dt >= seconds / 4.0 || iters >= 1 << 34 {
                iters = ((iters as f64 * seconds / dt.max(1e-9)) as u64).max(1);
                break;
            }
            iters *= 4;
        }
        PeakSampler { lanes, run, iters }
    }

    /// One sample, GFLOP/s (a multiply-add is 2 FLOPs).
    pub fn sample(&self) -> f64 {
        let t = Instant::now();
        std::hint::black_box((self.run)(self.iters));
        let dt = t.elapsed().as_secs_f64();
        (self.iters * 12 * self.lanes * 2) as f64 / dt / 1e9
    }
}

/// Single-core FMA peak in GFLOP/s (a multiply-add is 2 FLOPs) for the vectors of `isa`;
/// the best of twelve runs of about 50 ms.
pub fn fma_peak_gflops(isa: Isa) -> f64 {
    let sampler = PeakSampler::new(isa, 0.05);
    (0..12).map(|_| sampler.sample()).fold(0.0, f64::max)
}
