"""Trains the bundled default model: a small QuadraNet (official definition) on
scikit-learn's handwritten digits, upsampled from 8x8 to 32x32. No download needed.

    python3 tools/train/train_digits.py            # writes models/digits/

Outputs (all under models/digits/):
  digits.safetensors   state_dict in the official key names (f32)
  digits.json          architecture config (the project's JSON schema)
  test_images.npy      held-out inputs, float32 [N, 1, 32, 32], already normalised
  test_labels.npy      held-out labels, int64 [N]
  pytorch_logits.npy   the trained model's logits on the held-out set, float32 [N, 10]
  train_report.json    PyTorch test accuracy and the training settings
"""
import json
import pathlib
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "reference"))
from quadranet import QuadraNet  # noqa: E402

CONFIG = {"in_chans": 1, "num_classes": 10, "dims": [16, 32, 64, 128], "depths": [1, 1, 2, 1],
          "kernel": 7, "expansion": 4}
SEED, EPOCHS, BATCH, LR = 0, 40, 64, 3e-3
MEAN, STD = 4.8842, 6.0168  # of load_digits pixel values (0..16), fixed for reproducibility


def prepare(x):
    """8x8 uint pixels (0..16) -> normalised float32 [N, 1, 32, 32] (bilinear upsampling)."""
    t = torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 8, 8)
    t = F.interpolate(t, size=(32, 32), mode="bilinear", align_corners=False)
    return ((t - MEAN) / STD).contiguous()


def main():
    import argparse
    ap = argparse.ArgumentParser(description="Train the bundled digits QuadraNet.")
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "models" / "digits",
                    help="output directory (default: models/digits)")
    args = ap.parse_args()
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    torch.set_num_threads(2)
    d = load_digits()
    xtr, xte, ytr, yte = train_test_split(d.data, d.target, test_size=0.2, random_state=SEED, stratify=d.target)
    xtr, xte = prepare(xtr), prepare(xte)
    ytr, yte = torch.tensor(ytr), torch.tensor(yte)
    model = QuadraNet(CONFIG)
    params = sum(p.numel() for p in model.parameters())
    print(f"QuadraNet {CONFIG['dims']} depths {CONFIG['depths']}: {params} parameters, {len(xtr)} train / {len(xte)} test")
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.05)
    steps = EPOCHS * ((len(xtr) + BATCH - 1) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps, pct_start=0.15)
    g = torch.Generator().manual_seed(SEED)
    t0 = time.time()
    for epoch in range(EPOCHS):
        model.train()
        perm = torch.randperm(len(xtr), generator=g)
        for i in range(0, len(xtr), BATCH):
            idx = perm[i:i + BATCH]
            xb = xtr[idx]
            # light augmentation: random shifts of up to 2 pixels
            dx, dy = torch.randint(-2, 3, (2,), generator=g).tolist()
            xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(model(xb), ytr[idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if epoch % 10 == 9 or epoch == EPOCHS - 1:
            model.eval()
            with torch.no_grad():
                acc = (model(xte).argmax(1) == yte).float().mean().item()
            print(f"epoch {epoch + 1:3d}  loss {loss.item():.4f}  test acc {acc * 100:.2f}%  ({time.time() - t0:.0f}s)")
    model.eval()
    with torch.no_grad():
        logits = model(xte)
    correct = int((logits.argmax(1) == yte).sum())
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / "digits.safetensors")
    (out / "digits.json").write_text(json.dumps(CONFIG) + "\n")
    np.save(out / "test_images.npy", xte.numpy().astype(np.float32))
    np.save(out / "test_labels.npy", yte.numpy().astype(np.int64))
    np.save(out / "pytorch_logits.npy", logits.numpy().astype(np.float32))
    report = {"pytorch_test_accuracy": correct / len(yte), "correct": correct, "total": len(yte),
              "parameters": params, "epochs": EPOCHS, "batch": BATCH, "lr": LR, "seed": SEED,
              "input": "load_digits 8x8 -> bilinear 32x32, (x - 4.8842) / 6.0168",
              "torch": torch.__version__}
    (out / "train_report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"PyTorch test accuracy: {correct}/{len(yte)} = {correct / len(yte) * 100:.2f}%")


if __name__ == "__main__":
    main()
