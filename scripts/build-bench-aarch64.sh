#!/usr/bin/env bash
# Builds the static aarch64 `quadra-bench` binary to copy to a Raspberry Pi 5 or a phone:
#   bash scripts/build-bench-aarch64.sh
#   scp target/cross/aarch64-unknown-linux-gnu/release/quadra-bench pi@raspberrypi:
#   ssh pi@raspberrypi ./quadra-bench --preset quadranet36-t --threads 4 --lut-yaml lut.yaml
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-aarch64.sh
source scripts/aarch64-env.sh
cargo build --release --target aarch64-unknown-linux-gnu -p quadra-bench --bin quadra-bench
echo "built $CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/release/quadra-bench"
