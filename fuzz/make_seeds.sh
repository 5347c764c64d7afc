#!/usr/bin/env bash
# Remakes the seed corpus of the .qnet parser fuzz target (run after a format change):
# a tiny searched network (4/4/8/8 channels, a K=3 block, an identity block, a K=5 block)
# with random weights, converted to f32, f16, int8 and w8a8 (all-int8 and mixed) by the
# quadra CLI.
#   bash fuzz/make_seeds.sh        (needs python3 with torch and safetensors)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/tiny.json" <<'JSON'
{"in_chans": 1, "num_classes": 3, "dims": [4, 4, 8, 8], "depths": [1, 1, 1, 0],
 "blocks": [[{"kernel": 3, "expansion": 2}], ["identity"], [{"kernel": 5, "expansion": 1}], []]}
JSON
python3 - "$root" "$tmp" <<'PY'
import json, pathlib, sys
import torch
from safetensors.torch import save_file
root, tmp = map(pathlib.Path, sys.argv[1:])
sys.path.insert(0, str(root / "tools" / "reference"))
from quadranet import QuadraNet, randomize_
net = randomize_(QuadraNet(json.loads((tmp / "tiny.json").read_text())), 7)
save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(tmp / "tiny.safetensors"))
PY
cargo build --release -q -p quadra-tools --manifest-path "$root/Cargo.toml"
for dtype in f32 f16 int8 w8a8; do
  (cd "$tmp" && "$root/target/release/quadra" convert --weights tiny.safetensors --config tiny.json \
     --dtype "$dtype" --out "$root/fuzz/corpus/qnet_parse/tiny-$dtype.qnet")
done
# w8a8 with units kept in f32 (a target all-int8 cannot reach): the float-block section.
(cd "$tmp" && "$root/target/release/quadra" convert --weights tiny.safetensors --config tiny.json \
   --dtype w8a8 --min-cosine 0.99999 --input-size 64 --out "$root/fuzz/corpus/qnet_parse/tiny-w8a8-mixed.qnet")
