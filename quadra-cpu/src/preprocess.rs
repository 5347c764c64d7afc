//! Image preprocessing as torchvision does it for evaluation:
//! `Resize(resize)` (shorter side to `resize`, the longer one truncated as torchvision
//! computes it; bilinear with antialias, in Pillow's 8-bit fixed point), `CenterCrop(crop)`
//! (offsets rounded half to even, as Python's `round`), `ToTensor` (/255) and
//! `Normalize(mean, std)`, giving an NCHW `[1, 3, crop_h, crop_w]` tensor.
//!
//! The resize follows Pillow's `ImagingResample` for 8-bit images exactly: per output pixel
//! a triangle filter widened by the downscale factor (so shrinking averages every source
//! pixel it covers: the antialias), its weights computed in double precision, normalised,
//! then rounded to 22-bit fixed point; a horizontal pass and then a vertical pass, each
//! rounding to 8 bits. Same integers in, same integers out: on decoded pixels the result is
//! PIL's to the bit (tested against torchvision on committed images).
//!
//! [`Preprocess`] works on pixels you already hold. Decoding files (`load_rgb8`, PNG and
//! JPEG) needs the `image` feature: `quadra-cpu = { version = "0.1", features = ["image"] }`
//! (the CLI enables it; the C library and embedders that have pixels leave it out).

use crate::{InputError, RunError};

/// Pillow's fixed-point precision for 8-bit resampling: 32 - 8 - 2 bits.
const PRECISION_BITS: u32 = 22;

/// One axis of a resample: for each output index, the first source index and the
/// fixed-point weights of the source pixels it reads.
struct Axis {
    bounds: Vec<(usize, usize)>,
    ksize: usize,
    weights: Vec<i32>,
}

/// Pillow's `precompute_coeffs` for the bilinear (triangle, support 1) filter and
/// `normalize_coeffs_8bpc`.
fn axis(in_size: usize, out_size: usize) -> Axis {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // the triangle's support, 1, widened
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // Pillow truncates toward zero after adding 0.5 (`(int)` of a double).
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(xmax) {
            let t = ((x + xmin) as f64 - center + 0.5) * ss;
            let w = if t.abs() < 1.0 { 1.0 - t.abs() } else { 0.0 };
            *kx = w;
            ww += w;
        }
        for (x, kx) in k.iter().enumerate().take(xmax) {
            let v = if ww != 0.0 { kx / ww } else { *kx };
            let f = v * (1u32 << PRECISION_BITS) as f64;
            weights[xx * ksize + x] = if v < 0.0 {
                (-0.5 + f) as i32
            } else {
                (0.5 + f) as i32
            };
        }
        bounds.push((xmin, xmax));
    }
    Axis {
        bounds,
        ksize,
        weights,
    }
}

/// `ss >> PRECISION_BITS`, clamped to 0..=255 (Pillow's `clip8`).
fn clip8(ss: i32) -> u8 {
    (ss >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes an 8-bit RGB image (`w x h`, row-major, 3 bytes a pixel) to `nw x nh` exactly
/// as Pillow's `Image.resize((nw, nh), Image.BILINEAR)`.
pub fn resize_bilinear_rgb8(src: &[u8], w: usize, h: usize, nw: usize, nh: usize) -> Vec<u8> {
    let half = 1i32 << (PRECISION_BITS - 1);
    // Horizontal pass (skipped when the width stays, as in Pillow).
    let horiz: std::borrow::Cow<'_, [u8]> = if nw == w {
        std::borrow::Cow::Borrowed(src)
    } else {
        let ax = axis(w, nw);
        let mut out = vec![0u8; h * nw * 3];
        for y in 0..h {
            let row = &src[y * w * 3..(y + 1) * w * 3];
            for (xx, &(xmin, n)) in ax.bounds.iter().enumerate() {
                let k = &ax.weights[xx * ax.ksize..xx * ax.ksize + n];
                for c in 0..3 {
                    let mut ss = half;
                    for (x, &kx) in k.iter().enumerate() {
                        ss += row[(xmin + x) * 3 + c] as i32 * kx;
                    }
                    out[(y * nw + xx) * 3 + c] = clip8(ss);
                }
            }
        }
        std::borrow::Cow::Owned(out)
    };
    if nh == h {
        return horiz.into_owned();
    }
    // Vertical pass.
    let ay = axis(h, nh);
    let mut out = vec![0u8; nh * nw * 3];
    let row = nw * 3;
    for (yy, &(ymin, n)) in ay.bounds.iter().enumerate() {
        let k = &ay.weights[yy * ay.ksize..yy * ay.ksize + n];
        for i in 0..row {
            let mut ss = half;
            for (y, &ky) in k.iter().enumerate() {
                ss += horiz[(ymin + y) * row + i] as i32 * ky;
            }
            out[yy * row + i] = clip8(ss);
        }
    }
    out
}

/// Python's `round` for a non-negative half-integer or integer `2·v / 2`: half to even.
fn round_half_even(twice: usize) -> usize {
    let (q, r) = (twice / 2, twice % 2);
    if r == 1 && q % 2 == 1 {
        q + 1
    } else {
        q
    }
}

/// Evaluation preprocessing (see the module docs); the default is ImageNet's
/// `Resize(256)`, `CenterCrop(224)`, mean `[0.485, 0.456, 0.406]`, std
/// `[0.229, 0.224, 0.225]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocess {
    /// The shorter side after resizing.
    pub resize: usize,
    /// `(height, width)` of the centre crop: the model's input size.
    pub crop: (usize, usize),
    /// Per-channel mean, subtracted after scaling to 0..1.
    pub mean: [f32; 3],
    /// Per-channel standard deviation, divided by.
    pub std: [f32; 3],
}

impl Default for Preprocess {
    fn default() -> Self {
        Preprocess {
            resize: 256,
            crop: (224, 224),
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }
}

/// Largest image side taken (before and after the resize).
pub const MAX_IMAGE_SIDE: usize = 16384;

impl Preprocess {
    /// ImageNet preprocessing for a square input of `size` pixels, resizing the shorter
    /// side to `size / 0.875` (256 for 224), as the usual evaluation transforms do.
    pub fn imagenet(size: usize) -> Self {
        Preprocess {
            resize: size * 8 / 7,
            crop: (size, size),
            ..Self::default()
        }
    }

    /// torchvision's `Resize(resize)` output size for a `w x h` image: the shorter side
    /// becomes `resize`, the longer `int(resize * long / short)`.
    pub fn resized_size(&self, w: usize, h: usize) -> (usize, usize) {
        let (short, long) = if w <= h { (w, h) } else { (h, w) };
        // int() of the float product, as torchvision: exact for these integer sizes except
        // where the float rounds, which the f64 reproduces.
        let new_long = (self.resize as f64 * long as f64 / short as f64) as usize;
        if w <= h {
            (self.resize, new_long)
        } else {
            (new_long, self.resize)
        }
    }

    /// Preprocesses an 8-bit RGB image (`w x h`, row-major HWC, 3 bytes a pixel, e.g. what
    /// an app's camera or decoder gives) into NCHW floats `[1, 3, crop_h, crop_w]`.
    pub fn rgb8(&self, pixels: &[u8], w: usize, h: usize) -> Result<Vec<f32>, RunError> {
        self.check()?;
        if w == 0 || h == 0 || pixels.len() != w * h * 3 {
            return Err(InputError::Other(format!(
                "an RGB image of {w}x{h} needs {} bytes, found {}",
                w * h * 3,
                pixels.len()
            ))
            .into());
        }
        let (nw, nh) = self.resized_size(w, h);
        if nw.max(nh) > MAX_IMAGE_SIDE {
            return Err(InputError::Other(format!(
                "{w}x{h} is too elongated: {} on the short side makes it {nw}x{nh}, more than {MAX_IMAGE_SIDE}",
                self.resize
            )).into());
        }
        let (ch, cw) = self.crop;
        if cw > nw || ch > nh {
            return Err(InputError::Other(format!(
                "a {cw}x{ch} crop does not fit the {nw}x{nh} resized image (resize {} is smaller than the crop)",
                self.resize
            )).into());
        }
        let resized = resize_bilinear_rgb8(pixels, w, h, nw, nh);
        // torchvision: crop_top = int(round((H - ch) / 2.0)), likewise left.
        let (top, left) = (round_half_even(nh - ch), round_half_even(nw - cw));
        let mut out = vec![0f32; 3 * ch * cw];
        for c in 0..3 {
            let (m, s) = (self.mean[c], self.std[c]);
            for y in 0..ch {
                for x in 0..cw {
                    let p = resized[((top + y) * nw + left + x) * 3 + c] as f32 / 255.0;
                    out[(c * ch + y) * cw + x] = (p - m) / s;
                }
            }
        }
        Ok(out)
    }

    fn check(&self) -> Result<(), RunError> {
        let (ch, cw) = self.crop;
        if ch == 0 || cw == 0 || self.resize == 0 || self.resize > MAX_IMAGE_SIDE {
            return Err(InputError::Other(format!(
                "preprocessing needs a resize of 1..={MAX_IMAGE_SIDE} and a non-empty crop (resize {}, crop {cw}x{ch})",
                self.resize
            )).into());
        }
        if let Some(c) = (0..3)
            .find(|&c| !(self.std[c].is_finite() && self.std[c] > 0.0 && self.mean[c].is_finite()))
        {
            return Err(InputError::Other(format!(
                "channel {c}: mean {} and std {} must be finite, std above zero",
                self.mean[c], self.std[c]
            ))
            .into());
        }
        Ok(())
    }
}

/// Most pixels a decoded image may have (a 64-megapixel RGB image is 192 MiB).
#[cfg(feature = "image")]
pub const MAX_IMAGE_PIXELS: u64 = 64 << 20;

/// Decodes a PNG or JPEG file into 8-bit RGB (`(pixels, width, height)`), its EXIF
/// orientation applied (a phone photo stored sideways comes out upright). Sizes are checked
/// from the header before anything is decoded.
#[cfg(feature = "image")]
pub fn load_rgb8(path: &std::path::Path) -> Result<(Vec<u8>, usize, usize), RunError> {
    let bytes = crate::file::read_file(path).map_err(|source| RunError::Io {
        path: path.display().to_string(),
        source,
    })?;
    decode_rgb8(&bytes, &path.display().to_string())
}

/// [`load_rgb8`] of an image already in memory; `shown` names it in errors.
#[cfg(feature = "image")]
pub fn decode_rgb8(bytes: &[u8], shown: &str) -> Result<(Vec<u8>, usize, usize), RunError> {
    use image::ImageDecoder;
    let bad = |e: image::ImageError| {
        RunError::Input(InputError::Other(format!(
            "cannot decode image {shown}: {e}"
        )))
    };
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|source| RunError::Io {
            path: shown.to_string(),
            source,
        })?;
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_complete(bytes) {
        // The decoder fills a truncated scan with grey and says nothing.
        return Err(InputError::Other(format!(
            "cannot decode image {shown}: the JPEG is truncated (no end-of-image marker after its last scan)"
        )).into());
    }
    let mut decoder = reader.into_decoder().map_err(bad)?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(InputError::Other(format!("{shown}: empty image")).into());
    }
    if w.max(h) as usize > MAX_IMAGE_SIDE || w as u64 * h as u64 > MAX_IMAGE_PIXELS {
        return Err(InputError::Other(format!(
            "{shown}: {w}x{h} pixels, more than {MAX_IMAGE_SIDE} a side or {MAX_IMAGE_PIXELS} in all"
        )).into());
    }
    let orientation = decoder.orientation().map_err(bad)?;
    let mut img = image::DynamicImage::from_decoder(decoder).map_err(bad)?;
    img.apply_orientation(orientation);
    let rgb = img.to_rgb8();
    let (w, h) = rgb.dimensions();
    Ok((rgb.into_raw(), w as usize, h as usize))
}

/// Does a JPEG stream end its last scan with an end-of-image marker (`FF D9`)? Markers
/// cannot occur inside entropy-coded data (an `FF` there is followed by `00`), so the last
/// start-of-scan (`FF DA`) is the main image's, and a complete file has `FF D9` after it
/// (an EXIF thumbnail's own markers come before).
#[cfg(feature = "image")]
fn jpeg_complete(b: &[u8]) -> bool {
    let find_last = |m: u8| b.windows(2).rposition(|w| w[0] == 0xFF && w[1] == m);
    match (find_last(0xDA), find_last(0xD9)) {
        (Some(sos), Some(eoi)) => eoi > sos,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchvision_size_and_crop_rules() {
        let p = Preprocess::default();
        // The case: 1000x667 becomes 383x256 (torchvision truncates), not 384.
        assert_eq!(p.resized_size(1000, 667), (383, 256));
        assert_eq!(p.resized_size(667, 1000), (256, 383));
        assert_eq!(p.resized_size(300, 300), (256, 256));
        // (383 - 224) / 2 = 79.5 rounds to 80 (even); 80.5 rounds to 80 too.
        assert_eq!((round_half_even(159), round_half_even(161)), (80, 80));
        assert_eq!((round_half_even(32), round_half_even(1)), (16, 0));
        assert_eq!(Preprocess::imagenet(224).resize, 256);
    }

    #[test]
    fn resize_keeps_a_flat_image_flat_and_weights_sum_to_one() {
        for (w, h, nw, nh) in [
            (7, 5, 3, 2),
            (5, 7, 13, 11),
            (640, 427, 383, 256),
            (1, 1, 4, 4),
        ] {
            let img = vec![173u8; w * h * 3];
            let out = resize_bilinear_rgb8(&img, w, h, nw, nh);
            assert_eq!(out.len(), nw * nh * 3);
            assert!(out.iter().all(|&v| v == 173), "{w}x{h} -> {nw}x{nh}");
            let ax = axis(w, nw);
            for (i, &(_, n)) in ax.bounds.iter().enumerate() {
                let s: i64 = ax.weights[i * ax.ksize..i * ax.ksize + n]
                    .iter()
                    .map(|&v| v as i64)
                    .sum();
                assert!((s - (1 << PRECISION_BITS)).abs() <= n as i64, "{s}");
            }
        }
    }

    #[test]
    fn bad_buffers_and_settings_are_refused_by_name() {
        let p = Preprocess::default();
        let e = p.rgb8(&[0; 10], 2, 2).unwrap_err().to_string();
        assert!(e.contains("2x2 needs 12 bytes, found 10"), "{e}");
        let q = Preprocess {
            std: [0.2, 0.0, 0.2],
            ..p.clone()
        };
        let e = q.rgb8(&[0; 12], 2, 2).unwrap_err().to_string();
        assert!(e.contains("channel 1"), "{e}");
        let q = Preprocess { resize: 100, ..p };
        let e = q
            .rgb8(&[0; 300 * 300 * 3], 300, 300)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not fit"), "{e}");
    }
}
