//! The command lines' shared parsing and process setup (`quadra`, `quadra-bench`): not a
//! library API.

use quadra_cpu::{MAX_INPUT_SIDE, MAX_THREADS};

/// Parses an input size given as `224` or `224x160` (H x W) for command lines; sizes
/// under 32 (QuadraNet downsamples by 32) are refused.
pub fn parse_input_size(s: &str) -> Result<(usize, usize), String> {
    let (h, w) = s.split_once('x').unwrap_or((s, s));
    let p = |v: &str| {
        v.trim()
            .parse::<usize>()
            .map_err(|_| format!("'{s}' is not a size like 224 or 224x160"))
    };
    let (h, w) = (p(h)?, p(w)?);
    if h < 32 || w < 32 {
        return Err(format!(
            "input size {h}x{w} is too small: QuadraNet downsamples by 32"
        ));
    }
    if h > MAX_INPUT_SIDE || w > MAX_INPUT_SIDE {
        return Err(format!(
            "input size {h}x{w} is too large: at most {MAX_INPUT_SIDE} a side here"
        ));
    }
    Ok((h, w))
}

/// Parses a count that must be at least 1 (timed runs, images) for command lines.
pub fn parse_count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{s}' is not a whole number")),
    }
}

/// Parses a thread count for command lines: 0 (one per chosen core) to [`MAX_THREADS`].
pub fn parse_threads(s: &str) -> Result<usize, String> {
    let n = s
        .trim()
        .parse::<usize>()
        .map_err(|_| format!("'{s}' is not a whole number"))?;
    match n {
        n if n > MAX_THREADS => Err(format!(
            "{n} threads: at most {MAX_THREADS} (a layer is split into at most {MAX_THREADS} \
             bands of rows, one per thread)"
        )),
        n => Ok(n),
    }
}

/// Makes a write to a closed standard output (`quadra inspect m.qnet | head -1`) end the
/// program quietly with the conventional status 141 (128 + SIGPIPE) instead of a panic:
/// Rust ignores SIGPIPE, so `print!` panics on the broken pipe. Call first in `main`;
/// every other panic still reaches the previous hook.
pub fn exit_quietly_on_broken_pipe() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        previous(info);
    }));
}

/// Parses `--precision`: `f32` or `fp16` (half-precision GEMMs on aarch64 CPUs with
/// FEAT_FP16; f32 elsewhere, which the run's description says).
pub fn parse_precision(s: &str) -> Result<quadra_core::Precision, String> {
    quadra_core::Precision::from_name(s)
        .ok_or_else(|| format!("unknown precision '{s}': use f32 or fp16"))
}

/// Parses a weight dtype name (`f32`, `f16`, `int8`, `w8a8`) for command lines.
pub fn parse_dtype(s: &str) -> Result<quadra_core::Dtype, String> {
    quadra_core::Dtype::from_name(s).ok_or_else(|| {
        format!("unknown dtype '{s}': use f32, f16, int8 (weight-only) or w8a8 (int8 compute)")
    })
}
