"""lzop through a child process: the `lzop` program, or busybox's applet in the initramfs.

No well-kept Python binding writes lzop's container format, so a filter program runs beside
the stream. Its output comes through a pipe a bounded read at a time, so a bomb costs time,
never memory; the expanded bytes still count against the caller's limit.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import threading
from typing import BinaryIO

from agent.codec.inflate import CHUNK, CodecError, Limit


def lzop_command() -> list[str]:
    """The lzop program to run: Debian's `lzop`, else busybox's applet (initramfs)."""
    if shutil.which("lzop"):
        return ["lzop"]
    if shutil.which("busybox"):
        return ["busybox", "lzop"]
    raise CodecError("compression lzop: no `lzop` program or busybox found",
                     "install lzop, or use compr=gz or compr=zstd")


class _ProcessReader(io.RawIOBase):
    """read() yields a filter program's stdout while a thread feeds it `raw`."""

    def __init__(self, raw: BinaryIO, argv: list[str], limit: Limit | None = None) -> None:
        super().__init__()
        self._argv, self._limit = argv, limit
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE)
        self._error: BaseException | None = None
        self._feeder = threading.Thread(target=self._feed, args=(raw,), daemon=True)
        self._feeder.start()
        self._done = False

    def _feed(self, raw: BinaryIO) -> None:
        try:
            while chunk := raw.read(CHUNK):
                self._proc.stdin.write(chunk)
        except BrokenPipeError:
            pass
        except BaseException as exc:  # reported by the reader at end of stream
            self._error = exc
        finally:
            with contextlib.suppress(BrokenPipeError):
                self._proc.stdin.close()

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self._proc.stdout.readinto(b)
        if self._limit is not None:
            self._limit.add(n)
        if n == 0 and not self._done:
            self._done = True
            self._finish()
        return n

    def _finish(self) -> None:
        self._feeder.join(timeout=30)
        rc = self._proc.wait(timeout=30)
        if self._error is not None:
            raise CodecError(f"compression: reading the source for {self._argv[0]} "
                             f"failed: {self._error}")
        if rc != 0:
            err = self._proc.stderr.read().decode(errors="replace").strip()
            raise CodecError(f"compression: {' '.join(self._argv)} exited {rc}: {err}")

    def close(self) -> None:
        if not self.closed and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)
        for f in (self._proc.stdout, self._proc.stderr):
            f.close()
        super().close()


class _ProcessWriter(io.RawIOBase):
    """write() feeds a filter program whose stdout a thread copies into `raw`."""

    def __init__(self, raw: BinaryIO, argv: list[str], limit: Limit) -> None:
        super().__init__()
        self._argv, self._raw, self._limit = argv, raw, limit
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE)
        self._error: BaseException | None = None
        self._pump = threading.Thread(target=self._copy, daemon=True)
        self._pump.start()

    def _copy(self) -> None:
        try:
            while chunk := self._proc.stdout.read1(CHUNK):
                self._limit.add(len(chunk))
                self._raw.write(chunk)
        except BaseException as exc:  # reported by write() or close()
            self._error = exc
            self._proc.kill()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        if isinstance(self._error, CodecError):
            raise self._error
        try:
            self._proc.stdin.write(b)
        except BrokenPipeError as exc:
            raise CodecError(self._failure()) from exc
        return len(b)

    def _failure(self) -> str:
        rc = self._proc.wait(timeout=30)
        if self._error is not None:
            self._pump.join(timeout=30)
            return str(self._error)
        err = self._proc.stderr.read().decode(errors="replace").strip()
        return f"compression: {' '.join(self._argv)} exited {rc}: {err or 'no message'}"

    def close(self) -> None:
        if self.closed:
            return
        try:
            with contextlib.suppress(BrokenPipeError):
                self._proc.stdin.close()
            self._pump.join(timeout=60)
            rc = self._proc.wait(timeout=60)
            if isinstance(self._error, CodecError):
                raise self._error
            if self._error is not None:
                raise CodecError(f"compression: writing the output failed: {self._error}")
            if rc != 0:
                raise CodecError(self._failure())
            self._raw.flush()
        finally:
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait(timeout=10)
            self._proc.stdout.close()
            self._proc.stderr.close()
            super().close()


def lzop_reader(raw: BinaryIO) -> BinaryIO:
    return io.BufferedReader(_ProcessReader(raw, [*lzop_command(), "-c", "-"]), CHUNK)


def lzop_unreader(raw: BinaryIO, limit: int | None = None) -> BinaryIO:
    return io.BufferedReader(_ProcessReader(raw, [*lzop_command(), "-dc", "-"],
                                            Limit("lzop", limit)), CHUNK)


def lzop_writer(raw: BinaryIO, limit: int | None = None) -> BinaryIO:
    return _ProcessWriter(raw, [*lzop_command(), "-dc", "-"], Limit("lzop", limit))
