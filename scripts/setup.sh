#!/usr/bin/env bash
# Set-up shared by the README's commands: a virtual environment under the repository
# with nas and its test extras installed, torch pinned to the CPU build
# (constraints.txt), and the datasets the tests read. Re-running is cheap: the
# install is skipped while pyproject.toml and constraints.txt are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi

stamp=.venv/.nas-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing nas and its dependencies into .venv (first run takes a few minutes)"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet --constraint constraints.txt --editable ".[test]"
    echo "$want" > "$stamp"
fi

# Fashion-MNIST comes from Debian's package (nothing is downloaded at run time by nas).
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ -z "${NAS_DATA:-}" ]; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        echo "setup: installing Debian's dataset-fashion-mnist"
        apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
    else
        echo "setup: Fashion-MNIST is missing; run 'sudo apt-get install dataset-fashion-mnist' or set NAS_DATA" >&2
    fi
fi
