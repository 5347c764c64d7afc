#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, clippy, native tests on every kernel path
# this CPU has, the Python package, the no_std compile-time dispatch, NEON under qemu,
# firmware booted under qemu, and the bare-metal build.
# Installs the aarch64 cross toolchain first if it is missing (needs root or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
step() { printf '\n=== %s\n' "$*"; }

# Runs a cargo test command that selects tests by name and fails unless at least $1 of them
# passed: a renamed test would otherwise leave the filter matching nothing, and the step green.
at_least() {
  local want=$1 log ran
  shift
  log=$(mktemp)
  "$@" 2>&1 | tee "$log"
  ran=$(grep -Eo '^test result: ok\. [0-9]+ passed' "$log" | awk '{ s += $4 } END { print s + 0 }')
  rm -f "$log"
  if [ "$ran" -lt "$want" ]; then
    echo "expected at least $want tests to run, $ran did: does the name filter still match?"
    exit 1
  fi
}

step "aarch64 toolchain"
bash scripts/setup-aarch64.sh
# The latency table's YAML is read back with PyYAML by quadra-bench's tests.
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install -q pyyaml

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "cargo doc: the documented API of quadra-core, quadra-cpu and quadra-ffi, without warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet -p quadra-core -p quadra-cpu -p quadra-ffi

# Demand every SIMD path that /proc/cpuinfo says this CPU has, so a detection bug cannot
# quietly skip one.
req=""
if grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then req="avx2"; fi
if grep -qw avx_vnni /proc/cpuinfo && grep -qw avx2 /proc/cpuinfo; then req="$req,avx2+vnni"; fi
if grep -qw avx512f /proc/cpuinfo; then req="$req,avx512"; fi
if grep -qw avx512_vnni /proc/cpuinfo && grep -qw avx512bw /proc/cpuinfo; then req="$req,avx512+vnni"; fi
step "native tests (kernel paths demanded: scalar${req:+,$req})"
QUADRA_REQUIRE_ISA="$req" cargo test --workspace --release

step "the Python package: pip install ./python in a fresh venv, then pytest (PyTorch fixtures, the CLI's logits, errors)"
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get install -y -q python3-venv
fi
rm -rf target/venv
python3 -m venv target/venv
target/venv/bin/pip install -q ./python pytest numpy safetensors pillow
# The tests compare with the CLI (built by the native tests above; this makes sure).
cargo build --release -q -p quadra-tools
QUADRA_CLI=target/release/quadra target/venv/bin/python -m pytest -q python/tests

step "the thread gang's protocol, model-checked by loom"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
  at_least 7 cargo test --release -p quadra-cpu --test loom_gang -- --nocapture

step "README's compiled-in snippet, as an edition-2024 binary"
out=$(cargo run --release -q -p quadra-compiled-in-example)
echo "$out"
grep -q "kernels, logits \[" <<<"$out"

step "x86 without F16C (qemu-x86_64 -cpu max,-f16c): f16 weights fall back, never fault"
# The AVX2 leaves widen f16 weights with F16C; detection must refuse them on a CPU without
# it (qemu-user-static comes with the aarch64 setup; its TCG has AVX2 but no AVX-512).
CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="qemu-x86_64-static -cpu max,-f16c" \
  at_least 1 cargo test --release -p quadra-tests --test digits_model f16_model
CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="qemu-x86_64-static -cpu max,-f16c" \
  at_least 2 cargo test --release -p quadra-core --lib -- f16_and_int8 detection
# The no_std CPUID detection against std's, on CPUs this machine is not: AVX2 without
# AVX-512, and no AVX at all.
for cpu in max qemu64; do
  CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="qemu-x86_64-static -cpu $cpu" \
    at_least 1 cargo test --release -p quadra-core --lib -- detection
done

if grep -qw avx2 /proc/cpuinfo; then
  step "no_std compile-time dispatch with -C target-feature=+avx2,+fma,+f16c"
  QUADRA_EXPECT_COMPILED=avx2 RUSTFLAGS="-C target-feature=+avx2,+fma,+f16c" CARGO_TARGET_DIR=target/avx2 \
    at_least 1 cargo test --release -p quadra-core --lib compiled_kernels
fi

step "aarch64 under qemu: core, runtime (threads), PyTorch fixtures, digits model, firmware twin on NEON"
(
  source scripts/aarch64-env.sh
  # qemu's default CPU has FEAT_DotProd: the sdot int8 GEMM runs, and the tests run the
  # smull path beside it. It has FEAT_FP16 too: the half-precision reference is checked
  # against fmla/fmul/fadd .8h bit for bit.
  QUADRA_REQUIRE_FP16=1 QUADRA_REQUIRE_ISA=neon,neon+dotprod cargo test --release --target aarch64-unknown-linux-gnu \
    -p quadra-core -p quadra-cpu -p quadra-tests -p quadra-firmware-example
)

step "aarch64 debug build (as a user builds while developing: the fp16 asm must assemble outside its leaves)"
(
  source scripts/aarch64-env.sh
  cargo build --quiet --target aarch64-unknown-linux-gnu -p quadra-core -p quadra-cpu -p quadra-ffi
)

step "the aarch64 quadra-bench binary, built as documented and run end to end under qemu"
bash scripts/build-bench-aarch64.sh
qemu-aarch64-static target/cross/aarch64-unknown-linux-gnu/release/quadra-bench \
  --preset quadranet25-xxs --input-size 64 --iters 2 --warmup 1 --threads 2 \
  --lut-yaml target/cross/lut.yaml --json > target/cross/bench.json
grep -q '"kernel": "neon"' target/cross/bench.json
grep -q 'QuadraBlock-input:16x16x16-output:16x16x16-expand:2-kernel:3-stride:1-idskip:1' target/cross/lut.yaml
# --precision fp16 under qemu's FEAT_FP16: the half-precision GEMMs run, named as such.
qemu-aarch64-static target/cross/aarch64-unknown-linux-gnu/release/quadra-bench \
  --preset quadranet25-xxs --input-size 64 --iters 2 --warmup 1 --dtype f16 --precision fp16 \
  --no-candidates --json > target/cross/bench-fp16.json
grep -q '"kernel_path": "neon+dotprod+fp16"' target/cross/bench-fp16.json
grep -q '"fraction_of_peak": null' target/cross/bench-fp16.json
for op in qdw:24x14x7 block:24x14x5x2; do
  qemu-aarch64-static target/cross/aarch64-unknown-linux-gnu/release/quadra-bench \
    --op "$op" --iters 2 --warmup 1 --json > target/cross/op.json
  grep -q '"kernel": "neon"' target/cross/op.json
done
echo "quadra-bench ran under qemu (timings there mean nothing)"

step "the C ABI from C: header current, classify.c and the error-path test, native and aarch64 under qemu"
bash scripts/test-c.sh

step "the generated NEON QDW assembly is what its generator writes"
python3 scripts/gen_neon_qdw.py --check

step "the modeled Cortex-A76: llvm-mca (Neoverse-N1) on every NEON hot loop, against its floor"
bash scripts/a76-model.sh

step "firmware booted: the bare-metal example under qemu-system-aarch64 (virt, Cortex-A76, NEON)"
bash scripts/run-firmware.sh aarch64

step "firmware booted: the bare-metal example under qemu-system-arm (mps2-an386 Cortex-M4F, mps3-an547 Cortex-M55)"
bash scripts/run-firmware.sh cortex-m

step "bare-metal build: quadra-core and the firmware example for aarch64-unknown-none (no std, no alloc)"
RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc CARGO_TARGET_DIR=target/baremetal \
  cargo build --profile firmware -Zbuild-std=core --target aarch64-unknown-none -p quadra-core -p quadra-firmware-example
lib=target/baremetal/aarch64-unknown-none/firmware/libquadra_firmware_example.a
# Captured first: `nm | grep -q` under pipefail fails when grep exits early on a match,
# which would read as "no match".
undefined=$(aarch64-linux-gnu-nm -u "$lib")
if grep -iE 'rust_alloc|rdl_alloc|malloc' <<<"$undefined"; then
  echo "the firmware staticlib references an allocator"; exit 1
fi
echo "firmware staticlib: $(stat -c %s "$lib") bytes, no allocator symbols"
aarch64-linux-gnu-size -A "$lib" | awk '$1 ~ /^\.(text|rodata|data|bss)/ { split($1, n, "."); s[n[2]] += $2 }
  END { printf "sections over all members: text %d, rodata %d (the model is in it), data %d, bss %d (the arena)\n", s["text"], s["rodata"], s["data"], s["bss"] }'

step "all tests passed"
