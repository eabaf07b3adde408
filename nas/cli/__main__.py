"""``python -m nas.cli``: the ``nas`` command (as ``python -m nas``)."""

from __future__ import annotations

import sys

from nas.cli import main

if __name__ == "__main__":
    sys.exit(main())
