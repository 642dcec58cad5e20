"""What the sender reads: the file, stdin, a --pipe command's stdout, optionally compressed.

The stream is cut into slices by a reader thread that fills preallocated slice buffers
(`SliceBuffer`, shared with the batch sender) with readinto, so reading the next slice from
disk overlaps sending the current one, and nothing is allocated per slice. The sha256 of the
stream as sent on the wire (after --pipe and --compress) is computed there too: hashlib
releases the GIL on large buffers, so it costs the network thread nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import shlex
import stat
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import BinaryIO

from agent.errors import HerdcastError
from agent.image.direct import DirectFile
from agent.image.source import Source
from agent.transfer.progress import Gauge
from agent.transfer.send.batch import SliceBuffer


class InputError(HerdcastError, RuntimeError):
    """The input cannot be opened or read: the message names it and the fix."""


@dataclass
class Input:
    """An opened input stream and what is needed to close it and to read it again."""

    stream: BinaryIO
    rereadable: bool  # a regular file or block device given with -f, no --pipe
    closers: list = field(default_factory=list)
    proc: subprocess.Popen | None = None
    position: object | None = None  # a used-block image's encoder position (Gauge)

    def close(self) -> None:
        """Close the stream, the pipe command and the file, newest first."""
        for closer in reversed(self.closers):
            with contextlib.suppress(Exception):
                closer()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)


def open_input(path: str | None, pipe: str | None, compress: str | None,
               source: Source | None = None, as_image: bool = False) -> Input:
    """Open `path` (stdin when None), run it through `pipe` and `compress` as udp-sender and
    herdcast do. With a `source` that is a disk or a stored image (agent.image.source),
    `as_image` sends herdcast receivers its image stream, and otherwise the raw disk (a
    stored image expanded). Raises InputError with a one-line reason."""
    closers: list = []
    if source is not None and source.kind != "raw" and path is not None and not pipe:
        return _open_image_source(path, compress, source, as_image)
    if path is None:
        raw: BinaryIO = os.fdopen(sys.stdin.fileno(), "rb", buffering=0, closefd=False)
        rereadable = False
    else:
        try:
            raw = DirectFile.open(path)  # a device past the page cache; Input.close closes it
        except OSError as exc:
            raise InputError(f"--file {path}: cannot open: {exc.strerror}") from exc
        mode = os.fstat(raw.fileno()).st_mode
        rereadable = stat.S_ISREG(mode) or stat.S_ISBLK(mode)
    closers.append(raw.close)
    proc = None
    stream: BinaryIO = raw
    if pipe:
        argv = shlex.split(pipe)
        if not argv:
            raise InputError("--pipe: empty command (example: --pipe 'gzip -c')")
        try:
            proc = subprocess.Popen(argv, stdin=raw, stdout=subprocess.PIPE)
        except OSError as exc:
            for closer in closers:
                closer()
            raise InputError(f"--pipe {pipe!r}: cannot run {argv[0]}: {exc.strerror}") from exc
        stream = proc.stdout
        closers.append(proc.stdout.close)
        rereadable = False
    if compress:
        from agent.codec import compressing_reader

        stream = compressing_reader(stream, compress)
        closers.append(stream.close)
    return Input(stream, rereadable, closers, proc)


def _open_image_source(path: str, compress: str | None, source: Source,
                       as_image: bool) -> Input:
    from agent.image.source import expanded_stream, image_stream

    try:
        if as_image:
            raw = image_stream(path, source)
        elif source.kind in ("stored", "chunked"):
            raw = expanded_stream(path, source)
        else:
            raw = DirectFile.open(path)  # a device past the page cache; Input.close closes it
    except (OSError, HerdcastError) as exc:
        raise InputError(f"--file {path}: cannot read: {getattr(exc, 'strerror', None) or exc}"
                         ) from exc
    closers: list = [raw.close]
    stream: BinaryIO = raw
    if compress and not (as_image and source.kind == "stored"):  # stored: compressed already
        from agent.codec import compressing_reader

        stream = compressing_reader(stream, compress)
        closers.append(stream.close)
    return Input(stream, True, closers, position=getattr(raw, "position", None))


EOF = object()  # what next_slice returns once the stream has ended


class SliceReader:
    """A thread filling slice buffers from the stream, hashing what it read.

    `next_slice` hands out (buffer, nbytes, fec) in stream order; `release` gives a buffer back
    once every receiver has its slice. A short read means end of stream.
    """

    def __init__(self, stream: BinaryIO, buffers: list[SliceBuffer], slice_bytes: int,
                 fec=None, gauge: Gauge | None = None) -> None:
        self.stream = stream
        self.gauge = gauge or Gauge()  # told of every slice read (percent of the data)
        self.fec = fec  # (buffer, nbytes) -> FEC blocks, computed here, off the network thread
        self.slice_bytes = slice_bytes
        self.free: queue.Queue = queue.Queue()
        self.full: queue.Queue = queue.Queue()
        for buf in buffers:
            self.free.put(buf)
        self.sha = hashlib.sha256()
        self.total = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="herdcast-reader", daemon=True)
        self._thread.start()

    def _fill(self, buf: SliceBuffer) -> int:
        view = buf.view
        filled = 0
        while filled < self.slice_bytes:
            n = self.stream.readinto(view[filled:self.slice_bytes])
            if not n:
                break
            filled += n
        return filled

    def _run(self) -> None:
        try:
            while not self._stop:
                buf = self.free.get()
                if buf is None:
                    return
                n = self._fill(buf)
                if n:
                    self.sha.update(buf.view[:n])
                    self.total += n
                    self.gauge.mark(self.total)
                    self.full.put((buf, n, self.fec(buf, n) if self.fec else None))
                else:
                    self.free.put(buf)
                if n < self.slice_bytes:
                    self.full.put(EOF)
                    return
        except Exception as exc:  # reported to the network thread, which stops cleanly
            self.full.put(InputError(f"reading the input failed: {exc}"))

    def next_slice(self, timeout: float = 0.0):
        """(buffer, nbytes, fec blocks or None), EOF, or None when the reader is not done with
        the next slice."""
        try:
            item = self.full.get(timeout=timeout) if timeout > 0 else self.full.get_nowait()
        except queue.Empty:
            return None
        if isinstance(item, InputError):
            raise item
        return item

    def release(self, buf: SliceBuffer) -> None:
        """Give a buffer back for the next slice."""
        self.free.put(buf)

    def stop(self) -> None:
        """Let the thread end (it is a daemon: a blocked read does not hold the exit)."""
        self._stop = True
        self.free.put(None)
