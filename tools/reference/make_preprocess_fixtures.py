"""Writes tests/fixtures/preprocess/: small synthetic images of awkward sizes and what
torchvision's evaluation transforms make of them (Resize(256), CenterCrop(224), ToTensor,
Normalize with ImageNet's mean/std, on PIL images), for quadra-cpu's preprocessing test.

    pip install torch torchvision pillow numpy
    python tools/reference/make_preprocess_fixtures.py
"""
import json
import pathlib

import numpy as np
import torchvision
import PIL
from PIL import Image, ImageOps
import torchvision.transforms as T

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests/fixtures/preprocess"
OUT.mkdir(parents=True, exist_ok=True)
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
EVAL = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(MEAN, STD)])


def synthetic(w, h, seed):
    """Gradients, rings and a little noise: every resize weight matters, yet PNG stays small."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = np.hypot(x - w * 0.4, y - h * 0.6)
    img = np.stack([
        255 * x / max(w - 1, 1),
        127.5 + 127.5 * np.sin(r / 7.0),
        255 * ((x // 9 + y // 13) % 2) * (y / max(h - 1, 1)),
    ], axis=-1)
    img += rng.integers(0, 2, img.shape)  # a little noise, small enough for PNG to compress
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")


cases = []
for name, (w, h), fmt in [
    ("wide_1000x667", (1000, 667), "png"),   # the size torchvision and a rounding resize disagree on
    ("odd_301x199", (301, 199), "png"),      # short side below 256: upscaled
    ("tall_227x517", (227, 517), "png"),
    ("photo_333x250", (333, 250), "jpeg"),
]:
    img = synthetic(w, h, len(cases))
    path = OUT / f"{name}.{fmt}"
    if fmt == "png":
        img.save(path, optimize=True)
    else:
        img.save(path, quality=90)
    cases.append((name, path))

# A JPEG stored sideways with EXIF orientation 6 (display: rotate 90 clockwise).
upright = synthetic(250, 333, 9)
stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a sideways camera writes
exif = Image.Exif()
exif[0x0112] = 6
path = OUT / "exif6_250x333.jpeg"
stored.save(path, quality=90, exif=exif.tobytes())
cases.append(("exif6_250x333", path))

meta = {"torchvision": torchvision.__version__, "pillow": PIL.__version__, "mean": MEAN, "std": STD, "images": {}}
PIXELS = T.Compose([T.Resize(256), T.CenterCrop(224)])
TENSOR = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])
for name, path in cases:
    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    # The crop's 8-bit pixels: ToTensor + Normalize of them is the whole transform, exactly
    # (checked here), so the fixture stores 150 KB of pixels instead of 600 KB of floats.
    crop = PIXELS(img)
    assert np.array_equal(TENSOR(crop).numpy(), EVAL(img).numpy())
    np.save(OUT / f"{name}.torchvision_u8.npy", np.asarray(crop, dtype=np.uint8))
    entry = {"size": list(img.size), "reference": f"{name}.torchvision_u8.npy"}
    if path.suffix == ".jpeg":
        # PIL's (libjpeg-turbo's) decoded pixels: how far our JPEG decoder is from them.
        np.save(OUT / f"{name}.pil_rgb.npy", np.asarray(img, dtype=np.uint8))
        entry["pil_rgb"] = f"{name}.pil_rgb.npy"
    meta["images"][path.name] = entry
(OUT / "fixtures.json").write_text(json.dumps(meta, indent=1) + "\n")
print("wrote", OUT)
