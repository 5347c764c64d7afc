"""Coefficients of the half-precision GELU (`Precision::Fp16`, quadra-core `neon_fp16`).

GELU(x) = 0.5·x + |x|·g(|x|) with g(a) = Φ(a) − 0.5 = 0.5·erf(a/√2). g is evaluated in f16
as a quartic on seven segments centred on the integers of u = min(1.75·a, 7) (rounded to
f16): i = round(u) (adding 1024 rounds it, exactly as f16 does), d = u − i in [−0.5, 0.5],
g = c0[i] + d·(c1[i] + d·(c2[i] + d·(c3[i] + d·c4[i]))), each step one f16 rounding
(`fmla .8h`), the coefficients picked per lane by `tbl`. Segment 7 (u >= 6.5, a >= 3.71,
where g rounds to 0.5 in f16) is the constant 0.5.

Each segment is fitted by weighted least squares on a dense grid of d (weight 1/ulp of g,
so the error is even in f16 units), and the coefficients are rounded to f16 from the
highest down, refitting the lower ones after each rounding so they absorb its error.
Prints the Rust table (f16 bit patterns) and the worst error of g evaluated exactly as the
kernel does (every operation rounded to f16), in units of f16 ulps of g.
    python3 scripts/fit_gelu_fp16.py        (needs numpy)
"""
import math

import numpy as np

SEGMENTS, DEGREE, SCALE = 7, 4, 1.75


def g(a):
    return 0.5 * np.vectorize(math.erf)(a / math.sqrt(2.0))


def ulp16(v):
    v = np.abs(v)
    e = np.floor(np.log2(np.maximum(v, 2.0 ** -14)))
    return 2.0 ** (e - 10)


def h(x):
    return np.float64(np.float16(x))


def fit(i):
    d = np.linspace(max(-0.5, -i), 0.5, 4001)
    y = g((i + d) / SCALE)
    w = 1.0 / ulp16(y)
    fixed = {}
    for k in range(DEGREE, -1, -1):
        free = [j for j in range(DEGREE + 1) if j not in fixed]
        rest = y - sum(c * d ** j for j, c in fixed.items())
        A = np.stack([d ** j for j in free], axis=1) * w[:, None]
        sol = np.linalg.lstsq(A, rest * w, rcond=None)[0]
        fixed[k] = h(sol[free.index(k)])
    return [fixed[j] for j in range(DEGREE + 1)]


def eval16(cs, d):
    p = np.full_like(d, cs[DEGREE])
    for k in range(DEGREE - 1, -1, -1):
        p = h(cs[k] + d * p)  # one rounding of the exact d·p + c
    return p


def main():
    table = [fit(i) for i in range(SEGMENTS)] + [[0.5] + [0.0] * DEGREE]
    # Every f16 a in [0, 4.5): u and d as the kernel rounds them.
    a = np.arange(0, 0x4480, dtype=np.uint16).view(np.float16).astype(np.float64)
    u = np.minimum(h(a * SCALE), float(SEGMENTS))
    i = (h(u + 1024.0) - 1024.0).astype(int)
    d = h(u - i)
    got = np.array([eval16(table[s], np.array([dd]))[0] for s, dd in zip(i, d)])
    want = g(a)
    err = np.abs(got - want) / ulp16(want)
    print(f"worst |g16 - g| = {err.max():.3f} ulp of g (at a = {a[err.argmax()]})")
    bits = [[int(np.float16(c).view(np.uint16)) for c in row] for row in table]
    print("const GELU_C: [[u16; 8]; %d] = [" % (DEGREE + 1))
    for k in range(DEGREE + 1):
        print("    [" + ", ".join(f"0x{bits[s][k]:04x}" for s in range(SEGMENTS + 1)) + "],")
    print("];")


main()
