#!/usr/bin/env bash
# The README's main command: set up, then the whole job on scikit-learn's digits (embedded, nothing
# to download): search mobilenetv2-tiny networks together with their compression settings for
# accuracy, latency on the measured reference CPU and compressed size (examples/demo.yaml); fine-tune,
# distil and compress the winners into real files; draw the pictures and write the report.
# Everything lands in results/demo/ (started afresh). About 5 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
out=${DEMO_OUT:-results/demo}
rm -rf "$out"
.venv/bin/nas search examples/demo.yaml --out "$out" "$@"   # winners.at_end: fine-tunes the winners too
.venv/bin/nas plot "$out"
.venv/bin/nas report "$out"
echo "demo: open $out/report.html (or read $out/report.md)"
