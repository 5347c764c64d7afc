"""Measurements behind the Python package's claims (a benchmark, not a test: it prints,
it asserts nothing about time). Run from the repository root after `pip install ./python`:

    python python/benches/evidence.py [--quick]

1. The GIL is released: two Python threads, each running its own one-thread session,
   against one thread alone; on a machine with 2 free cores the pair takes about as long
   as one (a held GIL would make it twice as long).
2. No growth in memory: RSS after 1,000 and after 10,000 `Session.run` calls.
3. Overhead: `Session.run` from Python against the same session's Rust `Session::run`
   timed in Rust, one call of each in turn, same input, same process, on
   QuadraNet25-XXS at 224 and the digits model at 32x32.
"""

import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

import quadra

ROOT = Path(__file__).resolve().parents[2]
QUICK = "--quick" in sys.argv


def rss_bytes():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return -1


def models():
    fx = ROOT / "tests" / "fixtures"
    xxs = quadra.convert(fx / "quadranet25_xxs.weights.safetensors", "quadranet25-xxs")
    digits = quadra.convert(ROOT / "models" / "digits" / "digits.safetensors",
                            ROOT / "models" / "digits" / "digits.json")
    images = np.load(ROOT / "models" / "digits" / "test_images.npy")
    return [("QuadraNet25-XXS 224x224", xxs, 224, np.random.default_rng(1).standard_normal((1, 3, 224, 224), np.float32)),
            ("digits 32x32", digits, 32, np.ascontiguousarray(images[:1], np.float32))]


def gil(model, size, x, runs):
    def work(s, n, out):
        t = time.perf_counter()
        for _ in range(n):
            s.run(x)
        out.append(time.perf_counter() - t)

    sessions = [model.session(size, size, threads=1) for _ in range(2)]
    for s in sessions:
        s.run(x)
    one = []
    work(sessions[0], runs, one)
    both = []
    ts = [threading.Thread(target=work, args=(s, runs, both)) for s in sessions]
    t = time.perf_counter()
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    pair = time.perf_counter() - t
    return one[0], pair


def rss(model, size, x, runs):
    s = model.session(size, size, threads=1)
    out = np.empty((1, model.architecture["num_classes"]), np.float32)
    for _ in range(1000):
        s.run(x)
    r1 = rss_bytes()
    for _ in range(runs - 1000):
        s.run(x)
    r_new = rss_bytes()
    for _ in range(runs):
        s.run(x, out=out)
    return r1, r_new, rss_bytes()


def bench_input(n, seed=11):
    """quadra_bench::random(n, 11): the input the Rust side times, so both sides run the
    same numbers."""
    m = (1 << 64) - 1
    s = ((seed * 0x9E3779B97F4A7C15) & m) | 1
    out = np.empty(n, np.float32)
    for i in range(n):
        s ^= s >> 12
        s ^= (s << 25) & m
        s ^= s >> 27
        out[i] = ((((s * 0x2545F4914F6CDD1D) & m) >> 40) / float(1 << 23)) - 1.0
    return out


def overhead(model, size, x, calls):
    """Per-call times of `Session.run` called from Python (returning a new array, and
    writing into `out=`), and of the same session's `Session::run` called from Rust
    (`Session._time_rust`), one call of each in turn so that drift in the machine's speed
    hits all three alike. Returns (median, min) in ms of each."""
    s = model.session(size, size, threads=1)
    x = bench_input(x.size).reshape(x.shape)
    out = np.empty((1, model.architecture["num_classes"]), np.float32)
    s._time_rust(x, 10)
    new, into, rust = [], [], []
    for _ in range(calls):
        t = time.perf_counter()
        s.run(x)
        new.append(time.perf_counter() - t)
        t = time.perf_counter()
        s.run(x, out=out)
        into.append(time.perf_counter() - t)
        rust.extend(s._time_rust(x, 1))
    return [(statistics.median(v) * 1e3, min(v) * 1e3) for v in (new, into, rust)], s.describe()


def main():
    print(f"quadra {quadra.__version__}, Python {sys.version.split()[0]}, numpy {np.__version__}")
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"CPU {cpu}, {os.cpu_count()} logical CPUs")
    for name, model, size, x in models():
        print(f"\n== {name} ({model.dtype}, {model.describe(threads=1)})")
        runs = 20 if "XXS" in name else 2000
        if QUICK:
            runs //= 4
        one, pair = gil(model, size, x, runs)
        print(f"GIL: {runs} runs on one thread {one:.3f} s; {runs} runs on each of two threads at once "
              f"{pair:.3f} s = {pair / one:.2f}x one thread's time (2.00x if the GIL were held)")
        if "digits" in name:
            n = 10_000
            r1, r2, r3 = rss(model, size, x, n)
            print(f"RSS: after 1,000 Session.run {r1 / 2**20:.2f} MiB, after {n:,} {r2 / 2**20:.2f} MiB "
                  f"(+{(r2 - r1) / 1024:.0f} KiB), after {n:,} more into out= {r3 / 2**20:.2f} MiB "
                  f"(+{(r3 - r2) / 1024:.0f} KiB)")
        calls = 300 if "XXS" in name else 10_000
        if QUICK:
            calls //= 10
        ((pn, mn), (po, mo), (pr, mr)), kern = overhead(model, size, x, calls)
        print(f"overhead ({kern}; {calls} calls of each, in turn), median (min) ms: "
              f"Python Session.run {pn:.4f} ({mn:.4f}), into out= {po:.4f} ({mo:.4f}); "
              f"Rust Session::run {pr:.4f} ({mr:.4f}): Python {(pn / pr - 1) * 100:+.1f}% "
              f"({(pn - pr) * 1e3:+.1f} us), into out= {(po / pr - 1) * 100:+.1f}% ({(po - pr) * 1e3:+.1f} us)")

if __name__ == "__main__":
    main()
