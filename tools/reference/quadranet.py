"""QuadraNet as defined by the official PyTorch code (docs/ARCHITECTURE.md: "The model, as computed" and the keys).

Module and parameter names follow the official `QuadraNet` / `QuadraBlock1_dw`, so
`model.state_dict()` has exactly the official checkpoint keys. Blocks may differ per
stage (kernel size) or per block (kernel, expansion, or identity), as the searched
configs of the paper's hardware-aware search do.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerNorm(nn.Module):
    """LayerNorm over channels for NHWC ("channels_last") or NCHW ("channels_first")."""

    def __init__(self, dim, eps=1e-6, data_format="channels_last"):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps
        self.data_format = data_format
        self.dim = (dim,)

    def forward(self, x):
        if self.data_format == "channels_last":
            return F.layer_norm(x, self.dim, self.weight, self.bias, self.eps)
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class QuadraConv(nn.Module):
    """Quadratic depthwise conv: conv1(x) * conv2(x) + conv3(x)."""

    def __init__(self, dim, kernel=7):
        super().__init__()
        pad = kernel // 2
        self.conv1 = nn.Conv2d(dim, dim, kernel, padding=pad, groups=dim)
        self.conv2 = nn.Conv2d(dim, dim, kernel, padding=pad, groups=dim)
        self.conv3 = nn.Conv2d(dim, dim, kernel, padding=pad, groups=dim)

    def forward(self, x):
        return self.conv1(x) * self.conv2(x) + self.conv3(x)


class QuadraBlock1_dw(nn.Module):
    def __init__(self, dim, kernel=7, expansion=4, layer_scale_init_value=1e-6):
        super().__init__()
        self.norm1 = LayerNorm(dim, data_format="channels_first")
        self.QuadraConv = QuadraConv(dim, kernel)
        self.gamma1 = nn.Parameter(layer_scale_init_value * torch.ones(dim))
        self.norm2 = LayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, expansion * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(expansion * dim, dim)
        self.gamma2 = nn.Parameter(layer_scale_init_value * torch.ones(dim))

    def forward(self, x):
        x = x + self.gamma1[:, None, None] * self.QuadraConv(self.norm1(x))
        y = x.permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm2(y))))
        y = self.gamma2 * y
        return x + y.permute(0, 3, 1, 2)


def normalize_blocks(cfg):
    """Per stage, a list of (kernel, expansion) or None for identity, from a config dict
    in the project's JSON schema (dims, depths, kernel, expansion, kernels, blocks)."""
    out = []
    for s in range(4):
        if cfg.get("blocks") is not None:
            stage = []
            for b in cfg["blocks"][s]:
                stage.append(None if b == "identity" else (b["kernel"], b["expansion"]))
            out.append(stage)
        else:
            k = cfg["kernels"][s] if cfg.get("kernels") else cfg.get("kernel", 7)
            out.append([(k, cfg.get("expansion", 4))] * cfg["depths"][s])
    return out


class QuadraNet(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        dims = cfg["dims"]
        in_chans = cfg.get("in_chans", 3)
        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(
            nn.Sequential(
                nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4),
                LayerNorm(dims[0], data_format="channels_first"),
            )
        )
        for i in range(3):
            self.downsample_layers.append(
                nn.Sequential(
                    LayerNorm(dims[i], data_format="channels_first"),
                    nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2),
                )
            )
        self.stages = nn.ModuleList()
        for s, blocks in enumerate(normalize_blocks(cfg)):
            mods = [
                nn.Identity() if b is None else QuadraBlock1_dw(dims[s], b[0], b[1])
                for b in blocks
            ]
            self.stages.append(nn.Sequential(*mods))
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], cfg.get("num_classes", 1000))

    def forward_features(self, x):
        for i in range(4):
            x = self.downsample_layers[i](x)
            x = self.stages[i](x)
        return self.norm(x.mean([-2, -1]))

    def forward(self, x):
        return self.head(self.forward_features(x))


def randomize_(model, seed):
    """Seeded random weights with the quadratic path mattering: LN weights and gammas
    around 1 (not the 1e-6 training init), biases and conv/linear weights at fan-in scale."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "gamma" in name or (p.dim() == 1 and name.endswith("weight")):
                p.copy_(0.7 + 0.6 * torch.rand(p.shape, generator=g))
            else:
                fan_in = p[0].numel() if p.dim() > 1 else p.numel()
                bound = 1.0 / max(fan_in, 1) ** 0.5
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound)
    return model
