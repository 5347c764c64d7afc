//! `quadra infer`: run a `.qnet` model on an `.npy` batch or on images.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use ndarray::Array4;
use quadra_core::Isa;
use quadra_cpu::preprocess::{load_rgb8, Preprocess};
use quadra_cpu::{dispatch, Network};

#[derive(clap::Args)]
pub struct Args {
    /// The .qnet model.
    #[arg(long)]
    model: PathBuf,
    /// Input batch: float32 .npy, NCHW `[N, in_chans, H, W]`; the top classes of each
    /// image are printed.
    #[arg(long, conflicts_with = "image")]
    input: Option<PathBuf>,
    /// Where to write the logits: float32 .npy `[N, num_classes]` (with --image too, one
    /// row per image in order).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Image files (PNG, JPEG; EXIF orientation applied), preprocessed as torchvision's
    /// Resize(--resize) + CenterCrop(--input-size) + ToTensor + Normalize(--mean, --std),
    /// Pillow's bilinear resize to the bit; then the top classes are printed.
    #[arg(long, num_args = 1.., required_unless_present = "input")]
    image: Vec<PathBuf>,
    /// With --image: the model's input size (the centre crop), `224` or `HxW`.
    #[arg(long, default_value = "224", value_parser = quadra_cli::parse_input_size)]
    input_size: (usize, usize),
    /// With --image: the shorter side after resizing [default: 8/7 of the input size, 256 for 224].
    #[arg(long)]
    resize: Option<usize>,
    /// With --image: per-channel mean subtracted after scaling to 0..1.
    #[arg(long, default_value = "0.485,0.456,0.406", value_parser = three)]
    mean: [f32; 3],
    /// With --image: per-channel standard deviation divided by.
    #[arg(long, default_value = "0.229,0.224,0.225", value_parser = three)]
    std: [f32; 3],
    /// Threads (0: one per chosen core).
    #[arg(long, default_value_t = 1, value_parser = quadra_cli::parse_threads)]
    threads: usize,
    /// Cores the threads run on: big (every core but the slowest class; all when they are
    /// equal), little, all, or a CPU list such as 4-7 or 0,2,5.
    #[arg(long, default_value = "big", value_parser = quadra_cpu::cores::Cores::parse)]
    cores: quadra_cpu::cores::Cores,
    /// Kernel path: scalar, avx2, avx512 or neon (default: the best this CPU runs, or
    /// QUADRA_KERNEL).
    #[arg(long)]
    kernel: Option<String>,
    /// Arithmetic: f32, or fp16 (the pointwise GEMMs in half precision on aarch64 CPUs
    /// with FEAT_FP16; f32 elsewhere, saying so). Default: what the model file records.
    #[arg(long, value_parser = quadra_cli::parse_precision)]
    precision: Option<quadra_cpu::Precision>,
    /// How many classes to print per image.
    #[arg(long, default_value_t = 5)]
    top: usize,
}

/// Prints the `top` classes of one image's logits with their softmax probabilities.
fn print_top(logits: &[f32], top: usize) {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let z: f32 = logits.iter().map(|v| (v - m).exp()).sum();
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&i, &j| logits[j].total_cmp(&logits[i]));
    for &i in idx.iter().take(top) {
        println!(
            "  class {i:5}  p = {:.6}  logit {:.7e}",
            (logits[i] - m).exp() / z,
            logits[i]
        );
    }
}

/// Parses three comma-separated floats (`0.485,0.456,0.406`).
fn three(s: &str) -> Result<[f32; 3], String> {
    let v: Vec<f32> = s
        .split(',')
        .map(|x| x.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("'{s}' is not three comma-separated numbers"))?;
    v.try_into()
        .map_err(|_| format!("'{s}' is not three comma-separated numbers"))
}

pub fn run(a: Args) -> Result<()> {
    let mut net = Network::load(&a.model)?
        .with_cores(a.cores.clone())?
        .with_threads(a.threads)?;
    if let Some(name) = &a.kernel {
        let isa = Isa::from_name(name).with_context(|| {
            format!("unknown kernel path '{name}': use scalar, avx2, avx512 or neon")
        })?;
        net = net.with_kernels(dispatch::kernels_for(isa)?);
    }
    if let Some(p) = a.precision {
        net = net.with_precision(p);
    }
    if let Some(input) = &a.input {
        let x = crate::npy::read_nchw(input)?;
        let y = net
            .forward_nchw(x.view())
            .with_context(|| format!("{}", input.display()))?;
        for (i, row) in y.outer_iter().enumerate() {
            println!("image {i}:");
            print_top(&row.to_vec(), a.top);
        }
        if let Some(out) = &a.output {
            crate::npy::write_2d(out, &y)?;
            println!(
                "wrote {} {:?} ({})",
                out.display(),
                y.shape(),
                net.describe()
            );
        }
        return Ok(());
    }
    if net.config().in_chans != 3 {
        bail!(
            "--image needs a 3-channel (RGB) model; this one takes {} channels",
            net.config().in_chans
        );
    }
    let (ch, cw) = a.input_size;
    let prep = Preprocess {
        resize: a.resize.unwrap_or(ch.max(cw) * 8 / 7),
        crop: (ch, cw),
        mean: a.mean,
        std: a.std,
    };
    let mut rows = Vec::new();
    for path in &a.image {
        let (rgb, w, h) = load_rgb8(path)?;
        let x = prep
            .rgb8(&rgb, w, h)
            .with_context(|| format!("{}", path.display()))?;
        let x = Array4::from_shape_vec((1, 3, ch, cw), x).expect("rgb8 gives 3 x crop floats");
        let y = net.forward_nchw(x.view())?;
        let logits = y.row(0).to_vec();
        println!("{} ({w}x{h}):", path.display());
        print_top(&logits, a.top);
        rows.extend(logits);
    }
    if let Some(out) = &a.output {
        let n = a.image.len();
        let y = ndarray::Array2::from_shape_vec((n, rows.len() / n), rows)
            .expect("one row of logits per image");
        crate::npy::write_2d(out, &y)?;
        println!("wrote {} {:?}", out.display(), y.shape());
    }
    Ok(())
}
