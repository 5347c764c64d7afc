#!/usr/bin/env bash
# The modeled Cortex-A76: builds quadra-core for aarch64 with -C target-cpu=cortex-a76 (a
# plain release build, nothing added), finds the NEON hot loops in its assembly, runs
# llvm-mca with the Neoverse-N1 model on each and prints one table and a whole-network
# estimate; fails when a tracked loop drops below its floor in scripts/a76-floors.txt.
#   bash scripts/a76-model.sh      (installs the aarch64 toolchain, which brings llvm-mca)
# Modeled, not measured: see scripts/a76_model.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-aarch64.sh >&2
mca=/usr/lib/llvm-22/bin/llvm-mca
if [ ! -x "$mca" ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq llvm-22 >/dev/null
fi
source scripts/aarch64-env.sh
dir=target/a76
# `internals`: the kernels' entry points that only the tests and benches call (GELU on a
# slice, among them) are public then, so they are compiled and found in the assembly.
CARGO_TARGET_DIR=$dir RUSTFLAGS="-C target-cpu=cortex-a76" \
  cargo rustc --quiet --release --target aarch64-unknown-linux-gnu -p quadra-core --lib \
  --features internals -- --emit asm -C codegen-units=1 >&2
asm=$(ls -t "$dir"/aarch64-unknown-linux-gnu/release/deps/quadra_core-*.s | head -1)
python3 scripts/a76_model.py "$asm" --mca "$mca" --floors scripts/a76-floors.txt "$@"
