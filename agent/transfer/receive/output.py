"""Where received bytes go: a file or device (a block device written past the page cache,
agent.image.direct), stdout, a `--pipe` filter, a decompressor; and the writer thread that
moves completed slices there.

A herdcast image (agent.image) is recognised by its first bytes and unpacked onto the
disk or file, as udp-receiver writes a disk (a file is sparse where the disk is free); with
--store it is stored as it came (compressed), for `herdcast send -f` or `herdcast image`.

The writer runs beside the network loop so disk or pipe writes (and hashing, which releases
the GIL) overlap packet reception. Each completed slice is written with one os.write of a
contiguous memoryview and its buffer handed back to the slice pool. The digest is taken of
the bytes as they came off the wire (before --compress decompression), which is what the
sender hashes too.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import queue
import shlex
import stat
import subprocess
import threading
from collections.abc import Callable

from agent.errors import HerdcastError
from agent.image.direct import Gatherer
from agent.image.sniff import ImageCheck
from agent.say import say
from agent.transfer.options import ReceiveOptions
from agent.transfer.receive.readback import Readback

# fsync on what cannot be synced (a pipe, a socket, a terminal, /dev/null): nothing to sync,
# not a failure. Only there: on a regular file or a block device every fsync error means the
# data did not land (ext4 with errors=remount-ro says EROFS once an error made it read-only).
_NOTHING_TO_SYNC = (errno.EINVAL, errno.EROFS, errno.ENOTSUP, errno.ENOTTY)


def _storage(fd: int) -> bool:
    """Whether `fd` is a regular file or a block device: storage whose fsync must succeed."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return True  # cannot tell: treat it as storage, never as nothing to sync
    return stat.S_ISREG(mode) or stat.S_ISBLK(mode)


class OutputError(HerdcastError, RuntimeError):
    """The output cannot be opened or written; the message names it and the fix."""


def check_target(path: str | None) -> None:
    """Fail before any network traffic if the output clearly cannot be opened."""
    if path is None:
        return
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise OutputError(f"--file {path}: directory {parent} does not exist")
    if os.path.isdir(path):
        raise OutputError(f"--file {path}: is a directory; give a file or device")


def check_image_fits(path: str | None, image_size: int | None) -> None:
    """Refuse, before writing a byte, a block device smaller than the image the sender
    announced (a regular file just grows)."""
    if path is None or not image_size or not os.path.exists(path):
        return  # a new regular file just grows
    from agent.hw.disk import DiskError, check_size, probe

    try:
        disk = probe(path)
        if disk.is_block:
            check_size(disk, image_size)
    except DiskError as exc:
        raise OutputError(str(exc)) from None


class Output:
    """The opened destination; `write` takes memoryviews, `finish` flushes and closes."""

    def __init__(self, opts: ReceiveOptions, codec: str | None = None,
                 image_size: int | None = None, announced: bool = False) -> None:
        """`codec`: the stream's compression as the sender announced it (herdcast senders:
        `announced`), else --compress. `image_size`: what the sender announced the receiver
        writes; the stream may not expand past it (a decompression bomb is refused at that byte)."""
        self.path = opts.file or "(stdout)"
        self.sync = opts.sync
        self.codec = codec if codec not in (None, "none") else None
        self.blank = opts.blank
        self.image_size = image_size or None
        self.readback = Readback() if opts.verify == "readback" else None
        self._written = 0  # where the next raw write lands, for the read-back
        self.proc: subprocess.Popen | None = None
        self.decoder = None
        self.sink = None  # an image being unpacked (agent.image.sink.DiskSink)
        self.appender: Gatherer | None = None  # a raw disk, past the page cache
        self.stored = False  # a herdcast image stored as it came into a file
        self.checker = None  # the stored image parsed as it is written: complete only
        # with its own end (END record and trailer), whatever end marker the wire had
        # A regular file is written beside its path (`partial`) until the stream's first
        # bytes are known: a raw stream or an unpacked image then takes the path at once
        # (udp-receiver's file, written in place), a stored image only once complete, so a
        # failed re-capture leaves the previous image as it was.
        self.final: str | None = None
        self.partial: str | None = None
        if opts.file is None:
            self.fd = os.dup(1)
        else:
            flags = os.O_WRONLY | os.O_CREAT
            try:
                st = os.stat(opts.file)
                is_device = stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode)
            except FileNotFoundError:
                is_device = False
            target = opts.file
            if not is_device:  # a file: opened beside the old one, which a stored image
                self.final = os.path.realpath(opts.file)  # replaces only once complete
                target = self.partial = os.path.join(
                    os.path.dirname(self.final),
                    f".{os.path.basename(self.final)}.{os.getpid()}.partial")
                flags |= os.O_TRUNC | os.O_EXCL
            if opts.sync:
                flags |= os.O_SYNC
            try:
                self.fd = os.open(target, flags, 0o644)
            except OSError as exc:
                raise OutputError(f"--file {opts.file}: cannot open for writing: "
                                  f"{exc.strerror}") from exc
        self.unpack = opts.unpack is not False  # --store: False
        self.target_fd = self.fd
        if opts.pipe:
            argv = shlex.split(opts.pipe)
            try:
                self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=self.fd)
            except OSError as exc:
                os.close(self.fd)
                raise OutputError(f"--pipe {opts.pipe!r}: cannot run {argv[0]}: "
                                  f"{exc.strerror}") from exc
            self.target_fd = self.proc.stdin.fileno()
        self._write: Callable[[memoryview], None] = self._write_fd
        self._held: list[bytes] = []
        self.sniffer = None
        self._sniffing = opts.file is not None and not opts.pipe
        if announced and self.codec:
            self._write = self._check_codec
        else:
            self._setup()

    def _setup(self) -> None:
        """The writing path for self.codec: look at the head for an image (a file), or
        write the stream as it is (stdout, --pipe)."""
        if self._sniffing:
            from agent.image.sniff import HeadSniffer

            self.sniffer = HeadSniffer(self.codec)
            self._write = self._sniff
        else:
            self._choose(image=False)

    def _check_codec(self, data: memoryview) -> None:
        """The first bytes against the compression a herdcast sender announced: a stored
        image's round with stock receivers carries the raw disk it expands to (compressed
        only as the sender's --compress asked), whose magic says which."""
        from agent.codec import sniff

        found = sniff(bytes(data[:16]))
        if found != self.codec:
            what = f"compressed with {found}" if found else "uncompressed"
            say(f"this round carries the raw disk, {what} (a round with stock "
                "udp-receivers): writing it so")
            self.codec = found
        self._setup()
        self._write(data)

    def _sniff(self, data: memoryview) -> None:
        """Hold the first bytes until they tell whether this is a herdcast image."""
        self._held.append(bytes(data))
        verdict = self.sniffer.feed(data)
        if verdict is not None:
            self._choose(verdict)

    def _choose(self, image: bool) -> None:
        """Set up the writing path for what the stream is, then replay what was held."""
        if not image or self.unpack:
            self._settle()
        if not image and not self.unpack and self._sniffing:
            say(f"--store: {self.path} gets a raw stream (no herdcast image came): written "
                "as it came, as udp-receiver writes it")
        if image and self.unpack:
            from agent.image.sink import DiskSink

            self.sink = DiskSink(self.target_fd, self.path, self.blank, self.readback,
                                 disk_size=self.image_size)
            self.decoder = self.sink
            if self.codec:
                from agent.codec import decompressing_writer

                self.decoder = decompressing_writer(self.sink, self.codec)
            self._write = self.decoder.write
        elif image:  # stored as it came, compression and all: `herdcast send -f` sends it
            self.checker = ImageCheck(self.codec)
            self._write = self._store
            self.stored = True
        elif self.codec:
            from agent.codec import decompressing_writer

            self._raw = _Writer(self._write_fd)
            self.decoder = decompressing_writer(self._raw, self.codec, self.image_size)
            self._write = self.decoder.write
        else:
            self._write = self._write_fd
        if not image and self.proc is None:  # a raw disk, in order:
            self.appender = Gatherer.open(self.target_fd)  # past the page cache if a device
        held, self._held = self._held, []
        for piece in held:
            self._write(memoryview(piece))

    def _write_fd(self, data: memoryview) -> None:
        fd = self.target_fd
        if self.readback is not None:
            self.readback.add(self._written, data)
            self._written += len(data)
        if self.appender is not None:
            return self.appender.write(data)
        while data:
            n = os.write(fd, data)
            data = data[n:]

    def _store(self, data: memoryview) -> None:
        self._write_fd(data)
        self.checker.write(data)

    def write(self, data: memoryview) -> None:
        """Write all of `data` (raises OSError / CompressError)."""
        self._write(data)

    def finish(self) -> None:
        """Flush everything through the decompressor and pipe, fsync, close; raises
        OutputError if any stage failed.

        An error from fsync or close is the disk saying the data did not land (EIO, ENOSPC
        on thin or network storage): the image is then not on the disk and the receive must
        fail, never report success."""
        try:
            if self._write == self._check_codec:  # nothing came
                self._setup()
            if self.sniffer is not None and self.sniffer.verdict is None:
                self._choose(self.sniffer.end())  # a stream shorter than the magic
            if self.decoder is not None:
                self.decoder.close()
            if self.sink is not None:
                self.sink.close()  # the image must have been complete
            if self.appender is not None:
                self.appender.flush()
            if self.checker is not None:
                try:
                    self.checker.close()  # the stored image must have its own end
                except (OSError, HerdcastError) as exc:
                    raise OutputError(f"{self.path}: the stored image is incomplete or "
                                      f"damaged ({exc}): the end of the stream was not the "
                                      "image's end") from exc
            if self.proc is not None:
                self.proc.stdin.close()
                rc = self.proc.wait(timeout=120)
                if rc != 0:
                    raise OutputError(f"--pipe command exited with status {rc}")
            try:
                os.fsync(self.fd)
            except OSError as exc:
                if exc.errno not in _NOTHING_TO_SYNC or _storage(self.fd):
                    raise OutputError(f"{self.path}: flushing to disk failed: "
                                      f"{exc.strerror or exc}") from exc
            if self.readback is not None:
                self.readback.check(self.fd, self.path)
            fd, self.fd = self.fd, -1
            try:
                os.close(fd)
            except OSError as exc:
                raise OutputError(f"{self.path}: closing failed: {exc.strerror or exc} (the "
                                  "last writes may not have landed)") from exc
            self._settle()
        except (OSError, HerdcastError) as exc:  # the decompressor, the pipe, the image
            if isinstance(exc, OutputError):
                raise
            raise OutputError(f"{self.path}: {exc}") from exc
        finally:
            self.close()

    def _settle(self) -> None:
        """The file written takes its path."""
        if self.partial is not None:
            os.replace(self.partial, self.final)
            self.partial = None

    def close(self) -> None:
        """Release everything without waiting for success (abort path)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.sink is not None:
            self.sink.close_direct()
        if self.appender is not None:
            self.appender.close()
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        if self.partial is not None:  # never completed: the previous file stays as it was
            with contextlib.suppress(OSError):
                os.unlink(self.partial)
            self.partial = None


class _Writer(io.RawIOBase):
    """The output's own write path as a file, for the decompressor to write into (so the
    read-back sees the bytes it writes too)."""

    def __init__(self, write: Callable[[memoryview], None]) -> None:
        super().__init__()
        self._write = write

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self._write(memoryview(b))
        return len(b)


HEAD_BYTES = 16  # enough for agent.image's magic


class SliceWriter(threading.Thread):
    """Writes completed slices in order, hashing them; gives each buffer back via `release`.

    After a write error it keeps consuming (and releasing) slices without writing, so the
    network side never blocks on a dead writer; the error is reported through `error`.
    """

    def __init__(self, output: Output, release: Callable) -> None:
        super().__init__(name="herdcast-writer", daemon=True)
        self.output = output
        self.release = release
        self.queue: queue.Queue = queue.Queue()
        self.sha256 = hashlib.sha256()
        self.head = b""  # the stream's first HEAD_BYTES, as queued
        self.bytes = 0
        self.error: str | None = None

    def __call__(self, s) -> None:
        """The assembler's sink: queue a completed slice. The stream's first bytes are kept
        as they are queued, so the network side can tell an image stream at once."""
        if len(self.head) < HEAD_BYTES:
            self.head += bytes(s.data[:HEAD_BYTES - len(self.head)])
        self.queue.put(s)

    def run(self) -> None:
        while True:
            s = self.queue.get()
            if s is None:
                return
            try:
                if self.error is None:
                    data = s.data
                    self.sha256.update(data)
                    self.output.write(data)
                    self.bytes += len(data)
            except Exception as exc:  # noqa: BLE001 - any failure ends the transfer cleanly
                self.error = f"writing {self.output.path} failed: {exc}"
            finally:
                self.release(s)
