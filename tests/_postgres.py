"""A private PostgreSQL server for tests: ``postgres_url`` (module-scoped fixture) yields the URL of a fresh
server started for the test module and stops it afterwards.

initdb in a temporary folder, a free local port, trust auth, from Debian's ``postgresql`` package (binaries under
/usr/lib/postgresql/*/bin) or initdb/pg_ctl on PATH; as root it runs them as the unprivileged ``postgres`` user
(initdb refuses root). Skips, saying why, when no server or no psycopg2 is found. Use it with
``from _postgres import postgres_url``.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

__all__ = ["postgres_url"]


def _server_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
                   if p.split("/")[4].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install psycopg2-binary, the [test] extra)")
    bindir = _server_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server: initdb/pg_ctl not under /usr/lib/postgresql/*/bin nor on PATH "
                    "(apt-get install postgresql; .ci/run installs it)")
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: use the package's unprivileged user
        try:
            import pwd

            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("running as root without runuser to start the server as 'postgres'")
        prefix = [runuser, "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="srblocks-pg-"))
    if prefix:
        os.chown(root, user.pw_uid, user.pw_gid)
    data, log = root / "data", root / "server.log"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = lambda *args: subprocess.run([*prefix, *map(str, args)], check=True, capture_output=True, text=True,
                                       timeout=120)
    try:
        run(bindir / "initdb", "-D", data, "-U", "srblocks", "--auth=trust", "-E", "UTF8", "--no-sync")
        run(bindir / "pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50", "start")
    except subprocess.CalledProcessError as exc:
        tail = log.read_text()[-2000:] if log.is_file() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"could not start PostgreSQL: {exc.stderr}\n{tail}") from None
    try:
        yield f"postgresql://srblocks@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
