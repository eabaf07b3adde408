"""Reading what a command-line argument names: a candidate file, a JSON object or JSON file.

Only the command modules read these (their messages name the argument), so they live
here rather than in a library floor.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from nas.compress import StageOptions
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
    """``text_or_path`` parsed as JSON: the text itself when it starts with ``{``, else the file it names.
    ``what`` names the argument in the error (``"--spec"``), which says whether the file is missing or
    not JSON."""
    if text_or_path.lstrip().startswith("{"):
        try:
            return json.loads(text_or_path)
        except json.JSONDecodeError as exc:
            raise CompressError(f"{what} is not a valid JSON object: {exc}.") from None
    path = Path(text_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CompressError(f"{what} {text_or_path!r} is neither a JSON object (starting with '{{') nor an "
                            f"existing file (no {path.resolve()}).") from None
    except UnicodeDecodeError:
        raise CompressError(f"{what} file {text_or_path!r} is not JSON text (a binary file?).") from None
    except OSError as exc:
        raise CompressError(f"cannot read {what} {text_or_path!r}: {exc.strerror}.") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CompressError(f"{what} file {text_or_path!r} is not valid JSON: {exc}.") from None


def add_stage_arguments(p: argparse.ArgumentParser) -> None:
    """How the compression stages work (:class:`nas.compress.StageOptions`): ``nas compress`` and ``nas finetune``."""
    g = p.add_argument_group("compression methods (how the spec's stages run)")
    g.add_argument("--prune-scope", choices=["layer", "global"], default="layer",
                   help="prune each layer to its sparsity, or rank all conv (and all linear) weights together "
                        "(default: %(default)s)")
    g.add_argument("--centroid-init", choices=["linear", "density", "random"], default="linear",
                   help="k-means centroid initialization of codebook_bits (Deep Compression's Figure 8; "
                        "default: %(default)s)")
    g.add_argument("--lowrank-method", choices=["two_component", "cp"], default="two_component",
                   help="factorization for lowrank_ratio: Jaderberg's two components or CP (default: %(default)s; "
                        "nas.size_bits prices two_component)")


def stage_options(args: argparse.Namespace) -> StageOptions:
    return StageOptions(scope=args.prune_scope, init=args.centroid_init, lowrank_method=args.lowrank_method)
