"""A private, throw-away PostgreSQL cluster for tests that restart the server.

The shared server (the one $CIVFLOW_TEST_PG_URL points at) is never restarted: other tests
and other people use it. This one lives in a temporary directory, listens on a free port of
127.0.0.1 and on a socket in that directory, trusts local connections (it holds test data
only, for minutes) and is deleted afterwards.

PostgreSQL refuses to run as root: as root (CI, this machine) the commands run as the
`postgres` user through `runuser`, in a directory that user owns; as any other user they
run as that user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bindir() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian layout, then pg_config)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name)
                   if Path(p).parent.parent.name.isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        path = Path(out.stdout.strip())
        if (path / "initdb").exists():
            return path
    return None


class PrivateCluster:
    """initdb, start, restart (fast or immediate), stop; `url` for SQLAlchemy."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="civflow-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self.dir.chmod(0o700)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def options(self) -> str:
        # fsync off: nothing here must survive a machine crash, only a server restart.
        return (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c max_connections=100")

    def _run(self, tool: str, *args: str, timeout: float = 120) -> str:
        cmd = [str(self.bindir / tool), *args]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n"
                               f"{done.stdout}\n{done.stderr}\n{self.log_tail()}")
        return done.stdout

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-o", self.options, "-l", str(self.log),
                  "-w", "-t", "60", "start")

    def restart(self, mode: str) -> float:
        """`pg_ctl restart -m MODE`; returns the seconds it took until the server accepts."""
        began = time.monotonic()
        self._run("pg_ctl", "-D", str(self.data), "-o", self.options, "-l", str(self.log),
                  "-m", mode, "-w", "-t", "60", "restart")
        return time.monotonic() - began

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):  # already stopped
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)

    def database_url(self, name: str) -> str:
        return self.url.rsplit("/", 1)[0] + "/" + name

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""
