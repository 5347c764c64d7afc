#!/usr/bin/env bash
# Installs what cross-building and emulating aarch64 needs (docs/ARCHITECTURE.md, "aarch64"): Debian's
# rustc with the aarch64 std and the std sources (for the bare-metal build-std), the
# aarch64 linker, and qemu-user; and cbindgen, which checks the C header. Idempotent;
# needs root (or sudo).
set -euo pipefail
need=()
[ -x /usr/bin/rustc ] && /usr/bin/rustc --print target-libdir --target aarch64-unknown-linux-gnu >/dev/null 2>&1 \
  && [ -d "$(/usr/bin/rustc --print target-libdir --target aarch64-unknown-linux-gnu)" ] || need+=(rustc-web libstd-rust-web-dev:arm64)
[ -d /usr/lib/rustlib/src/rust/library/core ] || need+=(rust-web-src)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v cbindgen >/dev/null || need+=(cbindgen)
if [ ${#need[@]} -eq 0 ]; then
  echo "aarch64 toolchain: already installed"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "aarch64 toolchain: installing ${need[*]}"
$SUDO dpkg --add-architecture arm64
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq rustc-web libstd-rust-web-dev:arm64 \
  gcc-aarch64-linux-gnu qemu-user-static rust-web-src cbindgen >/dev/null
