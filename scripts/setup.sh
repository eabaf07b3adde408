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

apt_updated=
apt_install() {  # Debian packages, as root; the package lists are refreshed once
    if [ -z "$apt_updated" ]; then
        apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
can_apt() { command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; }

# Fashion-MNIST comes from Debian's package (nothing is downloaded at run time by nas).
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ -z "${NAS_DATA:-}" ]; then
    if can_apt; then
        echo "setup: installing Debian's dataset-fashion-mnist"
        apt_install dataset-fashion-mnist
    else
        echo "setup: Fashion-MNIST is missing; run 'sudo apt-get install dataset-fashion-mnist' or set NAS_DATA" >&2
    fi
fi

# PostgreSQL server binaries for the shared-study test (tests/test_postgres.py starts its own
# server on loopback in a temporary folder; no system service is used).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
    if can_apt; then
        echo "setup: installing Debian's postgresql"
        apt_install postgresql
    else
        echo "setup: PostgreSQL is missing; run 'sudo apt-get install postgresql' (tests/test_postgres.py is skipped without it)" >&2
    fi
fi
