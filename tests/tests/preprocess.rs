//! `quadra_cpu::preprocess` against torchvision's evaluation transforms (Resize(256),
//! CenterCrop(224), ToTensor, Normalize on PIL images), on the committed images of
//! `tests/fixtures/preprocess` (written by `tools/reference/make_preprocess_fixtures.py`).

use std::path::PathBuf;

use ndarray::Array3;
use ndarray_npy::read_npy;
use quadra_cpu::preprocess::{load_rgb8, Preprocess};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/preprocess")
}

/// The crop's pixels as our tensor: ToTensor + Normalize of torchvision's 8-bit crop.
fn normalised(p: &Preprocess, crop: &Array3<u8>) -> Vec<f32> {
    let (h, w, _) = crop.dim();
    let mut out = vec![0f32; 3 * h * w];
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                let v = crop[[y, x, c]] as f32 / 255.0;
                out[(c * h + y) * w + x] = (v - p.mean[c]) / p.std[c];
            }
        }
    }
    out
}

/// Largest difference in uint8 levels between two normalised tensors (NaN-aware: a NaN is
/// an infinite difference).
fn levels(p: &Preprocess, a: &[f32], b: &[f32], plane: usize) -> f32 {
    a.iter()
        .zip(b)
        .enumerate()
        .map(|(i, (x, y))| {
            let d = (x - y).abs() * p.std[i / plane] * 255.0;
            if d.is_nan() {
                f32::INFINITY
            } else {
                d
            }
        })
        .fold(0.0, f32::max)
}

fn fixtures() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("fixtures.json")).unwrap()).unwrap()
}

#[test]
fn png_images_preprocess_to_torchvisions_pixels_exactly() {
    let p = Preprocess::default();
    let mut seen = 0;
    for (file, entry) in fixtures()["images"].as_object().unwrap() {
        if !file.ends_with(".png") {
            continue;
        }
        let (rgb, w, h) = load_rgb8(&dir().join(file)).unwrap();
        assert_eq!(
            [w, h],
            [
                entry["size"][0].as_u64().unwrap() as usize,
                entry["size"][1].as_u64().unwrap() as usize
            ]
        );
        let ours = p.rgb8(&rgb, w, h).unwrap();
        let crop: Array3<u8> = read_npy(dir().join(entry["reference"].as_str().unwrap())).unwrap();
        assert_eq!(crop.dim(), (224, 224, 3));
        let want = normalised(&p, &crop);
        // PNG decodes losslessly and the resize is Pillow's integer arithmetic: the same
        // bits, not merely within a level.
        let d = levels(&p, &ours, &want, 224 * 224);
        assert!(d == 0.0, "{file}: {d} uint8 levels from torchvision");
        seen += 1;
    }
    assert_eq!(seen, 3);
}

#[test]
fn jpeg_images_are_as_close_to_pil_as_their_decoders_allow() {
    let p = Preprocess::default();
    let mut seen = 0;
    for (file, entry) in fixtures()["images"].as_object().unwrap() {
        if !file.ends_with(".jpeg") {
            continue;
        }
        let (rgb, w, h) = load_rgb8(&dir().join(file)).unwrap();
        // EXIF orientation applied: the fixture's size is the upright one.
        let pil: Array3<u8> = read_npy(dir().join(entry["pil_rgb"].as_str().unwrap())).unwrap();
        assert_eq!((h, w, 3), pil.dim(), "{file}: upright size");
        // Our decoder (zune-jpeg, through `image`) against PIL's libjpeg-turbo: IDCT and
        // chroma upsampling differ. Measured on these images: at most 7 levels per pixel
        // (mean 0.36); the bound says so with one level of room.
        let diffs: Vec<i32> = rgb
            .iter()
            .zip(pil.iter())
            .map(|(&a, &b)| (a as i32 - b as i32).abs())
            .collect();
        let max = *diffs.iter().max().unwrap();
        let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
        assert!(
            max <= 8 && mean < 1.0,
            "{file}: decoded pixels differ by up to {max} (mean {mean:.3})"
        );
        // The preprocessed pixels, decoder differences and all.
        let ours = p.rgb8(&rgb, w, h).unwrap();
        let crop: Array3<u8> = read_npy(dir().join(entry["reference"].as_str().unwrap())).unwrap();
        let d = levels(&p, &ours, &normalised(&p, &crop), 224 * 224);
        // Measured: at most 4 levels after the resize has averaged the decoder's errors.
        assert!(d <= 5.0, "{file}: {d} levels from torchvision");
        // And through PIL's decoded pixels, our resize and crop give torchvision's exactly.
        let (ph, pw, _) = pil.dim();
        let flat: Vec<u8> = pil.iter().copied().collect();
        let via_pil = p.rgb8(&flat, pw, ph).unwrap();
        assert!(
            levels(&p, &via_pil, &normalised(&p, &crop), 224 * 224) == 0.0,
            "{file}"
        );
        eprintln!(
            "{file}: decoder max {max} levels (mean {mean:.3}); preprocessed max {d:.2} levels"
        );
        seen += 1;
    }
    assert_eq!(seen, 2);
}
