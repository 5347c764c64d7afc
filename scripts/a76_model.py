"""The modeled Cortex-A76: quadra-core's NEON hot loops through llvm-mca with the
Neoverse-N1 scheduling model (the A76's pipeline in a server core; LLVM's `cortex-a76` CPU
name still uses the old Cortex-A57 model), one table, floors, and a whole-network estimate.

`scripts/a76-model.sh` builds the assembly this reads: quadra-core for aarch64 with
`-C target-cpu=cortex-a76`, exactly as a release build (nothing is added to the code to
find the loops, so nothing perturbs it). Each hot loop is the basic block that holds its
unrolled body, recognised by what it must contain:

* QDW row, one pixel group: `3·K²·Q` tap `fmla` (K = 3, 5, 7; Q = 7 pixels, or 4 in the
  remainder group) plus a few of the epilogue, in `qdw_row`;
* f32 GEMM, one step of four k: `4·M·4` `fmla` for an `M x 16` tile, in `simd_gemm`;
* int8 GEMM, four k-groups by lane: `4·M·4` `sdot` for an `M x 16` tile;

and the weight type by the widening it does as it loads: `scvtf` for int8, `sshll #13`
for f16, neither for f32.

Modeled, not measured: llvm-mca assumes every load hits L1 and models no memory system,
so the fractions are upper bounds on what a real A76 reaches.
"""
import argparse
import collections
import pathlib
import re
import subprocess
import sys

PEAK = 2.0  # 128-bit fmla or sdot per cycle: the A76 has two SIMD pipes


def blocks(path):
    """(function, label, instructions, tags) of every basic block of an assembly listing;
    `tags[i]` names the inline-assembly statement instruction `i` belongs to (its first
    line, `// quadra-mca: NAME`, a comment inside the kernel's own assembly), else None."""
    out, fn, label, body, tags, tag = [], None, None, [], [], None
    for line in path.read_text().splitlines():
        t = line.strip()
        # Any function's label starts a function (mangled Rust or not: a block before the
        # first `_ZN` symbol once had no function at all).
        m = re.match(r"^([A-Za-z_][\w$.]*):", t)
        if m or re.match(r"^\.LBB\d+_\d+:", t):
            if label is not None:
                out.append((fn, label, body, tags))
            if m:
                fn = re.sub(r"17h[0-9a-f]{16}E$", "", m.group(1))
                label = "entry"
            else:
                label = t[:-1]
            body, tags = [], []
            continue
        if t.startswith("//NO_APP"):
            tag = None
        mark = re.match(r"^//\s*quadra-mca:\s*(\S+)", t)
        if mark:
            tag = mark.group(1)
        if not t or t.startswith((".", "//", "#")) or re.match(r"^[\w$.]+:", t):
            continue
        if label is not None:
            body.append(t)
            tags.append(tag)
    if label is not None:
        out.append((fn, label, body, tags))
    return out


def weight_type(mix, body=()):
    if mix["scvtf"]:
        return "int8"
    # f16 widening: a signed shift-left-long by 13 (`load_f16` on NEON).
    if any(t.startswith("sshll") and t.endswith("#13") for t in body):
        return "f16"
    return "f32"


def strip_branch(body):
    # The closing branch is the loop's, not the body's.
    return body[:-1] if body and body[-1].split()[0].startswith("b") else body


# The QDW groups the network runs: f32 taps in place, f16 and int8 taps widened once per
# channel chunk (compact); unit scales unless int8; `out += gamma * y` as in a block (the
# lone op stores).
QDW_REGIONS = {
    "f32": ("packed", "finish_unit_gamma"),
    "f32_store": ("packed", "finish_unit_store"),
    "f16": ("compact", "finish_unit_gamma"),
    "int8": ("compact", "finish_scaled_gamma"),
    # Precision::Fp16: f16 taps (any storage), eight channels a group, `fmla .8h`.
    "fp16": ("fp16", "finish_fp16_gamma"),
}


def qdw_regions(blks):
    """{name: instructions} of one 7-pixel QDW group per K and weight type: the block that
    runs the group (the tap assembly, then the epilogue's, one loop per epilogue)."""
    found = {}
    for _fn, _label, body, tags in blks:
        names = {t for t in tags if t}
        taps = [t for t in names if t.startswith("qdw_taps_")]
        fins = [t for t in names if t.startswith("qdw_finish_")]
        if len(taps) != 1 or len(fins) != 1:
            continue
        k, layout = re.match(r"qdw_taps_k(\d)_(\w+)", taps[0]).groups()
        for wt, (lay, epi) in QDW_REGIONS.items():
            name = f"qdw_k{k}_{wt}"
            if lay == layout and fins[0] == "qdw_" + epi and name not in found:
                found[name] = strip_branch(body)
    return found


def gemm_fn(fn):
    """The f32 GEMM's code: the generic body, or NEON's leaf where it is inlined."""
    return "simd_gemm" in fn or "aarch64_neon4gemm" in fn


def most_rows(epi, rows, found):
    """`epi` if a GELU epilogue block of `rows` rows has more rows than any seen before (LLVM
    unrolls the row loop, or not; the block with the most is the one timed), else None."""
    if rows > GELU_ROWS.get(epi, 0):
        GELU_ROWS[epi] = rows
        found.pop(epi, None)
        return epi
    return None


def find(blks):
    """{region name: instructions} of the tracked loops."""
    found = qdw_regions(blks)
    for fn, label, body, tags in blks:
        mix = collections.Counter(t.split()[0] for t in body)
        fmla, sdot = mix["fmla"], mix["sdot"]
        w = weight_type(mix, body)
        name = None
        if "qdw_row" in fn and not any(tags):
            # The remainder groups (4 pixels, for widths that are not a multiple of 7).
            for k in (3, 5, 7):
                if 3 * k * k * 4 <= fmla < 3 * k * k * 4 + 40:
                    name = f"qdw_k{k}_q4_{w}"
        elif gemm_fn(fn) and fmla in (96, 80, 64) and body[-1].startswith("b."):
            name = f"gemm_{fmla // 16}x16_{w}"
        elif "gemm_fp16_4x16" in tags:
            # The half-precision GEMM's 4 x 16 tile, eight k steps by element (`fmla .8h`):
            # its assembly loop (`neon_fp16::blocks4`), tagged.
            loop = [i for i, t in zip(body, tags) if t == "gemm_fp16_4x16"]
            if sum(i.startswith("fmla") for i in loop) == 64 and loop[-1].startswith("b."):
                found["gemm_4x16_fp16"] = loop
            continue
        elif "q8_dequant_5x16" in tags:
            # w8a8: the 5 x 16 sdot tile's int32 sums converted, times the row scales and
            # parked for the epilogue, a row at a time, in assembly
            # (`aarch64_neon::park_5x16`), tagged: converted by the integer trick for k <= 256
            # (`add`, `fsub`), else by `scvtf`.
            loop = [i for i, t in zip(body, tags) if t == "q8_dequant_5x16"]
            found.setdefault("dequant_wide" if any(i.startswith("scvtf") for i in loop) else "dequant", loop)
            continue
        elif "q8_residual_5x16" in tags:
            # w8a8: PW2's residual epilogue from the 5 x 16 sdot tile's registers, its
            # assembly (`aarch64_neon::residual_5x16`), tagged: per value the sum converted
            # (integer add, `fsub`), times the row scale, `fmla` by the column scale onto the
            # bias, `fmla` by gamma into the output row, a row's pair of vectors loaded and
            # stored at once.
            found["q8_residual"] = [i for i, t in zip(body, tags) if t == "q8_residual_5x16"]
            continue
        elif ("gemm_fp16" in fn and fmla == 32 and mix["str"] + 2 * mix["st1"] >= 15
              and not mix["fcvtl"] and not any(".8h" in t for t in body)):
            # ... PW2's residual epilogue from a 4 x 16 tile's registers (`simd::residual`): per
            # value an `fmla` by scale and bias, one by gamma into the output row (stored a
            # row's pair of vectors at a time).
            name = "fp16_residual"
        elif "gemm_fp16" in fn and mix["fcvtl2"] == 8 and mix["fadd"] == 16 and not fmla:
            # ... a run of FP16_CHUNK steps widened and added into the f32 sums (register-only).
            name = "fp16_fold"
        elif ("gemm_fp16" in fn and mix["fcvtn2"] == 1 and not fmla and mix["str"] == 1
              and body[-1].startswith("b.")):
            # ... activations rounded to f16, eight per iteration, once per block of rows.
            name = "fp16_narrow"
        elif "q8_sdot_5x16" in tags:
            # w8a8: the 5 x 16 sdot tile's sixteen inner steps, its assembly loop
            # (`aarch64_neon::sdot_5x16`), tagged.
            loop = [i for i, t in zip(body, tags) if t == "q8_sdot_5x16"]
            if sum(i.startswith("sdot") for i in loop) == 80 and loop[-1].startswith("b."):
                found["q8_sdot_5x16"] = loop
            continue
        elif sdot == 64 and not fmla:
            # ... the 4 x 16 tile (LLVM's loop).
            name = f"q8_sdot_{sdot // 16}x16"
        elif "gelu_slice" in fn and mix["tbl"] == 5 and mix["fcvtn2"] == 1 and not mix["bl"]:
            # The half-precision GELU of eight values (Precision::Fp16): `g` by segment
            # (five `tbl`), in f16, then `0.5·x + |x|·g` in f32.
            name = "gelu_fp16"
        elif (("gemm_fp16" in fn or "gemm_q8_sdot_fp16" in fn) and mix["tbl"]
              and mix["tbl"] == 5 * mix["fcvtn2"] == 5 * mix["fcvtl2"]
              and mix["stp"] == mix["fcvtn2"] and body[-1].startswith("b.")):
            # ... in the GELU epilogue (PW1) of the fp16 GEMM, or of the int8 one with
            # Precision::Fp16: eight columns of one or more rows, whole vectors (one `stp`
            # per row); the block with the most rows is kept.
            name = most_rows("epi_gelu_fp16" if "gemm_fp16" in fn else "q8_epi_gelu_fp16",
                             mix["fcvtn2"], found)
        elif (("gemm_fp16_gelu_half" in fn or "gemm_q8_sdot_fp16" in fn) and mix["tbl"]
              and mix["tbl"] == 5 * mix["fcvtn2"] and not mix["fcvtl2"]
              and mix["str"] == mix["fcvtn2"] and body[-1].startswith("b.")):
            # ... the GELU epilogue writing half-precision rows (Precision::Fp16's PW1, for
            # PW2; of the fp16 GEMM, or of the int8 one in w8a8): all of it in f16 after `x`
            # is rounded, one `str q` of eight halves per row.
            name = most_rows("epi_gelu_fp16_half" if "gemm_fp16" in fn else "q8_epi_gelu_half",
                             mix["fcvtn2"], found)
        elif "gelu_slice" in fn and mix["frecpe"] and mix["str"] == 1 and not mix["bl"]:
            # GELU of one vector (the GEMM epilogue's, here alone): erf's rational
            # polynomial, a reciprocal estimate and two Newton steps.
            name = "gelu"
        elif "ln_simd" in fn and any(t.startswith("b.") for t in body) and not mix["bl"]:
            # LayerNorm of four rows, one or more vectors of each per iteration: the three
            # passes (the sums: four accumulators, one per row; a single one is the loop of
            # the rows left over, which runs once per call at most three times). The loop
            # ends at its branch back to its own label (LLVM may run on into the code after
            # it without a label).
            back = [i for i, t in enumerate(body) if t.startswith("b") and t.endswith("\t" + label)]
            if back:
                body = body[:back[0] + 1]
                mix = collections.Counter(t.split()[0] for t in body)
            vec = collections.Counter(t.split()[0] for t in body if ".4s" in t)
            accs = {t.split()[1] for t in body if t.startswith(("fadd", "fmla")) and ".4s" in t}
            if vec["fadd"] in (4, 8) and not vec["fsub"] and len(vec) == 1 and len(accs) == 4:
                name = "ln_sum"
            elif vec["fsub"] == 4 and vec["fmla"] == 4 and not vec["fmul"] and len(accs) == 4:
                name = "ln_var"
            elif vec["fsub"] == 4 and vec["fmul"] == 4 and vec["fmla"] == 4 and sum(
                    1 for t in body if t.startswith("str\tq")) == 4:  # whole vectors, not a tail
                name = "ln_norm_blocked" if mix["lsr"] else "ln_norm"
        elif ("layer_norm_rows_half" in fn and mix["fcvtn"] == 4 and mix["fcvtn2"] == 4
              and mix["fsub"] == mix["fmul"] == mix["fmla"] == 8 and body[-1].startswith("b.")):
            # ... the normalise pass into half-precision rows (Precision::Fp16): eight
            # channels of each of four rows, rounded to f16 (`fcvtn`, `fcvtn2`) and stored as
            # eight halves; the QDW's blocked rows (LN1) or PW1's channels-last ones (LN2).
            name = "ln_norm_blocked_fp16" if mix["lsr"] else "ln_norm_fp16"
        elif "ln_simd" in fn and mix["faddp"] == 8 and any(t.startswith("fsqrt\tv") for t in body):
            # Per four rows: the variance sums, then one square root and one division of the
            # four rows' `var + eps` in a vector.
            name = "ln_rows4"
        elif "ln_simd" in fn and mix["faddp"] == 8 and mix["dup"] == 4:
            name = "ln_means4"  # per four rows: the means
        elif (gemm_fn(fn) and 0 < mix["frecpe"] == mix["str"] == mix["fmax"] and not mix["sdot"]
              and fmla == 12 * mix["frecpe"]):
            # The GELU epilogue (PW1) of a tile, one column vector of one or more rows: the
            # bias `fmla`, erf's ten, GELU's last, a reciprocal estimate, a store per row.
            # The block with the most rows is kept (LLVM unrolls the row loop, or not).
            rows = mix["frecpe"]
            if rows > GELU_ROWS.get("rows", 0):
                GELU_ROWS["rows"] = rows
                found.pop("epi_gelu", None)
                name = "epi_gelu"
        elif (gemm_fn(fn) and fmla == 10 and mix["str"] == 5 and not mix["frecpe"]
              and mix["ldr"] >= 15 and not mix["ld1"]):
            # ... layer scale and residual: `out += gamma * (tile * scale + bias)` (PW2).
            name = "epi_scale_add"
        elif (gemm_fn(fn) and fmla == 5 and mix["str"] == 5 and not mix["frecpe"]
              and not mix["ld1"] and not mix["fmov"]):
            # ... bias only (the stem, downsample and head layers).
            name = "epi_bias"
        elif ("quantize_rows" in fn and mix["fabs"] == 4 and mix["fmax"] == 4 and not mix["fsub"]
              and body[-1].startswith("b.")):
            # w8a8 activations, first pass over a row: max |x| of 16 values (NEON's `fmax`
            # carries a NaN through, so no finiteness sum).
            name = "quant_amax"
        elif ("quantize_rows" in fn and mix["fcvtns"] == 4 and mix["sqxtn2"] == 3 and mix["str"]
              and not mix["bl"] and body[-1].startswith("b.")):
            # ... second pass over 16: scale, round to even and convert (`fcvtns`), narrow
            # to int8 (`sqxtn`), store, sum (`saddlp`, `sadalp`).
            name = "quant_round"
        elif (mix["fabs"] == 2 and mix["fmax"] == 2 and len(body) <= 12 and body[-1].startswith("b.")
              and all(".8h" in t for t in body if t.split()[0] in ("fabs", "fmax"))):
            # w8a8 with Precision::Fp16: PW2's f16 input rows (`quantize_rows_half`), first
            # pass: max |x| of 16 halves (`fmax .8h`).
            name = "quant_half_amax"
        elif (mix["fmla"] == 2 and all(t.endswith(".8h") for t in body if t.startswith("fmla"))
              and sum(t.split()[0] in ("add", "sub") and t.endswith(".8h") for t in body) == 2
              and mix["sqxtn2"] == 1 and mix["str"] == 1 and not mix["bl"]
              and body[-1].startswith("b.")):
            # ... second pass over 16 halves: `x·inv + 1536` in f16 (`fmla .8h` onto a fresh
            # `movi` of 1536), the integer read off its bits (`add .8h` of -0x6600), narrowed
            # to int8, stored, summed.
            name = "quant_half_round"
        elif ("gemm_fp16" in fn and mix["saddw"] == 1 and mix["saddw2"] == 1 and mix["fsub"] == 2
              and not fmla and body[-1].startswith("b.") and len(body) <= 14):
            # The fp16 GEMM's int8 weight panels (a w8a8 model's stem, downsample and head
            # layers) converted to f16 into a stack copy, 16 weights an iteration, once per
            # panel and block of ROW_BLOCK rows (`neon_fp16::HalfPanel for i8`): each added
            # onto the bits of 1536.0 as it widens (`saddw`), then 1536 subtracted in f16.
            name = "panel_i8_f16"
        elif gemm_fn(fn) and not fmla and w != "f32" and (mix["str"] or mix["stp"]):
            # f16 / int8 weight panels widened to f32 once per GEMM call (`gemm_widened`).
            name = f"widen_{w}"
        if name and name not in found:
            found[name] = strip_branch(body)
    return found


def mca(mca_bin, body, iterations=100):
    r = subprocess.run([mca_bin, "-mtriple=aarch64", "-mcpu=neoverse-n1", "-mattr=+dotprod",
                        f"-iterations={iterations}"], input="\n".join(body) + "\n",
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"llvm-mca failed: {r.stderr[:2000]}")
    return int(re.search(r"Total Cycles:\s+(\d+)", r.stdout).group(1)) / iterations


def describe(name):
    m = re.match(r"qdw_k(\d)_q4_(\w+)", name)
    if m:
        return "QDW row", f"K={m.group(1)}, 4 px, {m.group(2)} taps"
    m = re.match(r"qdw_k(\d)_(\w+)", name)
    if m:
        how = {"f32": "f32 taps", "f32_store": "f32 taps, store", "f16": "f16 taps, widened",
               "int8": "int8 taps, widened", "fp16": "fp16, 8 ch, fmla .8h"}[m.group(2)]
        return "QDW row", f"K={m.group(1)}, 7 px, {how}"
    if name == "gemm_4x16_fp16":
        return "GEMM fp16", "4x16, fmla .8h by element"
    m = re.match(r"gemm_(\d)x16_(\w+)", name)
    if m:
        return "GEMM f32", f"{m.group(1)}x16, {m.group(2)} weights"
    m = re.match(r"widen_(\w+)", name)
    if m:
        return "GEMM widening", f"{m.group(1)} panel -> f32"
    if name == "gelu":
        return "GELU", "4 values"
    if name == "gelu_fp16":
        return "GELU fp16", "8 values"
    if name in ELEMENTWISE:
        return ELEMENTWISE[name][0], ELEMENTWISE[name][1]
    if name.startswith("ln_"):
        return "LayerNorm", {"ln_sum": "4 rows, sum", "ln_var": "4 rows x 4 ch, deviations",
                             "ln_norm": "4 rows x 4 ch, normalise", "ln_norm_blocked":
                             "4 rows x 4 ch, normalise to QDW layout", "ln_norm_blocked_fp16":
                             "4 rows x 8 ch, normalise to an f16 QDW row", "ln_norm_fp16":
                             "4 rows x 8 ch, normalise to f16 rows", "ln_rows4": "per 4 rows: sqrt, div",
                             "ln_means4": "per 4 rows: means"}[name]
    m = re.match(r"q8_sdot_(\d)x16", name)
    return "GEMM int8 sdot", f"{m.group(1)}x16, by element"


# Rows of the GELU epilogue block found (its values per iteration are 4 per row).
GELU_ROWS = {}

# The loops around the GEMMs (name: part, what one iteration does, values per iteration).
ELEMENTWISE = {
    "epi_gelu": ("Epilogue", "bias + GELU, rows x 4", 20),
    "epi_gelu_fp16": ("Epilogue", "bias + GELU fp16, rows x 8", 32),
    "q8_epi_gelu_fp16": ("Epilogue", "int8 GEMM: bias + GELU fp16, rows x 8", 32),
    "epi_scale_add": ("Epilogue", "bias, gamma, residual, 5 x 4", 20),
    "epi_bias": ("Epilogue", "bias, 5 rows x 4", 20),
    "panel_i8_f16": ("GEMM fp16", "int8 weight panel to f16, 16 weights", 16),
    "dequant": ("Dequantise", "5 x 16 int32 sums x row scale, parked, k <= 256", 80),
    "dequant_wide": ("Dequantise", "5 x 16 int32 sums x row scale, parked, k > 256", 80),
    "q8_residual": ("Epilogue", "int8 GEMM: residual from registers, 5 x 16", 80),
    "fp16_residual": ("Epilogue", "fp16 GEMM: residual from registers, 4 x 16", 64),
    "quant_amax": ("Quantise", "max |x| pass, 16 values", 16),
    "quant_round": ("Quantise", "round + narrow pass, 16 values", 16),
    "fp16_fold": ("GEMM fp16", "a run's fold into f32, 4 x 16", 64),
    "fp16_narrow": ("GEMM fp16", "activations to f16, 8 values", 8),
    "epi_gelu_fp16_half": ("Epilogue", "bias + GELU fp16 to f16, rows x 8", 32),
    "q8_epi_gelu_half": ("Epilogue", "int8 GEMM: bias + GELU fp16 to f16, rows x 8", 32),
    "quant_half_amax": ("Quantise", "f16 rows: max |x| pass, 16 values", 16),
    "quant_half_round": ("Quantise", "f16 rows: round + narrow pass, 16 values", 16),
}


# quadra-core's plan (plan.rs) on aarch64: the strip budget in floats, the hidden slice, and the
# widest GEMM whose f16/int8 panels are widened once per call (simd::WIDE_K).
STRIP_BUDGET, HIDDEN_CHUNK, WIDE_K = 40 * 1024, 128, 512
FP16_CHUNK = 64  # isa::FP16_CHUNK: inner steps an fp16 GEMM sums in f16 before its f32 fold
ROW_BLOCK = 32  # neon_fp16::ROW_BLOCK: activation rows per block of the fp16 GEMM
FP16_MAX_K = 2 * WIDE_K  # kernels::FP16_MAX_K: the deepest GEMM the fp16 GEMM takes


def block_rows(k):
    """`neon_fp16::block_rows`: activation rows per block of an fp16 GEMM with inner
    dimension k (its copy holds WIDE_K · ROW_BLOCK halves, groups of 4 rows)."""
    return min(ROW_BLOCK, WIDE_K * ROW_BLOCK // (4 * -(-k // 8) * 8) * 4)


def strip_rows(h, w, c, e=4, budget=STRIP_BUDGET):
    """Rows per strip of an h x w x c block: `plan::default_strip`."""
    return max(1, min(h, budget // (w * (c + min(e * c, HIDDEN_CHUNK)))))


def strips(h, w, c, e=4):
    return -(-h // strip_rows(h, w, c, e))


PARTS = ("GEMM", "QDW", "GELU", "LayerNorm", "quantise", "epilogue", "other")


def values(name):
    """Values one iteration of an ELEMENTWISE loop handles."""
    if name == "epi_gelu":
        return 4 * GELU_ROWS.get("rows", 5)
    if name in ("epi_gelu_fp16", "q8_epi_gelu_fp16", "epi_gelu_fp16_half", "q8_epi_gelu_half"):
        return 8 * GELU_ROWS.get(name, 4)
    return ELEMENTWISE[name][2]


MODES = ("f32", "f16w", "w8a8", "fp16", "w8a8+fp16")


def network_estimate(t, ghz):
    """Per-part modeled milliseconds of whole networks, every part from its own modeled
    loop, compute-bound (every load an L1 hit): {(model, mode): {part: ms}}.

    GEMM: the blocks' pointwise layers (f16 weights: the f32 loop on panels widened once
    per strip; w8a8: the sdot loop). QDW: the taps with the residual `x += gamma * y` in
    their epilogue. GELU: the erf of the 4C hidden values of every pixel. LayerNorm: both
    of every block, the stem's and each downsample's. quantise (w8a8): both passes over the
    C inputs of PW1 and the 4C of PW2 per pixel. epilogue: what the GEMM tiles do after
    their sums besides GELU (bias, gamma and residual; w8a8: the int32 sums times the row
    scales first; PW2's residual applied from the int8 tile's registers). PW2 runs once per
    128-channel hidden slice (`block::mlp_group`), so its epilogue passes over the C outputs
    of a pixel 4C/128 times. other: the stem, downsample and head layers (f32 GEMMs; f16 and w8a8
    widen their weights) with their bias. Not counted: storing the accumulators before the
    epilogue (one store per 4 values), the global pool and the final LayerNorm (one row)."""
    need = ("gemm_5x16_f32", "q8_sdot_5x16", "qdw_k7_f32", "gemm_5x16_f16", "qdw_k7_f16",
            "widen_f16", "widen_int8", "gemm_5x16_int8", "panel_i8_f16", "gelu", "epi_gelu",
            "epi_scale_add", "epi_bias", "dequant", "dequant_wide",
            "quant_amax", "quant_round", "quant_half_amax", "quant_half_round",
            "q8_epi_gelu_half", "ln_sum", "ln_var", "ln_norm", "ln_rows4", "ln_means4",
            "gemm_4x16_fp16", "fp16_fold", "fp16_narrow", "epi_gelu_fp16", "q8_epi_gelu_fp16",
            "epi_gelu_fp16_half", "q8_residual", "fp16_residual",
            "qdw_k7_fp16", "ln_norm", "ln_norm_blocked_fp16", "ln_norm_fp16")
    missing = [n for n in need if n not in t]
    if missing:
        return {}, missing
    fg, f8, fq, fg16, fq16 = (t[n]["fraction"] for n in need[:5])
    widen16 = t["widen_f16"]["per_elem"]
    per = {n: t[n]["cycles"] / values(n) for n in ELEMENTWISE}  # cycles per value
    # In the network GELU runs in PW1's epilogue: its cost is that epilogue's beyond the
    # bias-only epilogue's (which stays in "epilogue").
    gelu = per["epi_gelu"] - per["epi_bias"]
    # fp16 (float weights): PW1's GELU all in half precision, written as PW2's f16 input.
    gelu16 = per["epi_gelu_fp16_half"] - per["epi_bias"]
    quant = per["quant_amax"] + per["quant_round"]

    def ln(c):
        """Cycles of one LayerNorm row of c channels: three passes over 16 values at a
        time, the per-row work over four rows."""
        passes = sum(t[n]["cycles"] / t[n]["values"] for n in ("ln_sum", "ln_var", "ln_norm"))
        return passes * c + (t["ln_rows4"]["cycles"] + t["ln_means4"]["cycles"]) / 4
    rate = 4 * PEAK  # f32 multiply-adds per cycle at peak
    # The fp16 GEMM (Precision::Fp16): multiply-adds per cycle over a whole run of a 4 x 16
    # tile (FP16_CHUNK / 8 iterations of 8 steps, then the run's fold into the f32 sums), and the
    # cycles to round one activation to f16 (once per GEMM call and row).
    def cyc16(macs, k):
        """Cycles of `macs` multiply-adds of fp16 GEMMs with inner dimension `k`: per 4 x 16
        tile, k/8 iterations and a fold per run (a GEMM with k < FP16_CHUNK folds once in
        fewer steps: 16-channel PW1 pays a fold per 16 steps)."""
        tile = k / 8 * t["gemm_4x16_fp16"]["cycles"] + -(-k // FP16_CHUNK) * t["fp16_fold"]["cycles"]
        return macs / (4 * 16 * k) * tile
    narrow16 = t["fp16_narrow"]["cycles"] / 8
    # Precision::Fp16's QDW: `fmla .8h` (eight multiply-adds each) at the group's fraction
    # of the peak; its rows are rounded to f16 by LN1's normalise pass (cycles per value
    # beyond the f32 pass's).
    rate_qdw16 = 8 * PEAK * t["qdw_k7_fp16"]["fraction"]
    ln1_half = (t["ln_norm_blocked_fp16"]["cycles"] / t["ln_norm_blocked_fp16"]["values"]
                - t["ln_norm"]["cycles"] / t["ln_norm"]["values"])
    # ... and with float weights LN2 writes PW1's input rows in f16 (once, not at each
    # hidden slice).
    ln2_half = (t["ln_norm_fp16"]["cycles"] / t["ln_norm_fp16"]["values"]
                - t["ln_norm"]["cycles"] / t["ln_norm"]["values"])
    out = {}
    for name, c, depths in (("QuadraNet36-T", 64, (3, 3, 27, 3)), ("QuadraNet25-XXS", 16, (2, 3, 18, 2))):
        dims = [c, 2 * c, 4 * c, 8 * c]
        hw = [56 >> s for s in range(4)]
        # (multiply-adds, k, weights, widened once per call, outputs) of the f32 GEMMs
        # outside the blocks: the stem (4x4 patches of 3 channels), the three downsamples
        # (2x2 patches) and the head (one row: its weights are widened as they are used).
        other = [(16 * 3 * dims[0] * hw[0] ** 2, 48, 48 * dims[0], hw[0] ** 2 > 5, dims[0] * hw[0] ** 2)]
        other += [(4 * dims[s - 1] * dims[s] * hw[s] ** 2, 4 * dims[s - 1], 4 * dims[s - 1] * dims[s], True,
                   dims[s] * hw[s] ** 2) for s in range(1, 4)]
        other += [(dims[3] * 1000, dims[3], dims[3] * 1000, False, 1000)]
        pix = [d * hw[s] ** 2 for s, d in enumerate(depths)]  # block-pixels per stage
        pw = sum(p * 8 * dims[s] ** 2 for s, p in enumerate(pix))
        qdw = sum(p * 3 * 49 * dims[s] for s, p in enumerate(pix))
        hidden = sum(p * 4 * dims[s] for s, p in enumerate(pix))  # PW1 outputs, PW2 inputs
        narrow = sum(p * dims[s] for s, p in enumerate(pix))  # PW1 inputs, PW2 outputs
        # ... and the C values of a pixel times its hidden slices (4C/128): what each slice's
        # PW2 epilogue passes over, and each slice's PW1 reads.
        per_slice = sum(p * -(-4 * dims[s] // HIDDEN_CHUNK) * dims[s] for s, p in enumerate(pix))
        common = {
            "GELU": hidden * gelu,
            "LayerNorm": sum(2 * p * ln(dims[s]) for s, p in enumerate(pix))
            + hw[0] ** 2 * ln(dims[0]) + sum(hw[s - 1] ** 2 * ln(dims[s - 1]) for s in range(1, 4)),
            "epilogue": hidden * per["epi_bias"] + per_slice * per["epi_scale_add"],
        }
        other_f32 = sum(m / (rate * fg) + o * per["epi_bias"] for m, _, _, _, o in other)
        def other_widened(widen, f_in_loop):
            """The other layers with narrow weights in f32: widened once per GEMM call
            where k <= WIDE_K (`widen` cycles per weight), else in the GEMM loop (whose
            fraction of the peak is `f_in_loop`)."""
            return sum((m / (rate * fg) + w * widen if wide and k <= WIDE_K else m / (rate * f_in_loop))
                       + o * per["epi_bias"] for m, k, w, wide, o in other)
        # fp16 mode: the other layers' GEMMs in half precision where k <= FP16_MAX_K (f16
        # weights read in place; their inputs rounded once per row), else the f32 GEMM
        # widening its f16 weights in its loop.
        other_fp16 = sum((cyc16(m, k) + m * k / w * narrow16 if k <= FP16_MAX_K else m / (rate * fg16))
                         + o * per["epi_bias"] for m, k, w, wide, o in other)
        # w8a8 with Precision::Fp16: the other layers' int8 (weight-only) GEMMs in half
        # precision where k <= FP16_MAX_K, each weight panel converted to f16 once per block
        # of rows (`neon_fp16::gemm`, `block_rows`); else the int8-weight f32 path.
        other_fp16_i8 = sum((cyc16(m, k) + m * k / w * narrow16
                             + w * -(-(m // w) // block_rows(k)) * per["panel_i8_f16"] if k <= FP16_MAX_K
                             else m / (rate * t["gemm_5x16_int8"]["fraction"]))
                            + o * per["epi_bias"] for m, k, w, wide, o in other)
        for mode in MODES:
            parts = dict(common, quantise=0.0)
            if mode == "f32":
                parts.update(GEMM=pw / (rate * fg), QDW=qdw / (rate * fq), other=other_f32)
            elif mode == "f16w":
                widen = 0.0
                for s, d in enumerate(depths):
                    # PW1 and PW2 (k = C and the 128-channel slice, both <= WIDE_K here):
                    # each strip widens all 8·C² weights once.
                    assert dims[s] <= WIDE_K
                    widen += d * strips(hw[s], hw[s], dims[s]) * 8 * dims[s] ** 2 * widen16
                parts.update(GEMM=pw / (rate * fg) + widen, QDW=qdw / (rate * fq16),
                             other=other_widened(widen16, fg16))
            elif mode == "fp16":  # f16 weights, half-precision pointwise GEMMs, QDW and GELU
                # PW2's residual epilogue from the fp16 tile's registers, once per slice.
                parts["epilogue"] = hidden * per["epi_bias"] + per_slice * per["fp16_residual"]
                # PW1: k = C; PW2: k = the hidden slice (4C up to 128); half the MACs each.
                pw16 = sum(cyc16(p * 4 * dims[s] ** 2, dims[s]) + cyc16(p * 4 * dims[s] ** 2,
                           min(4 * dims[s], HIDDEN_CHUNK)) for s, p in enumerate(pix))
                # PW1's input is LN2's f16 rows (their rounding is priced in LayerNorm), PW2's
                # the f16 rows PW1's GELU writes, both in the tiles' layout, read in place.
                parts.update(GEMM=pw16, QDW=qdw / rate_qdw16, other=other_fp16,
                             GELU=hidden * gelu16)
                parts["LayerNorm"] += narrow * (ln1_half + ln2_half)
            else:  # w8a8, w8a8+fp16: int8 pointwise GEMMs; QDW taps and the other layers as f32 models
                # (w8a8+fp16: GELU's g in half precision in the int8 GEMM's epilogue; the
                # rest as w8a8, whose other layers keep their f32 weights as stored)
                # (A w8a8 model's other layers have int8 weights, weight-only.)
                other_i8 = other_widened(t["widen_int8"]["per_elem"], t["gemm_5x16_int8"]["fraction"])
                parts.update(GEMM=pw / (16 * PEAK * f8), QDW=qdw / (rate * fq), other=other_i8,
                             quantise=(hidden + narrow) * quant)
                # PW1: its sums dequantised (then GELU, above, and the bias); PW2: the
                # residual epilogue from the tile's registers, once per hidden slice.
                # (PW1's k is C: its sums converted exactly by the integer trick up to 256.)
                dequant = sum(p * 4 * dims[s] * per["dequant" if dims[s] <= 256 else "dequant_wide"]
                              for s, p in enumerate(pix))
                parts["epilogue"] = hidden * per["epi_bias"] + dequant + per_slice * per["q8_residual"]
                if mode == "w8a8+fp16":
                    # PW1's GELU all in f16 after rounding x, written as halves, which PW2
                    # quantises in f16 (`gemm_q8_gelu_half`, `quantize_rows_half`).
                    parts["GELU"] = hidden * (per["q8_epi_gelu_half"] - per["epi_bias"])
                    parts["quantise"] = (hidden * (per["quant_half_amax"] + per["quant_half_round"])
                                         + narrow * quant)
                    parts["QDW"] = qdw / rate_qdw16
                    parts["other"] = other_fp16_i8
                    parts["LayerNorm"] += narrow * ln1_half
            out[(name, mode)] = {k: v / ghz / 1e6 for k, v in parts.items()}
    return out, []


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("asm", type=pathlib.Path)
    ap.add_argument("--mca", default="/usr/lib/llvm-22/bin/llvm-mca")
    ap.add_argument("--floors", type=pathlib.Path)
    ap.add_argument("--ghz", type=float, default=2.4)
    a = ap.parse_args()

    table = {}
    for name, body in sorted(find(blocks(a.asm)).items()):
        # Vector multiplies: fmla and sdot, and in the assembly QDW groups fmul, which is
        # the first tap's product there (elsewhere an fmul may be widening f16 weights).
        ops = ("fmla", "fmul", "sdot") if re.match(r"qdw_k\d_(f|i)", name) else ("fmla", "sdot")
        # The fp16 QDW group's epilogue has f32 `fmla .4s` too: only the taps' `.8h` count.
        half = name.startswith("qdw_") and name.endswith("_fp16")
        macs = sum(1 for t in body if t.split()[0] in ops and (not half or ".8h" in t))
        cycles = mca(a.mca, body)
        # Floats a widening iteration writes: 4 per q register stored (stp stores two).
        elems = 4 * sum(2 if t.startswith("stp") else 1 for t in body
                        if t.split()[0] in ("str", "stp") and " q" in t)
        table[name] = {"insns": len(body), "macs": macs, "cycles": cycles,
                       "fraction": macs / PEAK / cycles if macs else 0.0,
                       "per_elem": cycles / elems if elems else 0.0,
                       # LayerNorm's passes: values an iteration (four per vector summed or
                       # normalised).
                       "values": 4 * sum(1 for t in body if t.startswith(("fadd", "fmla")) and ".4s" in t),
                       "loads": sum(1 for t in body if t.split()[0].startswith("ld")),
                       "stack": sum(1 for t in body if "[sp" in t)}
    print("Modeled Cortex-A76: llvm-mca -mcpu=neoverse-n1 (modeled, not measured; every load an L1 hit)")
    print(f"{'kernel':15s} {'variant':24s} {'insns':>6s} {'mul ops':>9s} {'cycles':>8s} "
          f"{'of peak':>8s} {'loads':>6s} {'stack':>6s}")
    for name, r in table.items():
        if not r["macs"]:
            continue
        k, v = describe(name)
        print(f"{k:15s} {v:24s} {r['insns']:6d} {r['macs']:9d} {r['cycles']:8.1f} "
              f"{100 * r['fraction']:7.1f}% {r['loads']:6d} {r['stack']:6d}")
    print("(of peak: vector multiplies (fmla, fmul or sdot) per cycle over the A76's 2; stack: loads")
    print(" and stores at [sp], spills)")
    print("Elementwise loops (LayerNorm, GELU; no multiply peak to compare with: cycles per value):")
    for name, r in table.items():
        if name.startswith(("gelu", "ln_")):
            k, v = describe(name)
            per = {"gelu": 4, "gelu_fp16": 8, "ln_rows4": 0, "ln_means4": 0}.get(name, r["values"])
            each = f"{r['cycles'] / per:.2f} cycles per value" if per else "per 4 rows"
            print(f"  {k:10s} {v:40s} {r['insns']:4d} insns {r['cycles']:7.1f} cycles  {each}"
                  f"  stack {r['stack']}")
    for name, r in table.items():
        if name.startswith("widen_"):
            k, v = describe(name)
            print(f"{k}, {v}, once per GEMM call for k <= {WIDE_K}: {r['per_elem']:.3f} cycles per "
                  f"weight ({r['insns']} instructions, {r['cycles']:.1f} cycles per iteration, "
                  f"{r['stack']} stack accesses)")
    for name, r in table.items():
        if name in ELEMENTWISE:
            k, v, _ = ELEMENTWISE[name]
            if name == "epi_gelu":
                v = v.replace("rows", f"{GELU_ROWS.get('rows', 0)} row(s)")
            if name in ("epi_gelu_fp16", "q8_epi_gelu_fp16", "epi_gelu_fp16_half", "q8_epi_gelu_half"):
                v = v.replace("rows", f"{GELU_ROWS.get(name, 0)} row(s)")
            print(f"{k:10s} {v:33s} {r['insns']:4d} insns {r['cycles']:7.1f} cycles  "
                  f"{r['cycles'] / values(name):.2f} cycles per value  stack {r['stack']}")
    est, missing = network_estimate(table, a.ghz)
    if missing:
        failed_est = f"whole-network estimate: loops not found: {', '.join(missing)}"
    else:
        failed_est = None
        print(f"\nWhole networks, one A76 core at {a.ghz} GHz, 224x224, batch 1: MODELED, not measured")
        print("(every part from its own modeled loop, compute-bound, every load an L1 hit. fp16: f16")
        print(" weights; the pointwise GEMMs, the QDW (on f16 rows LN1 writes) and GELU (into PW2's")
        print(" f16 rows) in half precision, LayerNorm's statistics in f32; w8a8+fp16: w8a8 with the")
        print(" QDW and GELU's g in half precision. ms per part, then one line per model and mode)")
        print(f"  {'model':16s} {'mode':9s} " + " ".join(f"{p:>9s}" for p in PARTS) + f" {'total':>9s}")
        for (name, mode), parts in est.items():
            print(f"  {name:16s} {mode:9s} " + " ".join(f"{parts[p]:9.1f}" for p in PARTS)
                  + f" {sum(parts.values()):9.1f}")
        for (name, mode), parts in est.items():
            print(f"{name} {mode} {sum(parts.values()):.1f} ms")
    failed = []
    if a.floors:
        for line in a.floors.read_text().splitlines():
            f = line.split("#")[0].split()
            if not f:
                continue
            name, floor, max_stack = f[0], float(f[1]), int(f[2])
            r = table.get(name)
            if r is None:
                failed.append(f"{name}: not found in the assembly (did the code change shape?)")
            elif r["fraction"] < floor:
                failed.append(f"{name}: {100 * r['fraction']:.1f}% of peak, floor {100 * floor:.0f}%")
            elif r["stack"] > max_stack:
                failed.append(f"{name}: {r['stack']} stack accesses, at most {max_stack}")
        if failed_est:
            failed.append(failed_est)
        if failed:
            print("\nA76 model check FAILED:\n  " + "\n  ".join(failed))
            sys.exit(1)
        print(f"\nA76 model check: every tracked loop at or above its floor ({a.floors})")


if __name__ == "__main__":
    main()
