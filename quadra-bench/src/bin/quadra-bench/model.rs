//! The network `quadra-bench` measures, from its arguments.

use quadra_bench::random_weights;
use quadra_core::Isa;
use quadra_cpu::config::ArchConfig;
use quadra_cpu::{dispatch, Network};

use crate::{Args, Res};

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
    if let Some(p) = a.precision {
        net = net.with_precision(p);
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
    let (kern, precision) = (net.kernels(), net.precision());
    Ok(Network::new(net.config().clone(), wts)?
        .with_precision(precision)
        .with_kernels(kern))
}
