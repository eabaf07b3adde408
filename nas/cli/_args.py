"""Reading what a command-line argument names: a candidate file, a JSON object or JSON file.

Only the command modules read these (their messages name the argument), so they live
here rather than in a library floor.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nas.errors import CompressError, NasError
from nas.spec import Candidate


def read_candidate(path: str | Path) -> Candidate:
    """The :class:`~nas.spec.Candidate` in a JSON file (a line of ``nas sample --json``)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise NasError(f"cannot read candidate file {str(path)!r}: {exc.strerror}.") from None
    except UnicodeDecodeError:
        raise NasError(f"candidate file {str(path)!r} is not UTF-8 text (a binary or damaged file?).") from None
    return Candidate.from_json(text)


def read_json_arg(text_or_path: str, what: str) -> Any:
    """``text_or_path`` parsed as JSON: the text itself when it starts with ``{`` or names no file,
    else the file's contents. ``what`` names the argument in the error (``"--spec"``)."""
    path = Path(text_or_path)
    try:
        text = path.read_text() if not text_or_path.lstrip().startswith("{") and path.exists() else text_or_path
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CompressError(f"{what} is neither a JSON object nor a readable JSON file: {exc}.") from None
    except OSError as exc:
        raise CompressError(f"cannot read {what} {text_or_path!r}: {exc.strerror}.") from None
