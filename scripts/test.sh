#!/usr/bin/env bash
# The test command: set up (venv, install, datasets), then run the whole suite, slow tests
# included. Extra arguments go to pytest, e.g. `scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
