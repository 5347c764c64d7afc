#!/usr/bin/env bash
# The C ABI from C: the header is what cbindgen makes of quadra-ffi; examples/c/classify.c
# and the error-path test quadra-ffi/tests/c/errors.c link the static library natively and,
# cross-built, on aarch64 under qemu; classify's logits equal `quadra infer`'s bit for bit
# on both (f32 and w8a8 models). Called by scripts/test.sh after the aarch64 setup.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/c
mkdir -p "$out/scratch"

echo "--- quadra-ffi/include/quadra.h is current"
cbindgen --quiet --config quadra-ffi/cbindgen.toml --output "$out/quadra.h" quadra-ffi/src/lib.rs
diff -u quadra-ffi/include/quadra.h "$out/quadra.h" || {
  echo "quadra.h is stale: regenerate it with the command in quadra-ffi/cbindgen.toml"; exit 1; }

cargo build --release -p quadra-ffi -p quadra-tools
models=(models/digits/rust/model.qnet "$out/digits-f32.qnet")
target/release/quadra convert --weights models/digits/digits.safetensors \
  --config models/digits/digits.json --out "$out/digits-f32.qnet" >/dev/null
input=models/digits/test_images.npy

# Logits of `classify` (raw f32) against `quadra infer` (.npy: the same floats after its header).
same_logits() {
  local raw=$1 npy=$2
  tail -c "$(stat -c %s "$raw")" "$npy" | cmp -s - "$raw" || {
    echo "C logits $raw differ from quadra infer's $npy"; exit 1; }
}

echo "--- native: cc against libquadra.a"
CFLAGS=(-O2 -std=c11 -Wall -Wextra -Werror -Iquadra-ffi/include)
LIBS=(-lpthread -ldl -lm)
cc "${CFLAGS[@]}" examples/c/classify.c target/release/libquadra.a "${LIBS[@]}" -o "$out/classify"
cc "${CFLAGS[@]}" quadra-ffi/tests/c/errors.c target/release/libquadra.a "${LIBS[@]}" -o "$out/errors"
"$out/errors" models/digits/rust/model.qnet "$out/scratch"
for m in "${models[@]}"; do
  for t in 1 2; do
    "$out/classify" "$m" "$input" --threads "$t" --out "$out/c.f32" >"$out/classify.txt"
    target/release/quadra infer --model "$m" --input "$input" --output "$out/infer.npy" >/dev/null
    same_logits "$out/c.f32" "$out/infer.npy"
  done
  echo "$m: classify == quadra infer, bit for bit ($(sed -n 2p "$out/classify.txt"))"
done

echo "--- valgrind: no memory error and nothing leaked, on every error path and a classify run"
command -v valgrind >/dev/null || {
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq valgrind >/dev/null
}
vg=(valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=9)
"${vg[@]}" "$out/errors" models/digits/rust/model.qnet "$out/scratch" >/dev/null
"${vg[@]}" "$out/classify" models/digits/rust/model.qnet "$input" --threads 2 --out "$out/c.f32" >/dev/null
echo "valgrind: errors.c and classify.c clean (no errors, nothing definitely lost)"

echo "--- aarch64: aarch64-linux-gnu-gcc -static against the cross-built libquadra.a, under qemu"
(
  source scripts/aarch64-env.sh
  # Only the static library: the crt-static target flags of aarch64-env.sh rule out a cdylib.
  cargo rustc --release --target aarch64-unknown-linux-gnu -p quadra-ffi --crate-type staticlib
  cargo build --release --target aarch64-unknown-linux-gnu -p quadra-tools
)
A=target/cross/aarch64-unknown-linux-gnu/release
# -static (qemu-user runs static binaries; see aarch64-env.sh). No -Werror: the linker warns
# that getaddrinfo/getpwuid in a static binary need glibc's shared parts, for std code
# quadra never calls; the log is shown if a link fails.
cross_cc() {
  aarch64-linux-gnu-gcc -O2 -std=c11 -Wall -Wextra -Iquadra-ffi/include -static "$1" "$A/libquadra.a" \
    "${LIBS[@]}" -o "$2" >"$out/link.log" 2>&1 || { cat "$out/link.log"; exit 1; }
}
cross_cc examples/c/classify.c "$out/classify-aarch64"
cross_cc quadra-ffi/tests/c/errors.c "$out/errors-aarch64"
qemu-aarch64-static "$out/errors-aarch64" models/digits/rust/model.qnet "$out/scratch"
for m in "${models[@]}"; do
  qemu-aarch64-static "$out/classify-aarch64" "$m" "$input" --threads 2 --out "$out/c.f32" >"$out/classify.txt"
  qemu-aarch64-static "$A/quadra" infer --model "$m" --input "$input" --output "$out/infer.npy" >/dev/null
  same_logits "$out/c.f32" "$out/infer.npy"
  echo "$m (aarch64): classify == quadra infer, bit for bit ($(sed -n 2p "$out/classify.txt"))"
done
