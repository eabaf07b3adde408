#!/usr/bin/env bash
# The main job, end to end on a fresh machine: set up, then draw candidates from the default
# search space and print their exact costs. Extra arguments go to `nas sample`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/nas sample mobilenetv2 -n 10 "$@"
