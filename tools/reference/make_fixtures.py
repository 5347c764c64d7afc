"""Writes the PyTorch-oracle fixtures under tests/fixtures/ (run from anywhere):

    python3 tools/reference/make_fixtures.py

Each fixture NAME has NAME.json (architecture config, or the QDW/block shape),
NAME.weights.safetensors (state_dict in the official key names) and NAME.io.safetensors
(`input` NCHW float32, `output` float32 from the official definition).
"""
import json
import pathlib
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from quadranet import QuadraConv, QuadraNet, QuadraBlock1_dw, randomize_  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures"


def save(name, meta, module, x, y, dtype=torch.float32):
    OUT.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().to(dtype).contiguous() for k, v in module.state_dict().items()}
    save_file(sd, OUT / f"{name}.weights.safetensors")
    save_file({"input": x.contiguous(), "output": y.detach().contiguous()}, OUT / f"{name}.io.safetensors")
    (OUT / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{name}: max|out| = {y.abs().max().item():.4g}")


def round_weights_(module, dtype):
    """Round weights through `dtype` so the oracle sees exactly what the file stores."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.to(dtype).to(torch.float32))


def main():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1234)
    # QDW alone, odd sizes, K = 3, 5, 7.
    for k, (c, h, w) in zip([3, 5, 7], [(13, 11, 9), (24, 15, 17), (19, 9, 23)]):
        m = randomize_(QuadraConv(c, k), 100 + k)
        x = torch.randn(1, c, h, w, generator=g)
        with torch.no_grad():
            y = m(x)
        save(f"qdw_k{k}", {"kind": "qdw", "kernel": k, "channels": c, "h": h, "w": w}, m, x, y)
    # One block.
    blk = randomize_(QuadraBlock1_dw(40, 7, 4), 200)
    x = torch.randn(1, 40, 14, 13, generator=g)
    with torch.no_grad():
        y = blk(x)
    save("block", {"kind": "block", "kernel": 7, "expansion": 4, "channels": 40, "h": 14, "w": 13}, blk, x, y)

    nets = [
        ("net_small", {"in_chans": 3, "num_classes": 10, "dims": [8, 16, 32, 64], "depths": [1, 1, 2, 1], "kernel": 7, "expansion": 4}, (2, 3, 64, 64), torch.float32),
        ("net_mixed", {"in_chans": 3, "num_classes": 7, "dims": [16, 32, 64, 128], "depths": [2, 1, 2, 1], "kernels": [3, 5, 7, 7], "expansion": 4}, (1, 3, 96, 80), torch.bfloat16),
        ("net_searched", {"in_chans": 1, "num_classes": 10, "dims": [12, 24, 48, 96], "depths": [2, 2, 3, 1],
                          "blocks": [[{"kernel": 3, "expansion": 2}, "identity"],
                                     [{"kernel": 7, "expansion": 4}, {"kernel": 5, "expansion": 2}],
                                     ["identity", {"kernel": 5, "expansion": 4}, {"kernel": 3, "expansion": 2}],
                                     [{"kernel": 7, "expansion": 2}]]}, (1, 1, 64, 64), torch.float32),
        ("quadranet25_xxs", {"in_chans": 3, "num_classes": 1000, "dims": [16, 32, 64, 128], "depths": [2, 3, 18, 2], "kernel": 7, "expansion": 4}, (1, 3, 224, 224), torch.float16),
    ]
    for i, (name, cfg, shape, dtype) in enumerate(nets):
        net = randomize_(QuadraNet(cfg), 300 + i).eval()
        round_weights_(net, dtype)
        x = torch.randn(*shape, generator=g)
        with torch.no_grad():
            y = net(x)
        save(name, {"kind": "net", "config": cfg, "weights_dtype": str(dtype).removeprefix("torch.")}, net, x, y, dtype)


if __name__ == "__main__":
    main()
