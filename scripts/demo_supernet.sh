#!/usr/bin/env bash
# Once-for-all in one picture: the shipped digits supernet (scripts/train_demo_supernet.sh made it)
# specialised for two devices, the measured reference CPU and an STM32H743 microcontroller. Each search
# scores its 100 candidates by extracting them from the supernet (no training): about a minute each.
# Then each run's pictures and report, and results/demo-supernet/devices.png: both fronts, each also
# timed on the other device.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
out=${DEMO_OUT:-results/demo-supernet}
rm -rf "$out"
for device in cpu mcu; do
  .venv/bin/nas search "examples/supernet-$device.yaml" --out "$out/$device" "$@"
  .venv/bin/nas plot "$out/$device"
  .venv/bin/nas report "$out/$device"
done
.venv/bin/nas plot "$out/cpu" "$out/mcu" --what devices --out "$out"
echo "demo: open $out/devices.png, then $out/cpu/report.html and $out/mcu/report.html"
