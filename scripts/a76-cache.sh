#!/usr/bin/env bash
# The Cortex-A76's caches, simulated: callgrind's cache model set to the A76's L1D (64 KB,
# 4-way) and L2 (256 KB and 512 KB, 8-way; the simulator's last level, so an L2 miss is an
# L3 or DRAM access), and for comparison a Zen 4 core (32 KB L1D, 1 MB L2), over
# QuadraNet36-T's four block shapes at every strip height worth trying. It counts the misses
# of two runs of `quadra-bench --op block:... --strip S` inside `block_forward` (weights cold
# each run, as in a network) and sums them over 36-T's blocks per strip budget. This is how
# `quadra_core::plan::STRIP_BUDGET` was chosen for aarch64. The x86 AVX2 kernels stand in
# for NEON's (same strips and layouts, tiles of 6 rows instead of 5): *simulated*, not a
# device. About 10 minutes on 2 cores; not part of CI.
#   bash scripts/a76-cache.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
cargo build --quiet --release -p quadra-bench
bin=$PWD/target/release/quadra-bench
out=$(mktemp -d)
jobs=()
for cfg in "a76-256k 65536,4,64 262144,8,64" "a76-512k 65536,4,64 524288,8,64" "zen4 32768,8,64 1048576,8,64"; do
  for op_strips in "64x56x7x4:1 2 3 4 7 14" "128x28x7x4:1 3 5 6 11" "256x14x7x4:1 2 4 7 14" "512x7x7x4:3 7"; do
    for s in ${op_strips#*:}; do jobs+=("$cfg ${op_strips%%:*} $s"); done
  done
done
printf '%s\n' "${jobs[@]}" | xargs -P "$(nproc)" -L1 bash -c '
  valgrind --tool=callgrind --cache-sim=yes --I1=65536,4,64 --D1=$1 --LL=$2 \
    --toggle-collect="quadra_core::block::block_forward*" --callgrind-out-file='"$out"'/$0-$3-$4.cg \
    '"$bin"' --op block:$3 --kernel avx2 --iters 1 --warmup 1 --strip $4 >/dev/null 2>&1'
python3 - "$out" <<'PY'
import collections, glob, re, sys
sys.path.insert(0, "scripts")
from a76_model import strip_rows
miss = collections.defaultdict(dict)
for f in glob.glob(sys.argv[1] + "/*.cg"):
    cfg, op, s = re.match(r".*/(.*?)-(\d+x\d+x7x4)-(\d+)\.cg", f).groups()
    txt = open(f).read()
    ev = re.search(r"^events: (.*)$", txt, re.M).group(1).split()
    v = dict(zip(ev, map(int, re.search(r"^(?:totals|summary): (.*)$", txt, re.M).group(1).split())))
    miss[cfg][op, int(s)] = ((v["D1mr"] + v["D1mw"]) / 2, (v["DLmr"] + v["DLmw"]) / 2)
blocks = {"64x56x7x4": 3, "128x28x7x4": 3, "256x14x7x4": 27, "512x7x7x4": 3}
print("misses per block run (L1D, L2 = the simulated last level):")
for cfg in sorted(miss):
    for (op, s), (d1, ll) in sorted(miss[cfg].items()):
        print(f"  {cfg:9s} {op:11s} strip {s:2d}: L1D {d1 / 1e3:8.1f}K  L2 {ll / 1e3:8.1f}K")
print("QuadraNet36-T's blocks, one image, per strip budget (floats of LN2 rows + hidden slice):")
for budget in (80 * 1024, 40 * 1024):
    strips = {op: strip_rows(int(op.split("x")[1]), int(op.split("x")[1]), int(op.split("x")[0]), budget=budget)
              for op in blocks}
    line = f"  {budget // 1024}K floats, strips {[strips[o] for o in blocks]}:"
    for cfg in sorted(miss):
        d1 = sum(miss[cfg][op, strips[op]][0] * n for op, n in blocks.items())
        ll = sum(miss[cfg][op, strips[op]][1] * n for op, n in blocks.items())
        line += f"  {cfg} L1D {d1 / 1e6:.2f}M L2 {ll / 1e6:.2f}M"
    print(line)
PY
rm -rf "$out"
