#!/usr/bin/env bash
# Rebuilds hardware/reference-cpu.json, the measured profile of this project's reference
# machine (2-core cloud VM, torch CPU build, 1 thread, batch 1), for the built-in spaces.
# Run on an otherwise idle machine; it takes about 10 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
nas=.venv/bin/nas
rm -f hardware/reference-cpu.json
for space in mobilenetv2 mobilenetv2-tiny lenet mobilenetv2-imagenet \
             mobilenetv2-0.35-224 mobilenetv2-0.5-224 mobilenetv2-0.75-224 mobilenetv2-1.0-224 \
             mobilenetv2-1.3-224 mobilenetv2-1.4-224 mobilenetv1-1.0-224; do
    $nas hardware build --space "$space" --name reference-cpu --out hardware
done
# One calibration per input shape (the fixed 224x224 networks share mobilenetv2-imagenet's).
for space in mobilenetv2 mobilenetv2-tiny lenet mobilenetv2-imagenet; do
    $nas hardware calibrate reference-cpu --space "$space" -n 30
done
