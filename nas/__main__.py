"""``python -m nas``: the same as the ``nas`` command (used to start worker processes)."""

import sys

from nas.cli import main

sys.exit(main())
