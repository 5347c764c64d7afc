//! Measuring a whole network: the network to measure, whole forward passes, each layer
//! within them, the candidate blocks of the search space, and the same pass through a
//! `Session`.

use std::time::Instant;

use quadra_bench::{random, random_weights};
use quadra_core::arch::{Arch, BlockSpec, Plan};
use quadra_core::block::{BlockDims, BlockWeights};
use quadra_core::net::{run_block, run_block_scratch, Layer};
use quadra_core::{Isa, Kernels, Model};
use quadra_cpu::config::ArchConfig;
use quadra_cpu::{dispatch, AlignedF32, GangExec, Layout, Network, Session};

use crate::lut::block_key;
use crate::{Args, Res};

/// What one measurement run found (durations in seconds).
pub(crate) struct Measured {
    /// Whole forward passes, sorted.
    pub(crate) times: Vec<f64>,
    /// Each layer of the model and its duration in every timed run.
    pub(crate) layers: Vec<(Layer, Vec<f64>)>,
    /// Each candidate block's key and its sorted durations.
    pub(crate) candidates: Vec<(String, Vec<f64>)>,
    /// `Session::run` of the same image, sorted.
    pub(crate) session: Vec<f64>,
    /// The arena plan of the measured passes.
    pub(crate) plan: Plan,
    /// Where the session's threads ran.
    pub(crate) placement: Placed,
}

/// Where a session's threads ran: its `describe()`, cores, pinning, band split (resolved)
/// and final band weights.
pub(crate) struct Placed {
    pub(crate) describe: String,
    pub(crate) cores: Vec<usize>,
    pub(crate) pinned: bool,
    pub(crate) bands: &'static str,
    pub(crate) weights: Vec<u32>,
}

/// The network `--model`, `--config` or `--preset` names (random weights for the last
/// two), with `--dtype`, `--kernel` and `--threads` applied, and its name for reports.
pub(crate) fn network(a: &Args) -> Res<(Network, String)> {
    let (mut net, name) = match (&a.model, &a.preset) {
        (Some(p), _) => (Network::load(p)?, p.display().to_string()),
        (None, _) if a.config.is_some() => {
            let p = a.config.as_ref().expect("checked by the guard");
            let text = quadra_cpu::file::read_file(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            let text =
                String::from_utf8(text).map_err(|_| format!("{}: not UTF-8", p.display()))?;
            let cfg = ArchConfig::from_json(&text).map_err(|e| format!("{}: {e}", p.display()))?;
            let wts = random_weights(cfg.arch().weights_len(), 7);
            let name = format!("{} (random weights)", p.display());
            (Network::new(cfg, wts)?, name)
        }
        (None, preset) => {
            let name = preset.clone().unwrap_or_else(|| "quadranet25-xxs".into());
            let cfg = ArchConfig::preset(&name)?;
            let wts = random_weights(cfg.arch().weights_len(), 7);
            (Network::new(cfg, wts)?, format!("{name} (random weights)"))
        }
    };
    if let Some(d) = a.dtype {
        net = requantized(net, d)?;
    }
    if let Some(k) = &a.kernel {
        let isa = Isa::from_name(k).ok_or_else(|| format!("unknown kernel path '{k}'"))?;
        net = net.with_kernels(dispatch::kernels_for(isa)?);
    }
    let net = net
        .with_cores(a.cores.clone())?
        .with_bands(a.bands)?
        .with_threads(a.threads)?;
    Ok((net, name))
}

/// `net` with its weights stored as `dtype` (f32 weights are converted; others run as
/// stored).
fn requantized(net: Network, dtype: quadra_core::Dtype) -> Res<Network> {
    if net.weights()?.mats.dtype() == dtype {
        return Ok(net);
    }
    let (wts, _) = net.owned_weights()?.quantize(&net.config().arch(), dtype)?;
    let kern = net.kernels();
    Ok(Network::new(net.config().clone(), wts)?.with_kernels(kern))
}

/// Measures `net` as the arguments ask: whole passes, layers, candidates (one executor,
/// held for all of them), then a session.
pub(crate) fn measure(a: &Args, net: &Network) -> Res<Measured> {
    let (h, w) = a.input_size;
    let arch = net.config().arch();
    let model = net.model()?;
    let plan = arch.plan_for(h, w, net.threads(), net.weights()?.mats.dtype());
    let (times, layers, candidates) = net.with_executor(|exec| -> Res<_> {
        let mut arena = AlignedF32::zeros(plan.arena_len());
        let pass = Pass {
            exec,
            model: &model,
            kern: net.kernels(),
            input: random(h * w * arch.in_chans, 11),
            hw: (h, w),
        };
        let mut logits = vec![0.0f32; arch.num_classes];
        let times = pass.whole(a, arena.as_mut_slice(), &mut logits)?;
        let layers = pass.layers(a, arena.as_mut_slice(), &mut logits)?;
        let candidates = if a.no_candidates {
            Vec::new()
        } else {
            candidates(a, exec, net.kernels(), &arch)?
        };
        Ok((times, layers, candidates))
    })??;
    let (session, placement) = session(a, net)?;
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
    fn whole(&self, a: &Args, arena: &mut [f32], logits: &mut [f32]) -> Res<Vec<f64>> {
        let (h, w) = self.hw;
        let run = |arena: &mut [f32], logits: &mut [f32]| {
            let t = Instant::now();
            self.model
                .forward_with(self.exec, self.kern, &self.input, h, w, arena, logits)
                .map(|()| t.elapsed().as_secs_f64())
        };
        for _ in 0..a.warmup {
            run(arena, logits)?;
        }
        let mut times = (0..a.iters)
            .map(|_| run(arena, logits))
            .collect::<Result<Vec<_>, _>>()?;
        times.sort_by(f64::total_cmp);
        Ok(times)
    }

    /// Each layer's duration in every timed pass.
    fn layers(
        &self,
        a: &Args,
        arena: &mut [f32],
        logits: &mut [f32],
    ) -> Res<Vec<(Layer, Vec<f64>)>> {
        let (h, w) = self.hw;
        let mut layers: Vec<(Layer, Vec<f64>)> = Vec::new();
        for it in 0..a.iters {
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
    a: &Args,
    exec: &GangExec<'_>,
    kern: Kernels,
    arch: &Arch<'_>,
) -> Res<Vec<(String, Vec<f64>)>> {
    let (h, w) = a.input_size;
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
                let ts = time_block(a, exec, kern, dims, &bw, &random(sh * sw * c, 17))?;
                out.push((block_key((sh, sw), c, spec), ts));
            }
        }
    }
    Ok(out)
}

/// One block run in place on a copy of `x0`, `--iters` times after the warm-up: sorted
/// durations.
pub(crate) fn time_block(
    a: &Args,
    exec: &GangExec<'_>,
    kern: Kernels,
    dims: BlockDims,
    bw: &BlockWeights<'_>,
    x0: &[f32],
) -> Res<Vec<f64>> {
    let (per, total) = run_block_scratch(dims, quadra_core::Executor::width(exec));
    let mut scratch = AlignedF32::zeros(total);
    let mut xa = AlignedF32::zeros(x0.len());
    let x = xa.as_mut_slice();
    let mut ts = Vec::new();
    for i in 0..a.iters + a.warmup {
        x.copy_from_slice(x0);
        let t = Instant::now();
        run_block(exec, kern, dims, bw, x, scratch.as_mut_slice(), per)?;
        if i >= a.warmup {
            ts.push(t.elapsed().as_secs_f64());
        }
    }
    ts.sort_by(f64::total_cmp);
    Ok(ts)
}

/// The same pass through `Session::run` (its own threads; NCHW input, converted inside):
/// what an embedding app and the C API get. Sorted durations, and where it ran.
fn session(a: &Args, net: &Network) -> Res<(Vec<f64>, Placed)> {
    let (h, w) = a.input_size;
    let mut s = Session::new(net, h, w, 1)?;
    let input = random(s.input_len(), 11);
    for _ in 0..a.warmup {
        s.run(&input, Layout::Nchw)?;
    }
    let mut ts = Vec::with_capacity(a.iters);
    for _ in 0..a.iters {
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
