"""A private PostgreSQL cluster for tests that stop and restart the server.

``initdb`` and ``pg_ctl`` run as the ``postgres`` OS user when the tests run as root
(PostgreSQL refuses to run as root), on a temporary data directory, a free high port on
127.0.0.1 and a socket directory inside the temporary directory, so restarting it disturbs
nothing else on the machine.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import anyio


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def cluster_unavailable() -> str | None:
    """None when a private cluster can be started here, else why not."""
    if _bin_dir() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) are not installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' OS user to run the server"
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateCluster:
    """``with PrivateCluster() as pg:`` initdb + start; stopped and deleted on exit."""

    def __init__(self) -> None:
        bin_dir = _bin_dir()
        assert bin_dir is not None
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="qortex-pg-"))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.log = self.root / "server.log"
        self.port = _free_port()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _cmd(self, *args: str) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *args]
        return list(args)

    def _run(self, *args: str) -> None:
        subprocess.run(self._cmd(*args), check=True, capture_output=True, timeout=60)

    async def _arun(self, *args: str) -> None:
        # Output to a file, not a pipe: a pipe is read until EOF, which a server process that
        # kept a copy of it would delay forever; bounded like ``_run``.
        with anyio.fail_after(90), (self.root / "pg_ctl.out").open("ab") as out:
            await anyio.run_process(self._cmd(*args), check=True, stdout=out, stderr=out)

    def __enter__(self) -> PrivateCluster:
        self.sock.mkdir()
        if os.geteuid() == 0:
            pg = pwd.getpwnam("postgres")
            for path in (self.root, self.sock):
                os.chown(path, pg.pw_uid, pg.pw_gid)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth=trust", "-E", "UTF8", "--no-sync")
        self._run(*self._ctl("start"))
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(self._cmd(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m",
                                 "immediate", "stop"), capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)

    def _ctl(self, action: str, mode: str = "fast") -> list[str]:
        options = (f"-c port={self.port} -c listen_addresses=127.0.0.1 "
                   f"-c unix_socket_directories={self.sock} -c fsync=on "
                   "-c synchronous_commit=on -c max_connections=60")
        return [str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                "-t", "60", "-m", mode, "-o", options, action]

    async def stop(self, mode: str) -> None:
        await self._arun(*self._ctl("stop", mode))

    async def start(self) -> None:
        await self._arun(*self._ctl("start"))
