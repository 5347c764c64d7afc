//! `quadra infer`: run a `.qnet` model on an `.npy` batch or on images.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use ndarray::Array4;
use quadra_core::Isa;
use quadra_cpu::{dispatch, Network};

#[derive(clap::Args)]
pub struct Args {
    /// The .qnet model.
    #[arg(long)]
    model: PathBuf,
    /// Input batch: float32 .npy, NCHW `[N, in_chans, H, W]`.
    #[arg(long, requires = "output", conflicts_with = "image")]
    input: Option<PathBuf>,
    /// Where to write the logits: float32 .npy `[N, num_classes]`.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Image files (PNG, JPEG): ImageNet preprocessing (shorter side 256, centre crop 224,
    /// mean/std), then the top classes are printed.
    #[arg(long, num_args = 1.., required_unless_present = "input")]
    image: Vec<PathBuf>,
    /// Threads (a private pool).
    #[arg(long, default_value_t = 1, value_parser = quadra_cpu::parse_threads)]
    threads: usize,
    /// Kernel path: scalar, avx2, avx512 or neon (default: the best this CPU runs, or
    /// QUADRA_KERNEL).
    #[arg(long)]
    kernel: Option<String>,
    /// How many classes to print per image.
    #[arg(long, default_value_t = 5)]
    top: usize,
}

const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Largest image side, before and after the resize.
const MAX_IMAGE_SIDE: u32 = 16384;
/// Most pixels an image may have (a 64-megapixel RGB image decodes to 192 MiB).
const MAX_IMAGE_PIXELS: u64 = 64 << 20;

/// Standard ImageNet evaluation preprocessing into one NCHW image.
fn preprocess(path: &std::path::Path) -> Result<Array4<f32>> {
    let shown = path.display();
    let bytes = quadra_cpu::read_file(path).with_context(|| format!("cannot read {shown}"))?;
    let reader = || {
        image::ImageReader::new(std::io::Cursor::new(&bytes[..]))
            .with_guessed_format()
            .with_context(|| format!("cannot read image {shown}"))
    };
    // The header's size first: a few hundred bytes can claim gigapixels.
    let (w, h) = reader()?
        .into_dimensions()
        .with_context(|| format!("cannot decode image {shown}"))?;
    if w == 0 || h == 0 {
        bail!("{shown}: empty image");
    }
    if w.max(h) > MAX_IMAGE_SIDE || w as u64 * h as u64 > MAX_IMAGE_PIXELS {
        bail!("{shown}: {w}x{h} pixels, more than {MAX_IMAGE_SIDE} a side or {MAX_IMAGE_PIXELS} in all");
    }
    let img = reader()?
        .decode()
        .with_context(|| format!("cannot decode image {shown}"))?;
    let scale = 256.0 / w.min(h) as f64;
    let (nw, nh) = (
        ((w as f64 * scale).round() as u32).max(224),
        ((h as f64 * scale).round() as u32).max(224),
    );
    if nw.max(nh) > MAX_IMAGE_SIDE {
        bail!("{shown}: {w}x{h} is too elongated: 256 on the short side makes it {nw}x{nh}");
    }
    let rgb = img
        .resize_exact(nw, nh, image::imageops::FilterType::Triangle)
        .to_rgb8();
    let (x0, y0) = ((nw - 224) / 2, (nh - 224) / 2);
    Ok(Array4::from_shape_fn((1, 3, 224, 224), |(_, c, y, x)| {
        let p = rgb.get_pixel(x0 + x as u32, y0 + y as u32).0[c] as f32 / 255.0;
        (p - MEAN[c]) / STD[c]
    }))
}

pub fn run(a: Args) -> Result<()> {
    let mut net = Network::load(&a.model)?.with_threads(a.threads)?;
    if let Some(name) = &a.kernel {
        let isa = Isa::from_name(name).with_context(|| {
            format!("unknown kernel path '{name}': use scalar, avx2, avx512 or neon")
        })?;
        net = net.with_kernels(dispatch::kernels_for(isa)?);
    }
    if let Some(input) = &a.input {
        let x = crate::npy::read_nchw(input)?;
        let y = net
            .forward_nchw(x.view())
            .with_context(|| format!("{}", input.display()))?;
        let out = a
            .output
            .as_ref()
            .expect("clap requires --output with --input");
        crate::npy::write_2d(out, &y)?;
        println!(
            "wrote {} {:?} ({} kernels, {} threads)",
            out.display(),
            y.shape(),
            net.kernels().describe(),
            net.threads()
        );
        return Ok(());
    }
    if net.config().in_chans != 3 {
        bail!(
            "--image needs a 3-channel (RGB) model; this one takes {} channels",
            net.config().in_chans
        );
    }
    for path in &a.image {
        let x = preprocess(path)?;
        let y = net.forward_nchw(x.view())?;
        let logits = y.row(0).to_vec();
        let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let z: f32 = logits.iter().map(|v| (v - m).exp()).sum();
        let mut idx: Vec<usize> = (0..logits.len()).collect();
        idx.sort_by(|&i, &j| logits[j].total_cmp(&logits[i]));
        println!("{}:", path.display());
        for &i in idx.iter().take(a.top) {
            println!(
                "  class {i:5}  p = {:.4}  logit {:.3}",
                (logits[i] - m).exp() / z,
                logits[i]
            );
        }
    }
    Ok(())
}
