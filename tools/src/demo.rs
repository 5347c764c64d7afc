//! `quadra demo`: the bundled w8a8 model, compiled in, run through the no_std core over the
//! held-out digits.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use quadra_core::format::QnetFile;
use quadra_core::Isa;
use quadra_cpu::dispatch;

use crate::bundled;
use quadra_cpu::convert::argmax;

#[derive(clap::Args)]
pub struct Args {
    /// Kernel path: scalar, avx2, avx512 or neon (default: the best this CPU runs).
    #[arg(long)]
    kernel: Option<String>,
    /// How many sample digits to draw.
    #[arg(long, default_value_t = 6)]
    samples: usize,
}

/// Draws a normalised 32x32 digit at 16x8 characters.
fn draw(img: &[f32]) -> Vec<String> {
    const SHADES: &[u8] = b" .:-=+*#%@";
    let (lo, hi) = img
        .iter()
        .fold((f32::MAX, f32::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
    (0..8)
        .map(|r| {
            (0..16)
                .map(|c| {
                    let mut s = 0.0;
                    for y in 4 * r..4 * r + 4 {
                        for x in 2 * c..2 * c + 2 {
                            s += img[y * 32 + x];
                        }
                    }
                    let t = ((s / 8.0 - lo) / (hi - lo).max(1e-6)).clamp(0.0, 0.999);
                    SHADES[(t * SHADES.len() as f32) as usize] as char
                })
                .collect()
        })
        .collect()
}

pub fn run(a: Args) -> Result<()> {
    let kern = match &a.kernel {
        Some(name) => dispatch::kernels_for(
            Isa::from_name(name).with_context(|| format!("unknown kernel path '{name}'"))?,
        )?,
        None => dispatch::default_kernels()?,
    };
    let file = QnetFile::parse(&bundled::MODEL_BYTES.0)?;
    let model = bundled::model()?;
    let meta: serde_json::Value = serde_json::from_str(file.meta).unwrap_or_default();
    let images = crate::npy::read_f32_bytes(bundled::TEST_IMAGES, "bundled test images")?;
    let labels = crate::npy::read_i64_bytes(bundled::TEST_LABELS, "bundled test labels")?;
    let n = labels.len();
    if images.shape() != [n, bundled::IN_CHANS, bundled::INPUT_H, bundled::INPUT_W] {
        bail!("bundled test images have shape {:?}", images.shape());
    }
    let images = images.as_standard_layout();
    let flat = images.as_slice().expect("standard layout");
    let per = bundled::INPUT_LEN;
    // One arena, sized at compile time; one channel, so NCHW is already channels-last.
    let mut arena_buf = quadra_cpu::AlignedF32::zeros(bundled::ARENA_LEN);
    let arena = arena_buf.as_mut_slice();
    let mut logits = [0.0f32; bundled::NUM_CLASSES];
    let mut preds = Vec::with_capacity(n);
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let img = &flat[i * per..(i + 1) * per];
        let t = Instant::now();
        model.forward(
            kern,
            img,
            bundled::INPUT_H,
            bundled::INPUT_W,
            arena,
            &mut logits,
        )?;
        times.push(t.elapsed().as_secs_f64());
        preds.push(argmax(&logits));
    }
    let correct = preds
        .iter()
        .zip(labels.iter())
        .filter(|(p, l)| **p as i64 == **l)
        .count();
    times.sort_by(f64::total_cmp);
    let mean = times.iter().sum::<f64>() / n as f64;
    println!("quadra demo: QuadraNet on scikit-learn handwritten digits (32x32, 10 classes)");
    println!(
        "  model      compiled in, {} matrices, {} bytes, {} parameters",
        file.dtype().name(),
        bundled::MODEL_BYTES.0.len(),
        bundled::ARCH.params()
    );
    println!(
        "  arena      {} bytes (static size: ARENA_LEN = {} floats)",
        bundled::ARENA_LEN * 4,
        bundled::ARENA_LEN
    );
    println!("  kernels    {} (no_std core, 1 thread)", kern.describe());
    println!(
        "  accuracy   {correct}/{n} = {:.2}%",
        100.0 * correct as f64 / n as f64
    );
    if let (Some(pc), Some(pt)) = (meta["correct"].as_u64(), meta["total"].as_u64()) {
        let diff = correct as i64 - pc as i64;
        println!(
            "  PyTorch    {pc}/{pt} = {:.2}% (f32, recorded at training time; {} differs by {diff:+} image(s))",
            100.0 * pc as f64 / pt as f64,
            file.dtype().name()
        );
    }
    println!(
        "  latency    {:.1} us mean, {:.1} us median per image ({:.0} images/s)",
        mean * 1e6,
        times[n / 2] * 1e6,
        1.0 / mean
    );
    let mut show: Vec<usize> = (0..n)
        .filter(|&i| preds[i] as i64 != labels[i])
        .take(a.samples / 2)
        .collect();
    let more: Vec<usize> = (0..n)
        .filter(|i| !show.contains(i))
        .take(a.samples.saturating_sub(show.len()))
        .collect();
    show.extend(more);
    show.sort();
    for chunk in show.chunks(6) {
        println!();
        let drawn: Vec<Vec<String>> = chunk
            .iter()
            .map(|&i| draw(&flat[i * per..(i + 1) * per]))
            .collect();
        for r in 0..8 {
            let line: Vec<&str> = drawn.iter().map(|d| d[r].as_str()).collect();
            println!("  {}", line.join("   "));
        }
        let caps: Vec<String> = chunk
            .iter()
            .map(|&i| {
                let mark = if preds[i] as i64 == labels[i] {
                    "ok"
                } else {
                    "WRONG"
                };
                format!("{:<16}", format!("pred {} {}", preds[i], mark))
            })
            .collect();
        println!("  {}", caps.join("   "));
        let caps: Vec<String> = chunk
            .iter()
            .map(|&i| format!("{:<16}", format!("true {} (#{i})", labels[i])))
            .collect();
        println!("  {}", caps.join("   "));
    }
    Ok(())
}
