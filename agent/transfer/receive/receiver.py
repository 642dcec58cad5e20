"""`herdcast receive`: udp-receiver's behaviour, plus digest confirmation and late join.

Phases, as udpcast's receiver runs them:
1. negotiate (receive.negotiate): find the sender, get a client number, the block size and
   the data group, or learn that the transfer started without us.
2. transfer (here): every socket tied to the sender (receive.link); packets go to the slice
   assembler (receive.slices), completed slices to the writer thread (receive.output).
3. end (receive.finish): the output flushed and synced, the digest confirmed with a herdcast
   sender, repeated REQACKs answered until --exit-wait of quiet; then DISCONNECT.
"""

from __future__ import annotations

import time

from agent.errors import HerdcastError
from agent.image.stream import is_image
from agent.say import say
from agent.transfer.options import OptionError, ReceiveOptions
from agent.transfer.progress import Progress
from agent.transfer.receive import personal
from agent.transfer.receive.finish import finish
from agent.transfer.receive.link import Link, Session
from agent.transfer.receive.negotiate import negotiate
from agent.transfer.receive.output import (
    Output,
    OutputError,
    SliceWriter,
    check_image_fits,
    check_target,
)
from agent.transfer.receive.slices import DEFAULT_BUFFERS, Assembler, MissedStart
from agent.transfer.receive.sockets import ReceiveError
from agent.transfer.result import TransferResult
from agent.udpcast.protocol import MAX_SLICE_SIZE, WINDOW_SLICES, Cap

DEAD_SENDER_TIMEOUT = 30.0  # silence mid-transfer when no --receive-timeout is given
BUFFER_BUDGET = 48 << 20  # slice buffers beyond 3 only while they fit (big --blocksize)


class Receiver:
    """One receive: the link to the sender, the output and its writer, the progress line."""

    def __init__(self, opts: ReceiveOptions) -> None:
        self.opts = opts
        self.link = Link(opts)
        self.output: Output | None = None
        self.writer: SliceWriter | None = None
        self.progress: Progress | None = None

    def transfer(self, session: Session) -> None:
        """Receive slices until the end slice; raises ReceiveError/TransferAborted/
        OutputError."""
        opts, link = self.opts, self.link
        # the sender counts us in from CONNECT_REPLY on: whatever fails from here (a disk
        # too small, first of all), the sender must hear our DISCONNECT, or it waits for us
        link.session = session
        link.disconnect_due = True
        check_image_fits(opts.file, session.image_size)
        self.output = Output(opts, self.codec(session), session.image_size,
                             announced=session.codec is not None)
        slice_bytes = MAX_SLICE_SIZE * session.blocksize
        buffers = max(3, min(DEFAULT_BUFFERS, BUFFER_BUDGET // slice_bytes))
        asm = Assembler(session.blocksize, lambda s: self.writer(s), buffers,
                        expected_total=lambda: self.raw_size(session))
        self.writer = SliceWriter(self.output, asm.release)
        self.writer.start()
        if session.capabilities & Cap.WINDOW:
            asm.window = WINDOW_SLICES
        link.attach(session, asm)
        kbd = link.keyboard()
        progress = Progress("receive", total=session.image_size, enabled=not opts.no_progress)
        self.progress = progress
        silence = opts.receive_timeout or DEAD_SENDER_TIMEOUT
        last_rx = time.monotonic()
        started = False
        while not asm.ended:
            if link.pump(1.0):
                last_rx = time.monotonic()
                if not started and (asm.started or link.pending_answer):
                    started = True
                    say("Transfer started: first data from the sender")
                    if kbd:
                        link.restore_tty()
            elif started or opts.start_timeout:
                idle = time.monotonic() - last_rx
                limit = silence if started else opts.start_timeout
                if idle >= limit:
                    if started:
                        if opts.receive_timeout:
                            raise ReceiveError(
                                f"nothing from sender {session.sender[0]} for "
                                f"--receive-timeout {opts.receive_timeout:g} s mid-transfer "
                                f"(at byte {asm.delivered_bytes}): the image is incomplete")
                        raise ReceiveError(
                            f"sender went silent for {DEAD_SENDER_TIMEOUT:g} s mid-transfer "
                            f"(at byte {asm.delivered_bytes}): the image is incomplete")
                    raise ReceiveError(f"sender {session.sender[0]} did not start within "
                                       f"--start-timeout {opts.start_timeout:g} s")
            if self.writer.error:
                raise OutputError(self.writer.error)
            used = self.used_bytes()
            if used:  # an image unpacked: percent and ETA of the disk's used bytes
                progress.total = used
                progress.update(self.output.sink.decoder.used_done)
                continue
            if progress.total and (self.writer.head or session.codec not in (None, "none")) \
                    and self.raw_size(session) is None:
                progress.total = None  # compressed or stored: no percent of the disk size
            progress.update(asm.delivered_bytes)

    def used_bytes(self) -> int | None:
        """The used bytes of the disk an image being unpacked carries (its metadata says,
        from the sender's used map), or None: raw, stored, or an image from before."""
        sink = self.output.sink if self.output is not None else None
        used = sink.decoder.meta.get("used_bytes") if sink is not None else None
        return used if isinstance(used, int) and used > 0 else None

    def codec(self, session: Session) -> str | None:
        """The stream's compression: what a herdcast sender announced, else --compress."""
        if session.codec is None:
            return self.opts.compress
        announced = None if session.codec == "none" else session.codec
        if self.opts.compress and announced != self.opts.compress:
            say(f"the sender compresses with {announced or 'nothing'}: following it "
                f"(--compress {self.opts.compress} ignored)")
        elif announced:
            say(f"the sender compresses with {announced}: following it")
        return announced

    def raw_size(self, session: Session) -> int | None:
        """The length the stream's end must agree with, when it is known: a herdcast
        sender's image size, if the stream is that image raw (not compressed, not a
        herdcast image, whose decoders fail a truncated stream themselves). None when
        nothing can be checked: a stock sender announces no length (see finish._check_end
        for what is checked then)."""
        codec = session.codec if session.codec is not None else self.opts.compress
        if not session.image_size or codec not in (None, "none"):
            return None
        if self.writer is not None and is_image(self.writer.head):  # agent.image stream
            return None
        return session.image_size

    def close(self) -> None:
        """Abort or success alike: progress line ended, DISCONNECT said, writer stopped,
        sockets and output released."""
        if self.progress is not None:
            self.progress.close()
        self.link.disconnect()
        if self.writer is not None and self.writer.is_alive():
            self.writer.queue.put(None)
        self.link.close()
        if self.output is not None:
            self.output.close()


def _check_disk(path: str | None) -> None:
    """As the node does, before any network traffic: refuse a device that is mounted, used
    as swap or held by another device (a file that is the backing of one too); the
    DiskError says what to change."""
    if path is None:
        return
    from agent.hw.disk import check_receive_target

    check_receive_target(path)


def _trust(opts: ReceiveOptions):
    """The signed-session requirement (receive.trust), or None; a KeyFileError if the key
    cannot be read, a ReceiveError if it cannot be honoured."""
    from agent.transfer.receive import trust

    required = trust.load(opts)
    if required is not None and opts.passive:
        raise ReceiveError(f"--passive cannot verify a signed session ({required.path})",
                           "drop --passive, or --trust-key")
    return required


def receive(opts: ReceiveOptions) -> TransferResult:
    """Receive one image as udp-receiver would. A failure the user can fix is not raised:
    the result carries its HerdcastError (what failed and the fix), with the bytes written."""
    start = time.monotonic()
    if opts.ignore_lost_data:
        return TransferResult(False, error=OptionError(
            "--ignore-lost-data is not supported by herdcast: a receiver never writes an "
            "image with holes", "drop -Z / --ignore-lost-data"))
    r = Receiver(opts)
    try:
        return _receive(r, start)
    except HerdcastError as exc:
        error = exc
        r.link.fail(exc.what)
    finally:
        r.close()
    written = r.writer.bytes if r.writer is not None else 0
    return TransferResult(False, bytes=written, seconds=time.monotonic() - start, error=error)


def _receive(r: Receiver, start: float) -> TransferResult:
    """The receive itself; raises the HerdcastError that ends it."""
    opts = r.opts
    try:
        check_target(opts.file)
        _check_disk(opts.file)
        r.link.trust = _trust(opts)
        r.link.open()
        say(f"UDP receiver for {opts.file or '(stdout)'} at {r.link.nif.ip} on "
            f"{r.link.nif.name}")
        session = negotiate(r.link)
        if session.capabilities & Cap.CHUNKS:  # the chunk carousel (receive.carousel)
            from agent.transfer.receive.carousel import ChunkReceiver

            digest, written = ChunkReceiver(r.link, session).run()
            changes = None
            if personal.wanted(opts, None):  # the digest agreed: now the clone
                changes = personal.personalise(r.link, opts.file, opts.wishes).changes
            r.link.disconnect()
            return TransferResult(True, bytes=written, seconds=time.monotonic() - start,
                                  sha256=digest, changes=changes)
        r.transfer(session)
        digest = finish(r.link, r.writer, r.output)
        changes = None
        if personal.wanted(opts, r.output):  # the digest agreed: now the clone
            changes = personal.personalise(r.link, opts.file, opts.wishes).changes
        r.link.disconnect()
        if opts.description:
            _describe(opts, r.output)
        return TransferResult(True, bytes=r.writer.bytes, seconds=time.monotonic() - start,
                              sha256=digest, changes=changes)
    except MissedStart as exc:
        raise ReceiveError(f"{exc.what}: this receiver missed the start of the transfer",
                           "start the receivers before the sender, or restart the "
                           "sender") from exc
    except HerdcastError:
        raise
    except OSError as exc:
        # every socket call is wrapped (ReceiveError "network: ...") and every output call
        # (OutputError naming the path): what is left is neither, so say only what it is
        raise ReceiveError(f"{exc.filename}: {exc.strerror}" if exc.filename
                           else f"system error: {exc}") from exc


def _describe(opts: ReceiveOptions, output: Output) -> None:
    """--description: into the image just stored (after the digest: the sender's table
    has its verdict before the file is rewritten)."""
    if not output.stored:
        say(f"--description ignored: {opts.file} holds no stored herdcast image (the "
            "image was written out as a disk; --store keeps it as it came, described)")
        return
    from agent.image.catalogue import set_description

    try:
        set_description(opts.file, opts.description)
    except (OSError, HerdcastError) as exc:
        raise OutputError(f"{opts.file}: writing the description failed: {exc}") from exc
