"""The Ray instance a search runs on: a cluster at an address, or a local instance of its own.

**Token authentication.** Ray 2.59+ turns it on for a new local ``ray.init()`` cluster when
``RAY_AUTH_MODE`` is unset, and then writes a token to ``~/.ray/auth_token`` if it finds none. The choice
here, made explicitly: the local instance keeps authentication on, with a fresh random token for this search
only, held in this process's environment (``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN``) from which the Ray
processes it starts inherit it, and forgotten when the search ends. Nothing is written to the home folder,
and the instance is not open: Ray's ports listen on every interface even for a local instance, so with
authentication off any user of a shared machine (or of its network) could run code in our workers. The
user's settings win: ``RAY_AUTH_MODE=disabled`` turns it off, and a token given in ``RAY_AUTH_TOKEN`` or
``RAY_AUTH_TOKEN_PATH`` is used (with ``RAY_AUTH_MODE=token`` set for it when unset). With ``--address`` the
cluster decides: Ray never turns tokens on by itself for an explicit address, so a cluster started with a
token needs that token in ``RAY_AUTH_TOKEN``/``RAY_AUTH_TOKEN_PATH`` (README, "Many machines").
"
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Iterator
from typing import Any

from nas.errors import NasError

#: Object store of a local instance: trials exchange only small results, so Ray's default (30% of memory) is waste.
OBJECT_STORE_BYTES = 128 * 2**20
#: Environment of the driver while a search runs: Tune's plain output engine at verbose=0 prints nothing, and
#: results may omit metrics (a trial rejected before training reports no validation accuracy to ASHA).
#: A snapshot of the experiment after every checkpoint (num_to_keep=1 forces one) is wanted, not worth a warning.
_QUIET_ENV = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
              "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}
_AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")

@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """Connect to a cluster (``address``), or start a local instance of ``num_cpus`` CPUs (default:
    ``$NAS_RAY_CPUS``, else the machine's), quietly and with token authentication as the module docstring
    says; shut it down after."""
    import ray

    if ray.is_initialized():
        yield
        return
    saved = {k: os.environ.get(k) for k in (*_AUTH_ENV, *_QUIET_ENV)}
    os.environ.update(_QUIET_ENV)
    try:
        _token_auth(local=address is None)
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "logging_level": logging.WARNING}
        if address is None:
            kwargs.update(num_cpus=num_cpus or _env_cpus() or os.cpu_count() or 1,
                          object_store_memory=OBJECT_STORE_BYTES)
        try:
            # "local": a new instance even when ``ray start`` left a cluster (or its address file) on this machine.
            ray.init(address=address or "local", **kwargs)
        except Exception as exc:  # ConnectionError, AuthenticationError, RuntimeError: one line with what to do
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            raise NasError(
                f"cannot start or reach {where}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                + ("; a cluster with token authentication needs its token here: RAY_AUTH_TOKEN=... or "
                   "RAY_AUTH_TOKEN_PATH=FILE (see README, Many machines)." if address else ".")) from None
        try:
            yield
        finally:
            ray.shutdown()
    finally:
        changed = {k: v for k, v in saved.items() if os.environ.get(k) != v}
        for k, v in changed.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if any(k in _AUTH_ENV for k in changed):
            _refresh_ray_config()


def _env_cpus() -> int | None:
    text = os.environ.get("NAS_RAY_CPUS", "").strip()
    if text and (not text.isdigit() or int(text) < 1):
        raise NasError(f"NAS_RAY_CPUS must be a whole number of CPUs >= 1, but got {text!r}.")
    return int(text) if text else None


def _token_auth(local: bool) -> None:
    """Ray's token authentication, explicitly (see the module docstring): the user's ``RAY_AUTH_MODE`` wins; a
    token given in the environment is used; a local instance otherwise gets a fresh token of its own."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        os.environ["RAY_AUTH_MODE"] = "token"
    elif local:
        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    else:
        return  # an explicit address without a token: Ray connects without one (a cluster without tokens)
    _refresh_ray_config()


def _refresh_ray_config() -> None:
    """Ray reads RAY_AUTH_MODE into a config cached at import; re-read it, as Ray's own ``ray.init`` does when
    it turns tokens on (``_enable_token_auth``), and drop a cached token."""
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()

