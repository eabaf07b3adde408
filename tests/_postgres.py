"""A throw-away PostgreSQL server for tests: initdb into a temporary folder, listen on loopback only.

Debian's ``postgresql`` package provides the binaries (``scripts/setup.sh`` installs it); no system
service is used or needed. PostgreSQL refuses to run as root, so when the tests run as root the
server runs as the ``postgres`` OS user (``runuser``), in a folder owned by that user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def bin_dir() -> Path | None:
    """The folder of ``initdb``/``pg_ctl``: the newest ``/usr/lib/postgresql/*/bin``, else the PATH's."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda p: [int(x) for x in re.findall(r"\d+", p.parent.parent.name)] or [0])
    if versions:
        return versions[-1].parent
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("pg_ctl") else None


def missing_reason() -> str | None:
    """Why a server cannot be started here, or None."""
    if bin_dir() is None:
        return "PostgreSQL server binaries not found (apt-get install postgresql; scripts/setup.sh does it)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, but there is no 'postgres' OS user to run the server as"
        if shutil.which("runuser") is None:
            return "running as root, but runuser (util-linux) is missing"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def postgres_server(database: str = "nas", user: str = "nas") -> Iterator[str]:
    """Start a server, create ``user`` (with a random password) owning ``database``; yields the URL
    ``postgresql://user:password@127.0.0.1:PORT/database``. Stopped and deleted on exit."""
    bindir = bin_dir()
    assert bindir is not None, missing_reason()
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    # Not under pytest's tmp_path: its parents are private to root, and the server runs as postgres.
    top = Path(tempfile.mkdtemp(prefix="nas-postgres-"))
    data, sockets = top / "data", top / "sockets"
    data.mkdir()
    sockets.mkdir()
    if as_root:
        owner = pwd.getpwnam("postgres")
        for p in (top, data, sockets):
            os.chown(p, owner.pw_uid, owner.pw_gid)
    port = _free_port()
    password = secrets.token_hex(8)

    def run(*args: str) -> None:
        done = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120, cwd=top)
        if done.returncode != 0:
            log = (top / "server.log").read_text(errors="replace")[-2000:] if (top / "server.log").exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr[-2000:]}\n{log}")

    started = False
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
            "--auth-host=scram-sha-256", "--no-sync", "--encoding=UTF8", "--locale=C")
        options = (f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={sockets} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(top / "server.log"), "-o", options, "-w", "-t", "60",
            "start")
        started = True
        sql = (f"CREATE USER {user} CREATEDB PASSWORD '{password}'; CREATE DATABASE {database} OWNER {user};")
        for statement in sql.split("; "):
            run(str(bindir / "psql"), "-h", str(sockets), "-p", str(port), "-U", "postgres", "-d", "postgres",
                "-v", "ON_ERROR_STOP=1", "-q", "-c", statement)
        yield f"postgresql://{user}:{password}@127.0.0.1:{port}/{database}"
    finally:
        if started:
            subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=60, cwd=top)
        shutil.rmtree(top, ignore_errors=True)


#: A worker that opens ``sys.argv[1]`` with nas's storage once the file ``sys.argv[3]`` exists (so that several
#: start at the same moment, as workers on many machines do), after saying it is ready (file ``sys.argv[2]``).
OPEN_AT = """
import os, sys, time
from nas.search import make_storage
url, ready, go = sys.argv[1:]
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.002)
make_storage(url).engine.dispose()
"""


def open_at_once(url: str, n: int = 3) -> list[subprocess.CompletedProcess[str]]:
    """``n`` processes open ``url`` at the same moment (once all have imported nas); their results."""
    import sys
    import time

    with tempfile.TemporaryDirectory(prefix="nas-at-once-") as folder:
        go = Path(folder) / "go"
        ready = [Path(folder) / f"ready{i}" for i in range(n)]
        procs = [subprocess.Popen([sys.executable, "-c", OPEN_AT, url, str(r), str(go)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for r in ready]
        end = time.monotonic() + 120
        while not all(r.exists() for r in ready) and time.monotonic() < end and all(p.poll() is None for p in procs):
            time.sleep(0.01)
        go.touch()
        return [subprocess.CompletedProcess(p.args, p.wait(timeout=120), *p.communicate()) for p in procs]
