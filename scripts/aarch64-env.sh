# Source this to cross-build for aarch64 with Debian's rustc (docs/ARCHITECTURE.md, "aarch64"):
#   source scripts/aarch64-env.sh && cargo test --target aarch64-unknown-linux-gnu -p quadra-core
# rustup's rustc stays first on PATH for host work; only these cargo runs use /usr/bin/rustc.
export RUSTC=/usr/bin/rustc
export RUSTDOC=/usr/bin/rustdoc
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/cross}"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64-static
# Static linking: under qemu-user here a dynamically linked binary hangs at its first
# thread spawn, and the test harness and rayon spawn threads.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static"
