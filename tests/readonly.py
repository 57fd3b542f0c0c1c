"""A directory nobody can write, even root (the tests run as root in CI, and root ignores
permission bits)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _run(*argv: str) -> bool:
    if shutil.which(argv[0]) is None:
        return False
    return subprocess.run(argv, capture_output=True, timeout=30).returncode == 0


@contextmanager
def read_only_directory(path: Path) -> Iterator[str]:
    """Make ``path`` (created empty) read-only for this block; yields how it was done.

    Not root: mode 0555. Root: a read-only tmpfs mounted over it (needs CAP_SYS_ADMIN), else
    ``chattr +i`` (needs a file system with attributes), else the test cannot run here.
    """
    path.mkdir(parents=True)
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            assert not os.access(path, os.W_OK)
            yield "mode 0555"
        finally:
            path.chmod(0o755)
    elif _run("mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)):
        try:
            assert not os.access(path, os.W_OK)
            yield "read-only tmpfs mount"
        finally:
            assert _run("umount", str(path)), f"could not unmount {path}"
    elif _run("chattr", "+i", str(path)):
        try:
            assert not os.access(path, os.W_OK)
            yield "chattr +i"
        finally:
            assert _run("chattr", "-i", str(path)), f"could not clear +i on {path}"
    else:  # pragma: no cover - depends on the machine
        pytest.skip("running as root without mount or chattr: no way to make a read-only "
                    "directory here")
