"""Numbered text lines from a list, an iterator, a file or a stream, read twice.

An import validates a whole file before it changes anything, then applies it: it reads its
input twice without holding it in memory. A path is simply opened again; a list is iterated
again; a one-shot iterator or stream (stdin) is copied to a temporary file on the first
read and read back from there. Every line is bounded (``MAX_LINE_BYTES``) and must be UTF-8,
so a hostile file costs at most one line of memory and is refused by line number.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import IO, Final, cast

import anyio
import anyio.to_thread

from qortex_mcp.errors import InvalidInput

__all__ = ["MAX_LINE_BYTES", "LineSource", "source_of"]

MAX_LINE_BYTES: Final = 1 << 20
"""Longest line accepted (an exported record is at most a few tens of KiB)."""
_CHUNK: Final = 1 << 20

Numbered = AsyncIterator[tuple[int, str]]


class LineSource:
    """``lines()`` yields ``(line number, text without its line break)``; call it twice."""

    def lines(self) -> Numbered:  # pragma: no cover - every source overrides it
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release what the source holds (a spooled copy)."""


def _text(number: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"line {number}: not UTF-8 text (byte {raw[exc.start]:#04x} at "
                           f"column {exc.start + 1})") from None


def _too_long(number: int) -> InvalidInput:
    return InvalidInput(f"line {number} is longer than {MAX_LINE_BYTES} bytes")


async def _binary_lines(read: IO[bytes]) -> Numbered:
    """Split a binary stream into bounded UTF-8 lines, reading 1 MiB at a time in a thread."""
    buf = b""
    number = 0
    while True:
        chunk = await anyio.to_thread.run_sync(read.read, _CHUNK)
        if not chunk:
            break
        buf += chunk
        *complete, buf = buf.split(b"\n")
        for raw in complete:
            number += 1
            if len(raw) > MAX_LINE_BYTES:
                raise _too_long(number)
            yield number, _text(number, raw)
        if len(buf) > MAX_LINE_BYTES:
            raise _too_long(number + 1)
    if buf:
        yield number + 1, _text(number + 1, buf)


def _checked(number: int, line: str) -> str:
    """A line given as text: without its line break, bounded, and encodable as UTF-8."""
    if line.endswith("\n"):
        line = line[:-1]
    if "\n" in line:
        raise InvalidInput(f"line {number} contains a line break")
    if len(line) > MAX_LINE_BYTES // 4 and len(line.encode("utf-8", "surrogatepass")) \
            > MAX_LINE_BYTES:
        raise _too_long(number)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"line {number}: not UTF-8 text (a lone surrogate)") from None
    return line


class _PathSource(LineSource):
    def __init__(self, path: Path) -> None:
        self.path = path

    async def lines(self) -> Numbered:
        try:
            handle = await anyio.to_thread.run_sync(self.path.open, "rb")
        except OSError as exc:
            raise InvalidInput(f"cannot read {self.path}: {exc.strerror}") from None
        try:
            async for item in _binary_lines(handle):
                yield item
        finally:
            handle.close()


class _SequenceSource(LineSource):
    def __init__(self, lines: Sequence[str]) -> None:
        self._lines = lines

    async def lines(self) -> Numbered:
        for number, line in enumerate(self._lines, 1):
            yield number, _checked(number, line)


class _SpooledSource(LineSource):
    """A one-shot input: the first read copies it to a temporary file, the second reads that."""

    def __init__(self, origin: Iterable[str] | AsyncIterable[str] | IO[bytes]) -> None:
        self._origin = origin
        self._spool: IO[bytes] | None = None

    async def _first(self) -> Numbered:
        origin = self._origin
        if isinstance(origin, AsyncIterable):
            number = 0
            async for line in origin:
                number += 1
                yield number, _checked(number, line)
        elif hasattr(origin, "read"):  # a binary stream (a file object iterates lines too)
            async for item in _binary_lines(cast("IO[bytes]", origin)):
                yield item
        else:
            for number, line in enumerate(origin, 1):
                yield number, _checked(number, line)

    async def lines(self) -> Numbered:
        if self._spool is not None:
            spool = self._spool
            await anyio.to_thread.run_sync(spool.seek, 0)
            async for item in _binary_lines(spool):
                yield item
            return
        # The temporary file is private (mode 0600) and deleted when closed.
        spool = self._spool = await anyio.to_thread.run_sync(tempfile.TemporaryFile, "w+b")
        pending: list[bytes] = []
        size = 0
        async for number, text in self._first():
            raw = text.encode("utf-8")
            pending.append(raw)
            size += len(raw) + 1
            if size >= _CHUNK:
                await anyio.to_thread.run_sync(spool.write, b"\n".join(pending) + b"\n")
                pending, size = [], 0
            yield number, text
        if pending:
            await anyio.to_thread.run_sync(spool.write, b"\n".join(pending) + b"\n")

    async def aclose(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None


def source_of(
    lines: Iterable[str] | AsyncIterable[str] | str | os.PathLike[str] | IO[bytes],
) -> LineSource:
    """The right way to read ``lines`` twice: a path (``str`` or ``Path``) is opened again,
    a list or tuple iterated again, anything else spooled."""
    if isinstance(lines, str | os.PathLike):
        return _PathSource(Path(lines))
    if isinstance(lines, list | tuple):
        return _SequenceSource(lines)
    return _SpooledSource(lines)
