"""Writes quadra-core/src/kernels/neon_qdw.rs: the NEON QDW tap loop for one full group of
7 pixels x 4 channels, as inline assembly with every register placed by hand.

    python3 scripts/gen_neon_qdw.py            # rewrite the file
    python3 scripts/gen_neon_qdw.py --check    # exit 1 if the file is not what this writes

Why assembly: the group needs 21 accumulators (7 pixels x 3 filters), the window of input
vectors it slides along the tap row and the three tap vectors: 31 of NEON's 32 registers.
LLVM's scheduler hoists the loads of later taps and spills: the Rust loop, fully unrolled
over K = 7, modeled (llvm-mca, Neoverse-N1) at 47% of the A76's fmla peak with 419 stack
accesses per group. Here the registers are fixed:

* v0-v6, v7-v13, v14-v20: the accumulators of filters a, b, c for pixels 0..6;
* v21-v27: the input window; pixel j of a tap row lives in v(21 + j mod 7), loaded once per
  row and used by every tap that reads it (K taps), so a tap row of K taps loads 7 + K - 1
  input vectors and each tap after the first loads one;
* v28-v30: the three filters' vectors of the current tap.

The arithmetic is the Rust loop's, operation for operation: the first tap multiplies, each
later tap is one fused multiply-add per accumulator, taps in row-major order (ky, then kx).
So the sums are bit-identical to the generic kernel's (tested against it and the scalar
reference under qemu).

`Precision::Fp16` has its own tap loop (`taps_k*_fp16`, FEAT_FP16): the same registers and
walk, eight channels a vector (`fmla .8h`), f16 taps (scales folded in), inputs from
half-precision rows (32 bytes a pixel); and its own epilogue (`finish_fp16_*`), which widens
the f16 sums to f32 first.

Taps are read either in the packed layout (f32 taps: filter f of tap t at
`((t*3 + f) * 16 + lane)` floats from the chunk's start, `CBLOCK` = 16) or compact (f16 and
int8 taps widened once per channel chunk into a stack buffer: `(t*3 + f) * 4 + lane`).
"""
import pathlib
import subprocess
import sys

OUT = pathlib.Path(__file__).resolve().parent.parent / "quadra-core/src/kernels/neon_qdw.rs"
Q = 7  # pixels per group
PIXEL = 64  # bytes between pixels of a channel-blocked row (CBLOCK floats)
HALF_PIXEL = 32  # ... of a half-precision row (CBLOCK halves)


# v21-v31 are the window, tap and epilogue registers: scratch to the compiler.
SCRATCH = [f'            out("v{i}") _,' for i in range(21, 32)]

# A tap row's input pointer: `rows[ky] + off`, made when the row starts (rows alternate
# between two registers, as the next row's first pixels load while the last tap of the
# row before still reads its own), so the group loop keeps one pointer for all K rows.
ROW_REG = ("{ra}", "{rb}")


def row_pointer(ky):
    reg = ROW_REG[ky % 2]
    return [f"ldr {reg}, [{{rows}}, #{8 * ky}]", f"add {reg}, {reg}, {{off}}"]


def body_compact(k, half=False):
    """Compact taps: each tap loads its three vectors at once (`ld1` of three registers,
    walking a copy of the tap pointer), taps in row-major order, pixel by pixel within a
    tap.

    With `half` (`Precision::Fp16`, FEAT_FP16): eight channels per vector, `fmla .8h`. The
    chunk's buffer: the three filters' biases in f16, each as 7 vectors (168 halves), then
    the taps, f16, `(t*3 + f) * 8` halves on (rounded from f32, scales folded in, once per
    channel chunk); the sums start at the biases. Inputs: the f16 ring (`block_row` and LayerNorm round the rows
    to f16 as they write them), a pixel's eight channels one 16-byte load, pixels
    `HALF_PIXEL` bytes apart."""
    lanes, pixel = ("8h", HALF_PIXEL) if half else ("4s", PIXEL)
    lines = ["mov {wp}, {w}"]
    if half:
        # The sums start at the filters' f16 biases: 21 vectors before the taps (filter
        # f's bias repeated for the 7 pixels, so in the order of v0-v20), four registers a
        # load; every tap, the first too, is then a multiply-add.
        for r in range(0, 20, 4):
            regs = ", ".join(f"v{r + i}.8h" for i in range(4))
            lines.append(f"ld1 {{{{{regs}}}}}, [{{wp}}], #64")
        lines.append("ld1 {{v20.8h}}, [{wp}], #16")
    for ky in range(k):
        row = ROW_REG[ky % 2]
        for kx in range(k):
            t = ky * k + kx
            if kx == 0:
                lines += row_pointer(ky)
            lines.append(f"ld1 {{{{v28.{lanes}, v29.{lanes}, v30.{lanes}}}}}, [{{wp}}], #48")
            new = range(Q) if kx == 0 else [kx + Q - 1]
            for j in new:
                lines.append(f"ldr q{21 + j % Q}, [{row}, #{j * pixel}]")
            op = "fmul" if t == 0 and not half else "fmla"
            for q in range(Q):
                x = 21 + (q + kx) % Q
                for f in range(3):
                    lines.append(f"{op} v{f * Q + q}.{lanes}, v{28 + f}.{lanes}, v{x}.{lanes}")
    return lines


def body_pipelined(k, tap_stride):
    """Packed taps (one load each): software-pipelined. A tap's products go filter by
    filter, and each register is reloaded for the next tap as soon as its last reader has
    issued: the three tap vectors rotate through v28-v31 (tap n uses v28 + (3n + f) mod 4,
    so the next tap's first vector goes to the one register this tap leaves free), and a
    window slot takes its next pixel right after the last product that reads it."""
    taps = [(ky, kx) for ky in range(k) for kx in range(k)]

    def wreg(n, f):
        return 28 + (3 * n + f) % 4

    def wload(n, f):
        return f"ldr q{wreg(n, f)}, [{{w}}, #{(n * 3 + f) * tap_stride}]"

    def xload(ky, j):
        return f"ldr q{21 + j % Q}, [{ROW_REG[ky % 2]}, #{j * PIXEL}]"

    lines = [wload(0, f) for f in range(3)] + row_pointer(0) + [xload(0, j) for j in range(Q)]
    for n, (ky, kx) in enumerate(taps):
        last = n + 1 == len(taps)
        op = "fmul" if n == 0 else "fmla"
        if not last:
            lines.append(wload(n + 1, 0))  # into the register this tap leaves free
        for f in range(3):
            for q in range(Q):
                x = 21 + (q + kx) % Q
                lines.append(f"{op} v{f * Q + q}.4s, v{wreg(n, f)}.4s, v{x}.4s")
                if f == 2 and not last:
                    # Pixel q + kx is read for the last time by this tap.
                    nky, nkx = taps[n + 1]
                    if nky == ky and q == 0:
                        lines.append(xload(ky, kx + Q))
                    elif nky != ky:
                        if q == 0:
                            lines += row_pointer(nky)
                        lines.append(xload(nky, (q + kx) % Q))
            if f < 2 and not last:
                lines.append(wload(n + 1, f + 1))  # over this tap's filter f, now read
    return lines


def function(k, layout):
    """The tap loop of one group, `layout` "packed", "compact" or "fp16"."""
    compact = layout != "packed"
    name = f"taps_k{k}_{layout}"
    stride = 64
    doc = {"compact": "compact: tap vector `(t·3 + f)·4` floats in",
           "packed": "packed: tap vector `(t·3 + f)·16` floats in (`CBLOCK` = 16)",
           "fp16": "fp16: the sums start at 21 f16 bias vectors (filter a's for pixels 0-6, then\n/// b's, c's), then tap vector `(t·3 + f)·8` halves (FEAT_FP16; eight channels, the sums\n/// eight f16 lanes a register) in"}[layout]
    half = layout == "fp16"
    isa, chans = ("NEON and FEAT_FP16 (enabled in the calling leaf)", "eight") if half else ("NEON", "four")
    wty, vty, zero = ("u16", "uint16x8_t", "vdupq_n_u16(0)") if half else ("f32", "float32x4_t", "vdupq_n_f32(0.0)")
    pixel = HALF_PIXEL if half else PIXEL
    out = [
        f"/// K = {k}, taps {doc}; see the module comment.",
        "///",
        "/// # Safety",
        f"/// {isa}; `rows[ky] + off` bytes valid for {Q + k - 1} pixels of {chans} channels of a",
        f"/// channel-blocked row ({pixel} bytes apart), `w` for the {k * k * 3}"
        + (" tap vectors after the 21 bias vectors." if half else " tap vectors."),
        "#[inline(always)]",
        f"pub(super) unsafe fn {name}(rows: &[*const {wty}; {k}], off: usize, w: *const {wty}) -> [{vty}; 21] {{",
        f"    // SAFETY: {isa.split(' (')[0]} is the caller's; the loads stay in the caller's valid ranges (offsets",
        "    // within the documented lengths); every register written is an output or a clobber.",
        "    unsafe {",
        f"        let mut o = [{zero}; 21];",
        "        core::arch::asm!(",
    ]
    out.append(f'            "// quadra-mca: qdw_taps_k{k}_{layout}",')
    body = {"compact": lambda: body_compact(k), "fp16": lambda: body_compact(k, half=True),
            "packed": lambda: body_pipelined(k, stride)}[layout]()
    for line in body:
        out.append(f'            "{line}",')
    out.append("            rows = in(reg) rows.as_ptr(),")
    out.append("            off = in(reg) off,")
    out.append("            ra = out(reg) _,")
    out.append("            rb = out(reg) _,")
    out.append("            w = in(reg) w,")
    if compact:
        out.append("            wp = out(reg) _,")
    for i in range(21):
        out.append(f'            out("v{i}") o[{i}],')
    out += SCRATCH
    out.append("            options(pure, readonly, nostack, preserves_flags)")
    out.append("        );")
    out.append("        o")
    out.append("    }")
    out.append("}")
    return out


def finish(unit, gamma):
    """The group's epilogue over the tap sums in v0-v20: `y = (a*sa + ba)(b*sb + bb) +
    (c*sc + bc)`, fused exactly as the Rust epilogue (`vc + va*vb`; with unit scales `a + ba`,
    which is `fma(a, 1, ba)`), stored or added as `out += gamma * y`; pixels `stride` bytes
    apart."""
    name = f"finish_{'unit' if unit else 'scaled'}_{'gamma' if gamma else 'store'}"
    lines = [f"// quadra-mca: qdw_{name}"]
    # Filters a, b, c of the scales and biases are `stride` bytes apart (C floats), so one
    # pointer each, walked through p (two registers fewer for the loop to keep).
    for reg, ptr in ((21, "b"), (24, "s")) if not unit else ((21, "b"),):
        lines += [f"ld1 {{{{v{reg}.4s}}}}, [{{{ptr}}}]",
                  f"add {{p}}, {{{ptr}}}, {{st}}",
                  f"ld1 {{{{v{reg + 1}.4s}}}}, [{{p}}]",
                  "add {p}, {p}, {st}",
                  f"ld1 {{{{v{reg + 2}.4s}}}}, [{{p}}]"]
    if gamma:
        lines.append("ld1 {{v31.4s}}, [{g}]")
    for q in range(Q):
        a, b, c = q, Q + q, 2 * Q + q
        if unit:
            lines += [f"fadd v{a}.4s, v{a}.4s, v21.4s",
                      f"fadd v{b}.4s, v{b}.4s, v22.4s",
                      f"fadd v{c}.4s, v{c}.4s, v23.4s",
                      f"fmla v{c}.4s, v{a}.4s, v{b}.4s"]
            y = c
        else:
            lines += ["mov v27.16b, v21.16b", f"fmla v27.4s, v{a}.4s, v24.4s",
                      "mov v28.16b, v22.16b", f"fmla v28.4s, v{b}.4s, v25.4s",
                      "mov v29.16b, v23.16b", f"fmla v29.4s, v{c}.4s, v26.4s",
                      "fmla v29.4s, v27.4s, v28.4s"]
            y = 29
        # Pixel q's address is in o (q even) or p (q odd), each made from the other by an
        # add: a post-indexed store would chain every address behind the previous store's
        # data, serialising the pixels.
        at, nxt = ("o", "p") if q % 2 == 0 else ("p", "o")
        if q + 1 < Q:
            lines.append(f"add {{{nxt}}}, {{{at}}}, {{st}}")
        if gamma:
            lines += [f"ld1 {{{{v30.4s}}}}, [{{{at}}}]", f"fmla v30.4s, v31.4s, v{y}.4s",
                      f"st1 {{{{v30.4s}}}}, [{{{at}}}]"]
        else:
            lines.append(f"st1 {{{{v{y}.4s}}}}, [{{{at}}}]")
        if q + 1 == Q:
            # After the last store through it: o becomes the next group's pixel 0.
            lines.append(f"add {{o}}, {{{at}}}, {{st}}")
    out = [
        f"/// The epilogue, {'unit' if unit else 'per-channel'} scales, "
        f"{'adding gamma times the result' if gamma else 'storing'}; see `finish` in the generator.",
        "///",
        "/// # Safety",
        "/// NEON; `out` valid for 7 pixels `stride` bytes apart, `f`'s pointers for their vectors.",
        "/// Returns the next group's `out` (7 pixels on).",
        "#[inline(always)]",
        f"pub(super) unsafe fn {name}(t: [float32x4_t; 21], mut out: *mut f32, f: &Finish) -> *mut f32 {{",
        "    // SAFETY: NEON is the caller's; every access stays in the ranges `f` promises;",
        "    // every register written is an operand or a clobber.",
        "    unsafe {",
        "        core::arch::asm!(",
    ]
    return out + finish_tail(lines, scales=not unit, gamma=gamma)


def finish_tail(lines, scales, gamma, bias=True):
    """An epilogue's assembly lines and its operands (the scales pointer if `scales`, gamma's
    if `gamma`, the biases' if `bias`), closing the function."""
    out = [f'            "{line}",' for line in lines]
    out.append("            o = inout(reg) out,")
    out.append("            p = out(reg) _,")
    out.append("            st = in(reg) f.stride,")
    if bias:
        out.append("            b = in(reg) f.bias,")
    if scales:
        out.append("            s = in(reg) f.scales,")
    if gamma:
        out.append("            g = in(reg) f.gamma,")
    for i in range(21):
        out.append(f'            inout("v{i}") t[{i}] => _,')
    out += SCRATCH
    out.append("            options(nostack, preserves_flags)")
    out.append("        );")
    out.append("    }")
    out.append("    out")
    out.append("}")
    return out


def finish_fp16(gamma):
    """The half-precision group's epilogue (`Precision::Fp16`): the f16 sums in v0-v20
    (eight channels each; the scales are folded into the taps, the biases are where the
    sums started) widened exactly to f32 (`fcvtl` for channels 0-3, `fcvtl2` for 4-7),
    then `y = a·b + c` as `vc + va*vb`, stored or added as `out += gamma * y`; pixels
    `stride` bytes apart, channels 4-7 16 bytes on. (Adding the biases here, in f32, was
    six `fadd` a pixel: the K = 7 group modeled at 82.8% of the `.8h` peak.)"""
    name = f"finish_fp16_{'gamma' if gamma else 'store'}"
    lines = [f"// quadra-mca: qdw_{name}"]
    # Gamma in v27 / v28; v29-v31 the widened sums.
    if gamma:
        lines += ["ldr q27, [{g}]", "ldr q28, [{g}, #16]"]
    for q in range(Q):
        at, nxt = ("o", "p") if q % 2 == 0 else ("p", "o")
        if q + 1 < Q:
            lines.append(f"add {{{nxt}}}, {{{at}}}, {{st}}")
        for hi in (0, 1):
            cvt, lanes, off = ("fcvtl2", "8h", 16) if hi else ("fcvtl", "4h", 0)
            for f, t in enumerate((29, 30, 31)):
                lines.append(f"{cvt} v{t}.4s, v{f * Q + q}.{lanes}")
            lines.append("fmla v31.4s, v29.4s, v30.4s")
            addr = f"[{{{at}}}, #{off}]" if off else f"[{{{at}}}]"
            if gamma:
                lines += [f"ldr q29, {addr}", f"fmla v29.4s, v{28 if hi else 27}.4s, v31.4s",
                          f"str q29, {addr}"]
            else:
                lines.append(f"str q31, {addr}")
        if q + 1 == Q:
            lines.append(f"add {{o}}, {{{at}}}, {{st}}")
    out = [
        f"/// The half-precision epilogue, {'adding gamma times the result' if gamma else 'storing'}; "
        "see `finish_fp16` in the generator.",
        "///",
        "/// # Safety",
        "/// NEON and FEAT_FP16 (the caller's leaf); `out` valid for 7 pixels of 8 channels `stride`",
        "/// bytes apart, `f`'s gamma pointer for its 8 channels (scales and biases unused).",
        "/// Returns the next group's `out` (7 pixels on).",
        "#[inline(always)]",
        f"pub(super) unsafe fn {name}(t: [uint16x8_t; 21], mut out: *mut f32, f: &Finish) -> *mut f32 {{",
        "    // SAFETY: NEON is the caller's; every access stays in the ranges `f` promises;",
        "    // every register written is an operand or a clobber.",
        "    unsafe {",
        "        core::arch::asm!(",
    ]
    return out + finish_tail(lines, scales=False, gamma=gamma, bias=False)


FINISH_STRUCT = """
/// What the epilogue reads, at the chunk's first channel.
pub(super) struct Finish {
    /// Bytes between pixels (`4·C`).
    pub stride: usize,
    /// Filter a's; filter b's and c's follow `stride` and `2·stride` bytes on.
    pub scales: *const f32,
    pub bias: *const f32,
    pub gamma: *const f32,
}"""


def render():
    head = [
        "//! GENERATED by `scripts/gen_neon_qdw.py` (which says why and how); do not edit.",
        "//! CI regenerates it and fails on any difference.",
        "",
        "use core::arch::aarch64::*;",
    ]
    fns = []
    for k in (3, 5, 7):
        for layout in ("packed", "compact", "fp16"):
            fns.append("")
            fns.extend(function(k, layout))
    fns.append(FINISH_STRUCT)
    for unit in (True, False):
        for gamma in (False, True):
            fns.append("")
            fns.extend(finish(unit, gamma))
    for gamma in (False, True):
        fns.append("")
        fns.extend(finish_fp16(gamma))
    return "\n".join(head + fns) + "\n"


def formatted(text):
    """The text as `cargo fmt` leaves it (rustfmt, the crate's edition), so the generated
    file passes the format check as written."""
    r = subprocess.run(["rustfmt", "--edition", "2021", "--emit", "stdout"], input=text,
                       capture_output=True, text=True, cwd=OUT.parent)
    if r.returncode != 0:
        sys.exit(f"rustfmt failed on the generated text: {r.stderr[:2000]}")
    return r.stdout


def main():
    text = formatted(render())
    if "--check" in sys.argv[1:]:
        if OUT.read_text() != text:
            sys.exit(f"{OUT} is not what scripts/gen_neon_qdw.py writes: regenerate it")
        return
    OUT.write_text(text)


if __name__ == "__main__":
    main()
