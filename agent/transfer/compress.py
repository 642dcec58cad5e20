"""Compression on the wire (`--compress gz|lzop|zstd`, `compr=` on the kernel command line).

The sender compresses what it reads and the receiver decompresses what it writes, in the
process rather than through a `--pipe` shell: the initramfs has no shell to rely on and a
pipe child is one more thing to reap as PID 1. The streams are the stock formats so a stock
`udp-receiver --pipe 'gzip -dc'` (or `lzop -dc`, `zstd -dc`) reads a herdcast image:

- gz: a real gzip member (zlib with wbits=31), as `gzip -c` writes it;
- zstd: zstd frames from the zstandard package;
- lzop: the `lzop` program (or busybox's lzop applet) in a child process, since no
  well-kept Python binding writes lzop's container format.

Neither wrapper closes the raw stream it wraps: the caller opened it, the caller closes it.

`CODECS` is the one list of codec names: the options' `--compress` choices and the boot
parameter `compr=` derive from it. This module is imported wherever options are parsed, so
the zstandard package is imported only when a zstd stream is made.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import threading
import zlib
from typing import BinaryIO

from agent.errors import HerdcastError

CODECS = ("gz", "lzop", "zstd")
CHUNK = 1 << 20
GZIP_LEVEL = 6  # gzip's own default: fast enough to keep up with a gigabit link
ZSTD_LEVEL = 3


class CompressError(HerdcastError, OSError):
    """A stream could not be (de)compressed: the message says which codec and why."""


def _check(codec: str) -> str:
    if codec not in CODECS:
        raise CompressError(f"compression {codec!r} unknown (use one of: {', '.join(CODECS)}, "
                            "or none)")
    return codec


def lzop_command() -> list[str]:
    """The lzop program to run: Debian's `lzop`, else busybox's applet (initramfs)."""
    if shutil.which("lzop"):
        return ["lzop"]
    if shutil.which("busybox"):
        return ["busybox", "lzop"]
    raise CompressError("compression lzop: no `lzop` program or busybox found "
                        "(install lzop, or use compr=gz or compr=zstd)")


# --------------------------------------------------------------------------- sender side


class _CompressingReader(io.RawIOBase):
    """read() yields the compressed form of `raw`'s content, produced chunk by chunk."""

    def __init__(self, raw: BinaryIO, compress, flush) -> None:
        self._raw = raw
        self._compress = compress
        self._flush = flush
        self._buf = bytearray()
        self._eof = False

    def readable(self) -> bool:
        return True

    def _fill(self, want: int) -> None:
        while len(self._buf) < want and not self._eof:
            chunk = self._raw.read(CHUNK)
            if chunk:
                self._buf += self._compress(chunk)
            else:
                self._buf += self._flush()
                self._eof = True

    def readinto(self, b) -> int:
        want = len(b)
        self._fill(want)
        n = min(want, len(self._buf))
        b[:n] = self._buf[:n]
        del self._buf[:n]
        return n


class _ProcessReader(io.RawIOBase):
    """read() yields a filter program's stdout while a thread feeds it `raw`."""

    def __init__(self, raw: BinaryIO, argv: list[str]) -> None:
        self._argv = argv
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
        if n == 0 and not self._done:
            self._done = True
            self._finish()
        return n

    def _finish(self) -> None:
        self._feeder.join(timeout=30)
        rc = self._proc.wait(timeout=30)
        if self._error is not None:
            raise CompressError(f"compression: reading the source for {self._argv[0]} "
                                f"failed: {self._error}")
        if rc != 0:
            err = self._proc.stderr.read().decode(errors="replace").strip()
            raise CompressError(f"compression: {' '.join(self._argv)} exited {rc}: {err}")

    def close(self) -> None:
        if not self.closed and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)
        for f in (self._proc.stdout, self._proc.stderr):
            f.close()
        super().close()


def compressing_reader(raw: BinaryIO, codec: str) -> BinaryIO:
    """A stream whose read() returns `raw`'s content compressed with `codec` (sender side)."""
    _check(codec)
    if codec == "gz":
        z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        return io.BufferedReader(_CompressingReader(raw, z.compress, z.flush), CHUNK)
    if codec == "zstd":
        import zstandard

        z = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
        return io.BufferedReader(_CompressingReader(raw, z.compress, z.flush), CHUNK)
    return io.BufferedReader(_ProcessReader(raw, [*lzop_command(), "-c", "-"]), CHUNK)


# --------------------------------------------------------------------------- receiver side


class _DecompressingWriter(io.RawIOBase):
    """write() takes compressed bytes and writes their decompressed form to `raw`.

    Concatenated members/frames are followed (`cat a.gz b.gz | gzip -dc` works too), and
    close() raises if the stream stopped in the middle of a member: a truncated image must
    never look like a finished one.
    """

    def __init__(self, raw: BinaryIO, codec: str, new, errors: tuple[type, ...]) -> None:
        self._raw = raw
        self._codec = codec
        self._new = new
        self._errors = errors  # what the codec raises on corrupt input
        self._z = new()
        self._started = False  # bytes of the current member seen

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        data = bytes(b)
        n = len(data)
        try:
            while data:
                out = self._z.decompress(data)
                self._started = True
                if out:
                    self._raw.write(out)
                if not self._z.eof:
                    break
                data = self._z.unused_data
                self._z = self._new()
                self._started = False
        except self._errors as exc:
            raise CompressError(f"compression {self._codec}: the stream is corrupt ({exc}); "
                                f"does the sender use --compress {self._codec} too?") from exc
        return n

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._started and not self._z.eof:
                raise CompressError(f"compression {self._codec}: the stream ended in the "
                                    "middle (truncated transfer)")
            self._raw.flush()
        finally:
            super().close()


class _ProcessWriter(io.RawIOBase):
    """write() feeds a filter program whose stdout a thread copies into `raw`."""

    def __init__(self, raw: BinaryIO, argv: list[str]) -> None:
        self._argv = argv
        self._raw = raw
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE)
        self._error: BaseException | None = None
        self._pump = threading.Thread(target=self._copy, daemon=True)
        self._pump.start()

    def _copy(self) -> None:
        try:
            while chunk := self._proc.stdout.read1(CHUNK):
                self._raw.write(chunk)
        except BaseException as exc:  # reported by close()
            self._error = exc

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        try:
            self._proc.stdin.write(b)
        except BrokenPipeError as exc:
            raise CompressError(self._failure()) from exc
        return len(b)

    def _failure(self) -> str:
        rc = self._proc.wait(timeout=30)
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
            if self._error is not None:
                raise CompressError(f"compression: writing the output failed: {self._error}")
            if rc != 0:
                raise CompressError(self._failure())
            self._raw.flush()
        finally:
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait(timeout=10)
            self._proc.stdout.close()
            self._proc.stderr.close()
            super().close()


def decompressing_writer(raw: BinaryIO, codec: str) -> BinaryIO:
    """A stream whose write() takes `codec`-compressed bytes and writes them decompressed
    to `raw` (receiver side); close() flushes everything into `raw` (which stays open) and
    raises CompressError if the compressed stream was truncated or corrupt."""
    _check(codec)
    if codec == "gz":
        return _DecompressingWriter(raw, codec, lambda: zlib.decompressobj(31), (zlib.error,))
    if codec == "zstd":
        import zstandard

        dctx = zstandard.ZstdDecompressor()
        return _DecompressingWriter(raw, codec, dctx.decompressobj, (zstandard.ZstdError,))
    return _ProcessWriter(raw, [*lzop_command(), "-dc", "-"])
