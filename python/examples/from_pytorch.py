import numpy as np
import torch
import quadra
from quadranet import QuadraNet  # tools/reference/quadranet.py, or your own definition

config = {"in_chans": 3, "num_classes": 1000, "dims": [16, 32, 64, 128],
          "depths": [2, 3, 18, 2], "kernel": 7, "expansion": 4}   # QuadraNet25-XXS
net = QuadraNet(config).eval()                  # load your trained weights here
x = torch.randn(8, 3, 224, 224)                 # or real images: quadra.preprocess(path)

model = quadra.convert(net.state_dict(), config, dtype="w8a8", min_cosine=0.999,
                       check_input=x.numpy())   # the state_dict as it is, no file
print(model.report["kept_f32"], model.report["accuracy"])   # units kept f32; vs f32

with torch.no_grad():
    want = net(x).numpy()
got = model.run(x.numpy())                      # float32 NCHW in, logits out
cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
print(f"cosine vs PyTorch: min {cos.min():.6f}; top-1 equal "
      f"{(got.argmax(1) == want.argmax(1)).sum()}/{len(x)}")

print(quadra.benchmark(model, threads=1)["latency_ms"])     # median, p10, p90 on this CPU
model.save("quadranet25_xxs_w8a8.qnet")         # for the device: quadra_cpu, the C ABI
model.emit_rust("firmware/src/model")           # or compiled into firmware
