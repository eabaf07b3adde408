"""Where profile files live: the built-in folder, and the folder ``nas hardware build`` writes to.

Both are searched by name (:func:`nas.get_profile`): a table built on this machine is named in an
experiment as ``profiles: [NAME]``, from any folder, like a built-in one.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Profiles shipped with nas (the repository's ``hardware/`` folder).
BUILTIN_DIR = Path(__file__).parent / "profiles"
#: Environment variable naming the folder of tables built on this machine.
USER_ENV = "NAS_HARDWARE"


def user_dir() -> Path:
    """Tables built on this machine: ``$NAS_HARDWARE``, else ``$XDG_DATA_HOME/nas/hardware``
    (``~/.local/share/nas/hardware``)."""
    if os.environ.get(USER_ENV):
        return Path(os.environ[USER_ENV]).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "nas" / "hardware"


def is_builtin(path: str | Path) -> bool:
    """Whether ``path`` is one of the built-in profile files (which a build must not extend in place)."""
    try:
        return Path(path).resolve().parent == BUILTIN_DIR.resolve()
    except OSError:
        return False


def in_user_dir(path: str | Path) -> bool:
    try:
        return Path(path).resolve().parent == user_dir().resolve()
    except OSError:
        return False
