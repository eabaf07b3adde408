"""``python -m nas``: the ``nas`` command (also what ``torchrun -m nas finetune ...`` runs in every process)."""

from __future__ import annotations

import sys

from nas.cli import main

if __name__ == "__main__":
    sys.exit(main())
