"""Side by side on this machine: quadra (f32, int8 weight-only storage, w8a8 int8 compute)
against ONNX Runtime (CPU provider, graph optimisations on, same thread count; f32, and its
`quantize_dynamic` int8 model: QUInt8 weights, MatMulInteger) and OpenVINO (f32, CPU plugin)
on the same QuadraNet, exported from the official PyTorch definition with the same weights.
Every f32 runtime must agree with quadra f32 before anything is timed; every int8 model's
logits are compared with f32 by cosine, printed beside its time (and refused below 0.9).

    pip install torch onnx onnxruntime openvino safetensors numpy
    cargo build --release -p quadra-tools -p quadra-bench
    python3 quadra-bench/compare/compare_ort.py                       # QuadraNet25-XXS and 36-T, 1 and 2 threads
    python3 quadra-bench/compare/compare_ort.py --models quadranet36-s --threads 4 --iters 30
    python3 quadra-bench/compare/compare_ort.py --config my.json --weights my.safetensors --input-size 160

--config takes the architecture JSON `quadra convert` takes (a searched config included) and
--weights the state dict of the official PyTorch definition, saved with safetensors (random
weights without it).

Prints one table (median latency per image, batch 1, 224x224) and writes it as JSON with
--json. Timings are medians over --iters runs after warm-up; run it on an idle machine.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "reference"))
from quadranet import QuadraBlock1_dw, QuadraConv, QuadraNet, randomize_  # noqa: E402

SIZES = {"xxs": 16, "xs": 32, "t": 64, "s": 96, "b": 128}


def preset(name):
    family, size = name.split("-")
    depths = {"quadranet25": [2, 3, 18, 2], "quadranet36": [3, 3, 27, 3]}[family]
    c = SIZES[size]
    return {"in_chans": 3, "num_classes": 1000, "dims": [c, 2 * c, 4 * c, 8 * c], "depths": depths,
            "kernel": 7, "expansion": 4}


def parse_size(text):
    h, _, w = text.partition("x")
    try:
        return int(h), int(w or h)
    except ValueError:
        sys.exit(f"--input-size {text!r}: expected N or HxW")


def load_model(cfg, weights, name):
    """The reference PyTorch module for `cfg`, with `weights` (a safetensors state dict) or
    random weights."""
    net = QuadraNet(cfg)
    if weights is None:
        return randomize_(net, 0).eval()
    from safetensors.torch import load_file
    try:
        sd = load_file(str(weights))
        missing, unexpected = net.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
    except (OSError, RuntimeError) as e:
        sys.exit(f"{weights}: cannot be loaded into the architecture of {name}: {e}")
    if missing or unexpected:
        sys.exit(f"{weights}: does not match the architecture of {name}: "
                 f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                 f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    return net.eval()


def ort_median(onnx_path, x, threads, iters, warmup):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    for _ in range(warmup):
        out = sess.run(None, {name: x})
    ts = []
    for _ in range(iters):
        t = time.perf_counter()
        out = sess.run(None, {name: x})
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)) * 1e3, out[0]


def ov_median(onnx_path, x, threads, iters, warmup):
    """OpenVINO's CPU plugin on the ONNX file (read_model: no conversion tool, no telemetry),
    f32 inference precision, latency hint."""
    import openvino as ov
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(onnx_path)), "CPU", {
        "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32"})
    req = compiled.create_infer_request()
    for _ in range(warmup):
        req.infer({0: x})
    ts = []
    for _ in range(iters):
        t = time.perf_counter()
        req.infer({0: x})
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)) * 1e3, np.array(req.get_output_tensor(0).data)


def ort_int8(onnx_path, out_path):
    """ONNX Runtime's dynamic quantisation of the f32 export's MatMuls: QUInt8 weights (its
    QInt8 weights lose accuracy on AVX2, where vpmaddubsw saturates u8 x s8 pair sums)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    # MatMul only (the pointwise layers, as w8a8): with its default op types ConvInteger
    # takes the depthwise convs too, and the model ran twice as slow as f32.
    quantize_dynamic(str(onnx_path), str(out_path), weight_type=QuantType.QUInt8,
                     op_types_to_quantize=["MatMul"])


def cosine(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def export(module, x, path):
    torch.onnx.export(module, (torch.from_numpy(x),), str(path), opset_version=17,
                      input_names=["x"], output_names=["y"], dynamo=False)


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", help="presets (default: quadranet25-xxs quadranet36-t, "
                    "unless --config is given)")
    ap.add_argument("--config", type=pathlib.Path, help="your architecture config (JSON)")
    ap.add_argument("--weights", type=pathlib.Path, help="your weights for --config (safetensors state dict)")
    ap.add_argument("--input-size", default="224", help="N or HxW [default: 224]")
    ap.add_argument("--no-ops", action="store_true", help="skip the lone QDW and QuadraBlock comparisons "
                    "(skipped anyway with --config)")
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", type=pathlib.Path)
    ap.add_argument("--target-dir", type=pathlib.Path, default=ROOT / "target" / "release")
    a = ap.parse_args()
    if a.weights is not None and a.config is None:
        sys.exit("--weights needs --config (the architecture the weights belong to)")
    models = []
    for name in a.models or ([] if a.config else ["quadranet25-xxs", "quadranet36-t"]):
        models.append((name, preset(name), None))
    if a.config is not None:
        try:
            models.append((a.config.stem, json.loads(a.config.read_text()), a.weights))
        except (OSError, ValueError) as e:
            sys.exit(f"--config {a.config}: {e}")
    h, w = parse_size(a.input_size)
    quadra, bench = a.target_dir / "quadra", a.target_dir / "quadra-bench"
    for b in (quadra, bench):
        if not b.exists():
            sys.exit(f"{b} is missing: cargo build --release -p quadra-tools -p quadra-bench")
    torch.set_grad_enabled(False)
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        for name, cfg, weights in models:
            # The same input for every model of the same shape, whatever the order.
            x = np.random.default_rng(0).standard_normal((1, cfg.get("in_chans", 3), h, w), dtype=np.float32)
            net = load_model(cfg, weights, name)
            from safetensors.torch import save_file
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp / f"{name}.safetensors")
            (tmp / f"{name}.json").write_text(json.dumps(cfg))
            qnets = {}
            for dtype in ("f32", "int8", "w8a8"):
                qnets[dtype] = tmp / f"{name}-{dtype}.qnet"
                run([quadra, "convert", "--weights", tmp / f"{name}.safetensors", "--config", tmp / f"{name}.json",
                     "--input-size", f"{h}x{w}", "--dtype", dtype, "--out", qnets[dtype]])
            onnx_path = tmp / f"{name}.onnx"
            export(net, x, onnx_path)
            onnx_int8 = tmp / f"{name}-int8.onnx"
            ort_int8(onnx_path, onnx_int8)
            # Same model, same input: the f32 runtimes must agree before their speeds are
            # compared; the int8 models are measured against f32 by cosine.
            np.save(tmp / "x.npy", x)
            ours = {}
            for dtype, q in qnets.items():
                run([quadra, "infer", "--model", q, "--input", tmp / "x.npy", "--output", tmp / "y.npy"])
                ours[dtype] = np.load(tmp / "y.npy")
            for t in a.threads:
                ort_ms, ort_out = ort_median(onnx_path, x, t, a.iters, a.warmup)
                ort8_ms, ort8_out = ort_median(onnx_int8, x, t, a.iters, a.warmup)
                ov_ms, ov_out = ov_median(onnx_path, x, t, a.iters, a.warmup)
                scale = max(1.0, float(np.abs(ort_out).max()))
                for who, out in [("ONNX Runtime", ort_out), ("OpenVINO", ov_out)]:
                    d = float(np.abs(ours["f32"] - out).max())
                    if not d <= 1e-3 * scale:
                        sys.exit(f"{name}: quadra and {who} disagree in f32 (max abs difference {d:.3g}); "
                                 "timings of different results are not compared")
                diff = float(np.abs(ours["f32"] - ort_out).max())
                cos = {"ort_int8": cosine(ort8_out, ort_out), "quadra_int8": cosine(ours["int8"], ort_out),
                       "quadra_w8a8": cosine(ours["w8a8"], ort_out)}
                for k, c in cos.items():
                    if not c >= 0.9:
                        sys.exit(f"{name}: {k} logits have cosine {c:.4f} against f32: not timed")
                q = {}
                for dtype, path in qnets.items():
                    rep = json.loads(run([bench, "--model", path, "--threads", str(t), "--iters", str(a.iters),
                                          "--warmup", str(a.warmup), "--input-size", f"{h}x{w}", "--json",
                                          "--no-candidates"]))
                    q[dtype] = rep
                q_ms = q["f32"]["latency_ms"]["p50"]
                w8_ms = q["w8a8"]["latency_ms"]["p50"]
                rows.append({"model": name, "threads": t, "ort_ms": ort_ms, "quadra_ms": q_ms,
                             "speedup": ort_ms / q_ms, "quadra_gflops": q["f32"]["gflops"],
                             "fma_peak_gflops_per_core": q["f32"]["fma_peak_gflops_per_core"],
                             "arena_bytes": q["f32"]["arena_bytes"], "max_abs_diff_vs_ort": diff,
                             "ort_int8_ms": ort8_ms, "openvino_ms": ov_ms,
                             "quadra_int8_ms": q["int8"]["latency_ms"]["p50"], "quadra_w8a8_ms": w8_ms,
                             "quadra_w8a8_kernel": q["w8a8"].get("kernel_path"),
                             "w8a8_speedup_vs_quadra_f32": q_ms / w8_ms, "w8a8_speedup_vs_ort_int8": ort8_ms / w8_ms,
                             "w8a8_arena_bytes": q["w8a8"]["arena_bytes"],
                             "cosine_vs_f32": cos})
                f = lambda v: f"{v:8.{2 if v >= 1 else 3}f}"  # noqa: E731
                print(f"{name:16s} {t} thr  ORT {f(ort_ms)} ms  ORT int8 {f(ort8_ms)} ms (cos {cos['ort_int8']:.4f})  "
                      f"OpenVINO {f(ov_ms)} ms  |  quadra {f(q_ms)} ms  int8 {f(q['int8']['latency_ms']['p50'])} ms "
                      f"(cos {cos['quadra_int8']:.4f})  w8a8 {f(w8_ms)} ms (cos {cos['quadra_w8a8']:.4f})  |  "
                      f"f32 vs ORT {ort_ms / q_ms:4.2f}x, w8a8 vs ORT int8 {ort8_ms / w8_ms:4.2f}x, "
                      f"w8a8 vs f32 {q_ms / w8_ms:4.2f}x  (f32 outputs agree to {diff:.1e})", flush=True)
        # One QDW (C=64, 56x56, K=7) and one QuadraBlock (C=64, 56x56, E=4), single thread.
        xo = rng.standard_normal((1, 64, 56, 56), dtype=np.float32)
        for label, mod in [] if a.no_ops or a.config else [("qdw c64 56x56 k7", randomize_(QuadraConv(64, 7), 1)),
                           ("block c64 56x56 k7 e4", randomize_(QuadraBlock1_dw(64, 7, 4), 2))]:
            path = tmp / "op.onnx"
            export(mod.eval(), xo, path)
            ort_ms, ort_y = ort_median(path, xo, 1, a.iters * 5, a.warmup)
            op = "qdw" if label.startswith("qdw") else "block"
            # The same weights and input in quadra: the module's state_dict and the input,
            # channels-last; its output is checked against ONNX Runtime's before the times
            # mean anything.
            from safetensors.torch import save_file
            save_file({k: v.detach().contiguous() for k, v in mod.state_dict().items()}, tmp / "op.safetensors")
            xo[0].transpose(1, 2, 0).astype("<f4").tofile(tmp / "op_in.f32")
            rep = json.loads(run([bench, "--op", f"{op}:64x56x7x4", "--threads", "1", "--iters", str(a.iters * 5),
                                  "--op-weights", str(tmp / "op.safetensors"), "--op-input", str(tmp / "op_in.f32"),
                                  "--op-output", str(tmp / "op_out.f32"), "--json"]))
            q_y = np.fromfile(tmp / "op_out.f32", dtype="<f4").reshape(56, 56, 64).transpose(2, 0, 1)[None]
            # NaN-aware: a NaN anywhere makes the error infinite. The f32 paths agree to ~1e-6.
            err = float(np.max(np.abs(q_y - ort_y))) / (1.0 + float(np.max(np.abs(ort_y))))
            if not np.isfinite(err) or err > 1e-5:
                sys.exit(f"{label}: quadra and ONNX Runtime disagree (relative error {err:.2e}): not timing it")
            q_ms = rep["op_ms"]
            rows.append({"model": label, "threads": 1, "ort_ms": ort_ms, "quadra_ms": q_ms, "speedup": ort_ms / q_ms,
                         "max_rel_error_vs_ort": err,
                         "quadra_gflops": rep["op_gflops"], "fma_peak_gflops_per_core": rep["fma_peak_gflops_per_core"]})
            print(f"{label:22s} 1 thr  ORT {ort_ms:8.3f} ms  quadra {q_ms:8.3f} ms  speedup {ort_ms / q_ms:5.2f}x  "
                  f"({rep['op_gflops']:.1f} GFLOP/s, peak {rep['fma_peak_gflops_per_core']:.1f}; "
                  f"outputs agree to {err:.1e})", flush=True)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
