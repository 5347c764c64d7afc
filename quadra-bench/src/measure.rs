//! Measuring a whole network: whole forward passes, each layer within them, the
//! candidate blocks of the search space, and the same pass through a `Session`. The
//! `quadra-bench` binary and the Python package's `benchmark` and `latency_table` both
//! measure with this.

use std::time::Instant;

use quadra_core::arch::{Arch, BlockSpec, Plan};
use quadra_core::block::{BlockDims, BlockWeights};
use quadra_core::net::{run_block, run_block_scratch, Layer};
use quadra_core::{Kernels, Model};
use quadra_cpu::{AlignedF32, GangExec, Layout, Network, RunError, Session};

use crate::lut::block_key;
use crate::random;
use crate::random_weights;

/// What to measure.
#[derive(Clone, Copy, Debug)]
pub struct Opts {
    /// Input `(height, width)`.
    pub input_size: (usize, usize),
    /// Timed runs.
    pub iters: usize,
    /// Untimed warm-up runs.
    pub warmup: usize,
    /// Also time every candidate block of the search space alone.
    pub candidates: bool,
}

/// What one measurement run found (durations in seconds).
pub struct Measured {
    /// Whole forward passes, sorted.
    pub times: Vec<f64>,
    /// Each layer of the model and its duration in every timed run.
    pub layers: Vec<(Layer, Vec<f64>)>,
    /// Each candidate block's key and its sorted durations.
    pub candidates: Vec<(String, Vec<f64>)>,
    /// `Session::run` of the same image, sorted.
    pub session: Vec<f64>,
    /// The arena plan of the measured passes.
    pub plan: Plan,
    /// Where the session's threads ran.
    pub placement: Placed,
}

/// Where a session's threads ran: its `describe()`, cores, pinning, band split (resolved)
/// and final band weights.
pub struct Placed {
    /// The session's `describe()`.
    pub describe: String,
    /// CPUs its threads ran on.
    pub cores: Vec<usize>,
    /// Whether the threads were pinned.
    pub pinned: bool,
    /// The band split, resolved (`even`, `capacity`, `measured`).
    pub bands: &'static str,
    /// Final band weights.
    pub weights: Vec<u32>,
}

/// Measures `net` as `o` asks: whole passes, layers, candidates (one executor,
/// held for all of them), then a session.
pub fn measure(o: &Opts, net: &Network) -> Result<Measured, RunError> {
    let (h, w) = o.input_size;
    let arch = net.config().arch();
    let model = net.model()?;
    let plan = arch.plan_for(h, w, net.threads(), net.weights()?.mats.dtype());
    let (times, layers, candidates) = net.with_executor(|exec| -> Result<_, RunError> {
        let mut arena = AlignedF32::zeros(plan.arena_len());
        let pass = Pass {
            exec,
            model: &model,
            kern: net.kernels(),
            input: random(h * w * arch.in_chans, 11),
            hw: (h, w),
        };
        let mut logits = vec![0.0f32; arch.num_classes];
        let times = pass.whole(o, arena.as_mut_slice(), &mut logits)?;
        let layers = pass.layers(o, arena.as_mut_slice(), &mut logits)?;
        let candidates = if o.candidates {
            candidates(o, exec, net.kernels(), &arch)?
        } else {
            Vec::new()
        };
        Ok((times, layers, candidates))
    })??;
    let (session, placement) = session(o, net)?;
    Ok(Measured {
        times,
        layers,
        candidates,
        session,
        plan,
        placement,
    })
}

/// One image through one model on one executor.
struct Pass<'a, 'g> {
    exec: &'a GangExec<'g>,
    model: &'a Model<'a>,
    kern: Kernels,
    input: Vec<f32>,
    hw: (usize, usize),
}

impl Pass<'_, '_> {
    /// Whole forward passes after the warm-up, sorted.
    fn whole(&self, o: &Opts, arena: &mut [f32], logits: &mut [f32]) -> Result<Vec<f64>, RunError> {
        let (h, w) = self.hw;
        let run = |arena: &mut [f32], logits: &mut [f32]| {
            let t = Instant::now();
            self.model
                .forward_with(self.exec, self.kern, &self.input, h, w, arena, logits)
                .map(|()| t.elapsed().as_secs_f64())
        };
        for _ in 0..o.warmup {
            run(arena, logits)?;
        }
        let mut times = (0..o.iters)
            .map(|_| run(arena, logits))
            .collect::<Result<Vec<_>, _>>()?;
        times.sort_by(f64::total_cmp);
        Ok(times)
    }

    /// Each layer's duration in every timed pass.
    fn layers(
        &self,
        o: &Opts,
        arena: &mut [f32],
        logits: &mut [f32],
    ) -> Result<Vec<(Layer, Vec<f64>)>, RunError> {
        let (h, w) = self.hw;
        let mut layers: Vec<(Layer, Vec<f64>)> = Vec::new();
        for it in 0..o.iters {
            let mut i = 0;
            let mut last = Instant::now();
            let mut observe = |l| {
                let now = Instant::now();
                let dt = (now - last).as_secs_f64();
                last = now;
                if it == 0 {
                    layers.push((l, vec![dt]));
                } else {
                    layers[i].1.push(dt);
                }
                i += 1;
            };
            let (exec, kern, input) = (self.exec, self.kern, &self.input);
            self.model
                .forward_observed(exec, kern, input, h, w, arena, logits, &mut observe)?;
        }
        Ok(layers)
    }
}

/// Every candidate block of the search space (K ∈ {3,5,7}, E ∈ {2,4}) at every stage's
/// shape, alone with random weights, warm from run to run: sorted durations by key.
fn candidates(
    o: &Opts,
    exec: &GangExec<'_>,
    kern: Kernels,
    arch: &Arch<'_>,
) -> Result<Vec<(String, Vec<f64>)>, RunError> {
    let (h, w) = o.input_size;
    let mut out = Vec::new();
    for (s, &(sh, sw)) in Arch::stage_hw(h, w).iter().enumerate() {
        let c = arch.dim(s);
        for k in [3u8, 5, 7] {
            for e in [2u8, 4] {
                let spec = BlockSpec::quadra(k, e);
                let wts = random_weights(spec.weights_len(c), 13);
                let bw = BlockWeights::from_weights(c, k as usize, e as usize, wts.view())?;
                let (k, e) = (k as usize, e as usize);
                let dims = BlockDims {
                    h: sh,
                    w: sw,
                    c,
                    k,
                    e,
                };
                let ts = time_block(o, exec, kern, dims, &bw, &random(sh * sw * c, 17))?;
                out.push((block_key((sh, sw), c, spec), ts));
            }
        }
    }
    Ok(out)
}

/// One block run in place on a copy of `x0`, `o.iters` times after the warm-up: sorted
/// durations.
pub fn time_block(
    o: &Opts,
    exec: &GangExec<'_>,
    kern: Kernels,
    dims: BlockDims,
    bw: &BlockWeights<'_>,
    x0: &[f32],
) -> Result<Vec<f64>, RunError> {
    let (per, total) = run_block_scratch(dims, quadra_core::Executor::width(exec));
    let mut scratch = AlignedF32::zeros(total);
    let mut xa = AlignedF32::zeros(x0.len());
    let x = xa.as_mut_slice();
    let mut ts = Vec::new();
    for i in 0..o.iters + o.warmup {
        x.copy_from_slice(x0);
        let t = Instant::now();
        run_block(exec, kern, dims, bw, x, scratch.as_mut_slice(), per)?;
        if i >= o.warmup {
            ts.push(t.elapsed().as_secs_f64());
        }
    }
    ts.sort_by(f64::total_cmp);
    Ok(ts)
}

/// The same pass through `Session::run` (its own threads; NCHW input, converted inside):
/// what an embedding app and the C API get. Sorted durations, and where it ran.
fn session(o: &Opts, net: &Network) -> Result<(Vec<f64>, Placed), RunError> {
    let (h, w) = o.input_size;
    let mut s = Session::new(net, h, w, 1)?;
    let input = random(s.input_len(), 11);
    for _ in 0..o.warmup {
        s.run(&input, Layout::Nchw)?;
    }
    let mut ts = Vec::with_capacity(o.iters);
    for _ in 0..o.iters {
        let t = Instant::now();
        s.run(&input, Layout::Nchw)?;
        ts.push(t.elapsed().as_secs_f64());
    }
    ts.sort_by(f64::total_cmp);
    let placement = Placed {
        describe: s.describe(),
        cores: s.cores().to_vec(),
        pinned: s.pinned(),
        bands: s.bands().name(),
        weights: s.band_weights(),
    };
    Ok((ts, placement))
}
