#!/usr/bin/env bash
# Builds examples/baremetal for a bare-metal target and boots it under QEMU's system
# emulator; prints the transcript and fails on a wrong accuracy, a fault, a logits checksum
# different from a Linux run of the same images, or an error mode that does not end as an
# error naming its problem.
#
#   bash scripts/run-firmware.sh aarch64    # QEMU virt, Cortex-A76, NEON kernels
#   bash scripts/run-firmware.sh cortex-m   # QEMU mps2-an386 (Cortex-M4F, thumbv7em) and
#                                           # mps3-an547 (Cortex-M55, thumbv8m.main): the
#                                           # scalar kernels
#
# The Linux reference: `quadra infer` built for aarch64 and run under qemu-aarch64 (the same
# NEON kernel code, so the same bits), and for Cortex-M the host's scalar kernels
# (QUADRA_KERNEL=scalar). QEMU's TCG timings mean nothing about a real board: none are shown.
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:?usage: run-firmware.sh aarch64|cortex-m}
out=target/firmware
mkdir -p "$out"

bash scripts/setup-aarch64.sh >/dev/null
need=()
command -v qemu-system-aarch64 >/dev/null || need+=(qemu-system-arm)
command -v arm-none-eabi-ld >/dev/null || need+=(binutils-arm-none-eabi)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The images the firmware embeds (build.rs takes the first 36 held-out digits), as an .npy.
python3 - "$out/images.npy" <<'PY'
import struct, sys
b = open("models/digits/test_images.npy", "rb").read()
hl = struct.unpack("<H", b[8:10])[0]
data = b[10 + hl:][: 36 * 32 * 32 * 4]
d = "{'descr': '<f4', 'fortran_order': False, 'shape': (36, 1, 32, 32), }"
d += " " * (-(10 + len(d) + 1) % 64) + "\n"
open(sys.argv[1], "wb").write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(d)) + d.encode() + data)
PY

# "<checksum> <correct>/<n>" of a logits .npy: FNV-1a over its f32 bytes, as the firmware
# computes it, and the top-1 matches against the labels.
summary() {
  python3 - "$1" <<'PY'
import struct, sys
def data(p):
    b = open(p, "rb").read()
    return b[10 + struct.unpack("<H", b[8:10])[0]:]
raw = data(sys.argv[1])
h = 0xcbf29ce484222325
for x in raw:
    h = ((h ^ x) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
logits = struct.unpack("<%df" % (len(raw) // 4), raw)
n = len(logits) // 10
labels = struct.unpack("<%dq" % n, data("models/digits/test_labels.npy")[: 8 * n])
correct = 0
for i in range(n):
    row = logits[10 * i:10 * i + 10]
    best = 0
    for c in range(10):
        if row[c] > row[best]:
            best = c
    correct += best == labels[i]
print("%016x %d/%d" % (h, correct, n))
PY
}

# Boots `elf` on `qemu...` with the semihosting command line `mode`; the transcript goes
# to $out/<name>-<mode>.txt; returns QEMU's exit status (the firmware's).
boot() {
  local name=$1 mode=$2 elf=$3; shift 3
  local log="$out/$name-$mode.txt"
  set +e
  timeout 120 "$@" -nographic -monitor none -serial none \
    -semihosting-config "enable=on,target=native,arg=quadra,arg=$mode" -kernel "$elf" >"$log" 2>&1
  local rc=$?
  set -e
  [ $rc -eq 124 ] && { cat "$log"; echo "$name $mode: hung (killed after 120 s)"; exit 1; }
  return $rc
}

# Runs the image; `ref` is the reference summary.
check() {
  local name=$1 ref=$2 elf=$3; shift 3
  local rc=0
  boot "$name" run "$elf" "$@" || rc=$?
  cat "$out/$name-run.txt"
  [ $rc -eq 0 ] || { echo "$name: exit status $rc"; exit 1; }
  local got
  got="$(sed -n 's/^logits checksum //p' "$out/$name-run.txt") $(sed -n 's/^accuracy //p' "$out/$name-run.txt")"
  [ "$got" = "$ref" ] || { echo "$name: got '$got', the Linux reference is '$ref'"; exit 1; }
  echo "$name: accuracy and logits checksum equal the Linux run's ($ref)"
}

# The error modes (a build with the error-modes feature): a broken model, a short arena and a
# short input must each exit 1 with the core's error naming its problem; a fault must be
# reported by the exception handler (exit 3).
check_errors() {
  local name=$1 elf=$2; shift 2
  local rc
  for mode in bad-model:checksum small-arena:arena bad-input:input; do
    rc=0
    boot "$name" "${mode%%:*}" "$elf" "$@" || rc=$?
    local said
    said=$(grep '^error: ' "$out/$name-${mode%%:*}.txt" || true)
    if [ $rc -ne 1 ] || [[ "$said" != *"${mode##*:}"* ]]; then
      cat "$out/$name-${mode%%:*}.txt"
      echo "$name ${mode%%:*}: status $rc, expected 1 and an error naming the ${mode##*:}"; exit 1
    fi
    echo "$name ${mode%%:*}: exit 1, $said"
  done
  # A fault (an undefined instruction): the handler reports it and the exit status is 3.
  rc=0
  boot "$name" fault "$elf" "$@" || rc=$?
  said=$(grep '^exception: ' "$out/$name-fault.txt" || true)
  if [ $rc -ne 3 ] || [ -z "$said" ]; then
    cat "$out/$name-fault.txt"; echo "$name fault: status $rc, expected 3 and the exception reported"; exit 1
  fi
  echo "$name fault: exit 3, $said"
}

# Flash (text + rodata) and RAM (data + bss) of an ELF, and the stack measured in the run.
sizes() {
  local name=$1 size=$2 elf=$3
  "$size" -A "$elf" | awk -v n="$name" '
    $1 == ".text" || $1 == ".vectors" { t += $2 } $1 == ".rodata" { r += $2 }
    $1 == ".data" { d += $2 } $1 == ".bss" { b += $2 }
    END { printf "%s: flash %d B (text %d, rodata %d), RAM %d B (data %d, bss %d)", n, t + r, t, r, d + b, d, b }'
  echo ", stack $(sed -n 's/^stack high-water //p' "$out/$name-run.txt")"
}

# Builds for target $1, board $2, CPU $3 with linker $4, the model in directory $5 (an
# --emit-rust output), extra cargo arguments after; copies the ELF to $out/$6.elf.
build() {
  QUADRA_BOARD=$2 QUADRA_FIRMWARE_MODEL=$PWD/$5 RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc \
    CARGO_TARGET_DIR=target/baremetal RUSTFLAGS="-C target-cpu=$3 -C linker=$4 -C linker-flavor=ld" \
    cargo build --quiet --profile firmware -Zbuild-std=core --target "$1" -p quadra-baremetal-example "${@:7}"
  cp "target/baremetal/$1/firmware/quadra-baremetal" "$out/$6.elf"
}

# The digits model in f32 too (the committed one is w8a8): the f32 kernels and stack.
host_quadra() { cargo run --quiet --release -p quadra-tools -- "$@"; }
host_quadra convert --weights models/digits/digits.safetensors --config models/digits/digits.json \
  --dtype f32 --input-size 32 --emit-rust "$out/model-f32" --quiet >/dev/null

# Runs one model ($1: a --emit-rust directory, $2: its name) on one board: the image
# against `ref` ($3), then its sizes. The rest: target, board, cpu, linker, size tool, qemu.
one() {
  local dir=$1 model=$2 ref=$3 target=$4 board=$5 cpu=$6 linker=$7 size=$8; shift 8
  build "$target" "$board" "$cpu" "$linker" "$dir" "$board-$model"
  check "$board-$model" "$ref" "$out/$board-$model.elf" "$@"
  sizes "$board-$model" "$size" "$out/$board-$model.elf" | tee -a "$out/sizes.txt"
}

: >"$out/sizes.txt"
case "$which" in
  aarch64)
    (source scripts/aarch64-env.sh && cargo build --quiet --release --target aarch64-unknown-linux-gnu -p quadra-tools)
    A=target/cross/aarch64-unknown-linux-gnu/release/quadra
    qemu=(qemu-system-aarch64 -M virt -cpu cortex-a76 -m 256M)
    for m in w8a8:models/digits/rust f32:$out/model-f32; do
      qemu-aarch64-static "$A" infer --model "${m#*:}/model.qnet" --input "$out/images.npy" \
        --output "$out/ref-aarch64-${m%%:*}.npy" >/dev/null
      one "${m#*:}" "${m%%:*}" "$(summary "$out/ref-aarch64-${m%%:*}.npy")" aarch64-unknown-none virt \
        cortex-a76 aarch64-linux-gnu-ld aarch64-linux-gnu-size "${qemu[@]}"
    done
    build aarch64-unknown-none virt cortex-a76 aarch64-linux-gnu-ld models/digits/rust virt-errors --features error-modes
    check_errors virt "$out/virt-errors.elf" "${qemu[@]}"
    ;;
  cortex-m)
    for m in w8a8:models/digits/rust f32:$out/model-f32; do
      QUADRA_KERNEL=scalar host_quadra infer --model "${m#*:}/model.qnet" --input "$out/images.npy" \
        --output "$out/ref-scalar-${m%%:*}.npy" >/dev/null
      one "${m#*:}" "${m%%:*}" "$(summary "$out/ref-scalar-${m%%:*}.npy")" thumbv7em-none-eabihf \
        mps2-an386 cortex-m4 arm-none-eabi-ld arm-none-eabi-size qemu-system-arm -M mps2-an386 -cpu cortex-m4
    done
    build thumbv7em-none-eabihf mps2-an386 cortex-m4 arm-none-eabi-ld models/digits/rust mps2-an386-errors --features error-modes
    check_errors mps2-an386 "$out/mps2-an386-errors.elf" qemu-system-arm -M mps2-an386 -cpu cortex-m4
    # ARMv8-M Mainline on the Cortex-M55 board. Code generated for the Cortex-M33 (the same
    # architecture without MVE): Debian's rustc 1.96 (its LLVM) aborts compiling `core`
    # with -C target-cpu=cortex-m55, with or without MVE.
    one models/digits/rust w8a8 "$(summary "$out/ref-scalar-w8a8.npy")" thumbv8m.main-none-eabihf \
      mps3-an547 cortex-m33 arm-none-eabi-ld arm-none-eabi-size qemu-system-arm -M mps3-an547 -cpu cortex-m55
    ;;
  *) echo "usage: run-firmware.sh aarch64|cortex-m"; exit 2 ;;
esac
echo "--- sizes"
cat "$out/sizes.txt"
