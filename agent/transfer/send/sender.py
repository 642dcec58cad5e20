"""`herdcast send`: udp-sender's behaviour, plus a digest table and late-join rounds.

The pieces, all in this package: session (what the run found: interface, block size, image
size, data address) over network (sockets), record (one per receiver and round),
participants (who takes part), start (the waits before a round), reader (input, pipe,
compression, slice reader thread), round (one service round: slices, answers, REQACK
passes, retransmissions), pacer (pacing), batch (sendmmsg), streaming (--async) and report
(the final table); fleet (every receiver's row, the log lines and --events), view (the live
table or plain lines), jsonreport (--report) and stop (--serve's signals). This module
strings them together into rounds: the first for the receivers present at the start, then
one more for each batch of receivers that asked to join while a round was running (when
the input can be read again), up to MAX_ROUNDS; under --serve, rounds go on until stopped,
whenever a receiver waits.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Callable

from agent.errors import HerdcastError
from agent.net import netif
from agent.say import say
from agent.transfer.options import SendOptions
from agent.transfer.progress import Gauge
from agent.transfer.result import SendStats, TransferResult
from agent.transfer.send import carousel, chunking, jsonreport
from agent.transfer.send.batch import SliceBuffer
from agent.transfer.send.fec import slice_encoder
from agent.transfer.send.fleet import Fleet, open_events
from agent.transfer.send.network import SendError
from agent.transfer.send.pacer import Pacer
from agent.transfer.send.participants import Table, participants_summary
from agent.transfer.send.reader import Input, SliceReader, open_input
from agent.transfer.send.record import NoObserver, ReceiverObserver
from agent.transfer.send.report import serve_verdict, verdict
from agent.transfer.send.round import WINDOW_SLICES, Round
from agent.transfer.send.session import SendSession
from agent.transfer.send.start import wait_for_late, wait_for_start
from agent.transfer.send.stop import Stop, tell_stopped
from agent.transfer.send.streaming import send_async
from agent.transfer.send.view import make_view
from agent.trust.statements import IMAGE, RAW

LATE_HELLO_INTERVAL = 0.5
LATE_CONNECT_WAIT = 10.0
MAX_ROUNDS = 16
SO_SNDBUFFORCE = 32


def _size_send_buffer(session: SendSession, table: Table) -> None:
    """Without --sendbuf: when every receiver has a big socket buffer (herdcast's 16 MiB),
    let more packets be in flight so a receiver descheduled for a moment does not stall the
    sender (each multicast packet holds send-buffer room until every receiver read it)."""
    smallest = table.min_rcvbuf()
    if session.opts.sendbuf is None and smallest and smallest >= 1 << 20:
        netif.set_buffer(session.net.main, socket.SO_SNDBUF, SO_SNDBUFFORCE,
                         min(2 << 20, smallest // 4))


def send(opts: SendOptions, observer: ReceiverObserver | None = None,
         should_stop: Callable[[], bool] | None = None) -> TransferResult:
    """Send opts.file (or stdin) to the receivers that connect. A failure the user can fix
    (bad input, a dead network, a receiver's fault) is not raised: the result carries its
    HerdcastError. With --serve it keeps serving rounds until SIGINT/SIGTERM, or until
    `should_stop()` says so (asked while waiting and between rounds). `observer` is told of
    each receiver (Fleet)."""
    if opts.async_ and opts.fec is None:
        say("herdcast send: warning: --async without --fec: any lost packet corrupts the "
            "receivers' copy (add --fec 8x8/128)")
    events = own_events = None
    try:
        if opts.sign_key is not None:
            from agent.transfer.send.signing import signer

            signer(opts.sign_key)  # a KeyFileError says which key and why
        if opts.file is not None:
            from agent.hw.disk import send_source_warnings

            for line in send_source_warnings(opts.file):  # a disk mounted read-write
                say(f"herdcast send: {line}")
        if opts.report:
            jsonreport.check_path(opts.report)
        events, own_events = _open_events(opts.events)
        session = SendSession.open(opts)
    except HerdcastError as exc:
        if own_events and events is not None:
            events.close()
        return TransferResult(ok=False, error=exc)
    fleet = Fleet(events=events, observer=observer or NoObserver())
    service = Service(session, Table(observer=fleet), fleet)
    try:
        with Stop(should_stop) if opts.serve else contextlib.nullcontext() as stop:
            service.run(stop)
    finally:
        service.close()
        if opts.report:
            _write_report(opts, session, service)
        error = service.result.error
        fleet.emit("session_ended", None, ok=service.result.ok,
                   error=None if error is None else str(error))
        if own_events and events is not None:
            events.close()
    return service.result


class Service:
    """One `herdcast send`: the first round, the late-join rounds, and under --serve every
    round after, until stopped."""

    def __init__(self, session: SendSession, table: Table, fleet: Fleet) -> None:
        self.session, self.table, self.fleet = session, table, fleet
        self.opts = session.opts
        self.stats = SendStats()
        self.result = TransferResult(ok=False, stats=self.stats)
        self.inp: Input | None = None
        self.preparing = None  # the chunked image, when herdcast receivers may take chunks
        self.as_image = session.source.kind != "raw"
        self.ring = 1 if self.opts.duplex == "half" else WINDOW_SLICES  # the widest ring
        self.started = time.monotonic()
        self.view = make_view(fleet, None, enabled=not self.opts.no_progress,
                              live=self.opts.live)

    def run(self, stop) -> None:
        """Every round, then the verdict; errors end up in self.result."""
        opts, session, table = self.opts, self.session, self.table
        stop = stop or (lambda: False)
        try:
            for line in session.source.describe(opts.compress):
                say(f"herdcast send: {line}")
            # a disk's image stream is cheap to open: the round reopens it raw if it must
            self.inp = open_input(opts.file, opts.pipe, session.round_codec(self.as_image),
                                  session.source, self.as_image)
            keyboard = (not opts.nokbd and opts.file is not None and sys.stdin is not None
                        and sys.stdin.isatty() and not opts.serve)
            net = session.net
            say(f"herdcast send: {net.nif.name} {net.nif.ip}, port {net.port}, announcing to "
                f"{net.control}" + (", serving until stopped" if opts.serve else ""))
            # buffers are built while waiting, so the first packet leaves right at the start
            self.buffers = _buffers(session, self.ring)
            if session.offers_chunks:  # chunked while the receivers come
                self.preparing = chunking.Preparing(session)
            why = wait_for_start(session, table, keyboard=keyboard, should_stop=stop,
                                 tick=self.view.tick)
            self.started = time.monotonic()  # the rate is the transfer's, not the wait's
            if opts.async_:
                self._async(why)
                return
            self._rounds(why, stop)
            self._conclude()
        except KeyboardInterrupt:  # Ctrl-C, or a second signal under --serve: stop now
            self._interrupted("it was stopped by a signal")
            self._conclude()
        except (HerdcastError, OSError) as exc:  # a disk chunked again may have changed
            self.result.ok = False
            self.result.error = exc if isinstance(exc, HerdcastError) else _system_error(exc)
            self._interrupted(self.result.error.what)
        self.view.close()
        self.result.seconds = time.monotonic() - self.started
        self.result.receivers = self.fleet.finished_rows()
        self.result.rounds = self.fleet.rounds  # the summary's lines, one per round
        rounds = [r for r in self.fleet.rounds if r.ended is not None]
        if opts.serve and rounds:
            say(f"herdcast send: served {len(self.result.receivers)} receiver(s) in "
                f"{len(rounds)} round(s) over {time.monotonic() - self.started:.0f} s")

    def _conclude(self) -> None:
        """The session's verdict from the receivers' rows: --serve's, or a plain send's."""
        rows = self.fleet.finished_rows()
        self.result.ok, self.result.error = (serve_verdict(rows) if self.opts.serve
                                             else verdict(rows))

    def _interrupted(self, why: str) -> None:
        """The round in flight is cut: its receivers are failed rows, and each herdcast one
        is told why (HC_STOP) instead of waiting for a sender that is gone."""
        participants = list(self.table.participants.values())
        self.fleet.interrupted(participants)
        tell_stopped(self.session.net, participants, why)

    def _rounds(self, why: str, stop) -> None:
        opts, table = self.opts, self.table
        served: set[str] = set()
        number = 0
        while why != "stopped":
            if table.participants:
                served |= set(table.participants)
                self._round(number, why, stop)
                number += 1
            if not opts.serve:  # without --serve a receiver is imaged once
                table.refuse_late = served
            expected = set(table.waiting)
            if stop():
                break
            if expected and (opts.serve or number < MAX_ROUNDS):
                # another round for the receivers that asked while this one ran
                say(f"herdcast send: another round for {len(expected)} late receiver(s): "
                    f"{', '.join(sorted(expected))}")
                admit = ((lambda ip: True) if opts.serve
                         else (lambda ip, e=expected, s=served: ip in e or ip not in s))
                why = wait_for_late(self.session, table, expected, admit=admit,
                                    hello_interval=LATE_HELLO_INTERVAL,
                                    give_up=LATE_CONNECT_WAIT, should_stop=stop,
                                    tick=self.view.tick)
                self._drop_unseen(expected)
                if table.participants or why == "stopped":
                    continue
            elif expected:
                self._drop_unseen(expected)
            if not opts.serve:
                break
            say("herdcast send: waiting for receivers (SIGINT or SIGTERM stops)")
            why = wait_for_start(self.session, table, keyboard=False, should_stop=stop,
                                 tick=self.view.tick)
        if why == "stopped" and table.participants:
            say(f"herdcast send: stopped: {len(table.participants)} connected receiver(s) "
                "not served")

    def _drop_unseen(self, expected: set[str]) -> None:
        """The late receivers that did not come back for their round are dropped rows."""
        gone = [self.table.waiting.pop(ip) for ip in sorted(expected)
                if ip in self.table.waiting]
        self.fleet.dropped_unseen(gone)

    def _round(self, number: int, why: str, stop) -> None:
        """One round to the table's participants: the slices to those that cannot take
        chunks, then the chunk carousel to those that can (send.carousel)."""
        takers = {ip: r for ip, r in self.table.participants.items()
                  if self.preparing is not None and carousel.takes_chunks(self.session, r)}
        for ip in takers:
            del self.table.participants[ip]
        slices = bool(self.table.participants)
        if slices:
            self._slices(number, why, stop)
        if takers:
            self.table.participants.update(takers)
            self._carousel(number + slices, stop)

    def _carousel(self, number: int, stop) -> None:
        """The chunk carousel to the table's participants and whoever joins it."""
        table, fleet = self.table, self.fleet
        prepared = self.preparing.result()
        self.view.new_round(Gauge(prepared.table.wire_bytes), self.stats.bytes_sent)
        fleet.round_started(number, list(table.participants.values()), "chunks")
        packets = self.stats.data_packets
        wheel = carousel.Carousel(self.session, table, prepared, fleet, self.view,
                                  self.stats, stop if self.opts.serve else (lambda: False))
        if isinstance(stop, Stop):
            stop.busy = True
        try:
            wheel.run()
        finally:
            if isinstance(stop, Stop):
                stop.busy = False
        table.settle()
        digest = wheel.digest.hex()
        fleet.round_ended(wheel.total, digest, self.stats.data_packets - packets, 0)
        if self.result.sha256 is None:
            self.result.bytes, self.result.sha256 = wheel.total, digest

    def _slices(self, number: int, why: str, stop) -> None:
        """One round of slices to the table's participants."""
        opts, session, table, fleet = self.opts, self.session, self.table, self.fleet
        data_ip = session.aim(table)
        as_image = session.image_round(table)
        if number > 0 or as_image != self.as_image:
            self.inp.close()
            self.inp = open_input(opts.file, opts.pipe, session.round_codec(as_image),
                                  session.source, as_image)
            self.as_image = as_image
            if number > 0:  # a fresh reader needs the old one's buffers back
                self.buffers = _buffers(session, self.ring)
        say(f"herdcast send: starting ({why}), round {number}: {participants_summary(table)}"
            f", data to {data_ip} in {session.blocksize}-byte blocks"
            + (", herdcast image" if as_image else _expanded(session)))
        _size_send_buffer(session, table)
        pacer = Pacer(session.blocksize, opts.max_bitrate, table.min_rcvbuf())
        encoder = slice_encoder(opts.fec, session.blocksize) if opts.fec else None
        gauge = _gauge(session, as_image, self.inp)
        reader = SliceReader(self.inp.stream, self.buffers,
                             session.slice_blocks * session.blocksize, encoder, gauge)
        self.view.new_round(gauge, self.stats.bytes_sent)
        fleet.round_started(number, list(table.participants.values()),
                            "image" if as_image else "raw")
        packets = self.stats.data_packets + self.stats.rexmit_packets + self.stats.fec_packets
        rexmits, fecs = self.stats.rexmit_packets, self.stats.fec_packets
        transfer = Round(session, table, reader, pacer, self.view, self.stats,
                         self.inp.rereadable, kind=IMAGE if as_image else RAW)
        if isinstance(stop, Stop):
            stop.busy = True
        try:
            transfer.run()
            transfer.wait_digests()
        except SendError:
            # only round 0 losing everybody fails the send; else the verdict names them
            if table.participants or not (opts.serve or number):
                raise
            say("herdcast send: every receiver of this round was dropped or left")
        finally:
            reader.stop()
            if isinstance(stop, Stop):
                stop.busy = False
        table.settle()
        digest = transfer.digest.hex() if transfer.digest else None
        stats = self.stats
        fleet.round_ended(transfer.total, digest,
                          stats.data_packets + stats.rexmit_packets + stats.fec_packets - packets,
                          stats.rexmit_packets - rexmits, stats.fec_packets - fecs)
        if self.result.sha256 is None and digest:
            self.result.bytes, self.result.sha256 = transfer.total, digest

    def _async(self, why: str) -> None:
        """--async: one pass, no return channel, no receiver rows."""
        session = self.session
        say(f"herdcast send: starting ({why}), data to {session.aim(self.table)}")
        encoder = slice_encoder(self.opts.fec, session.blocksize) if self.opts.fec else None
        reader = SliceReader(self.inp.stream, self.buffers,
                             session.slice_blocks * session.blocksize, encoder)
        try:
            total, digest = send_async(session, reader, self.view, self.stats)
        finally:
            reader.stop()
        self.view.close()
        self.result.bytes, self.result.sha256 = total, digest.hex()
        self.result.ok = True
        self.result.seconds = time.monotonic() - self.started

    def close(self) -> None:
        if self.inp is not None:
            self.inp.close()
        if self.preparing is not None:
            self.preparing.close()
        self.session.net.close()


def _expanded(session: SendSession) -> str:
    """What a round with stock receivers gets of a stored image, for its start line."""
    if session.source.kind != "stored":
        return ""
    codec = session.round_codec(False)
    return ", the raw disk expanded from the stored image, " + (
        f"compressed with {codec} (--compress)" if codec else "uncompressed")


def _gauge(session: SendSession, as_image: bool, inp: Input) -> Gauge:
    """What a round's percent and ETA count, known before its first byte: a raw stream's
    bytes (not when compressed: its length is unknown); a used-block image's data, the
    disk's used bytes (the used map's); a stored image's file bytes; the raw disk a stored
    or used-block source expands to for a round with stock receivers."""
    source = session.source
    if source.kind == "raw":
        return Gauge(None if session.codec else session.image_size)
    if source.kind == "used" and as_image and source.umap is not None:
        return Gauge(source.umap.used_bytes, inp.position)
    if source.kind == "stored" and as_image:
        try:
            return Gauge(os.stat(session.opts.file).st_size)
        except OSError:
            return Gauge()
    return Gauge(None if session.round_codec(False) else source.disk_size)


def _write_report(opts: SendOptions, session: SendSession, service: Service) -> None:
    """--report FILE.json; a report that cannot be written fails the send."""
    doc = jsonreport.build(service.fleet, service.result, opts.file or "-",
                           session.image_size, time.time())
    doc["session"]["serve"] = opts.serve
    try:
        jsonreport.write(opts.report, doc)
    except OSError as exc:
        service.result.ok = False
        service.result.error = SendError(f"--report {opts.report}: {exc.strerror or exc}",
                                         "give a path in a writable directory")
        service.result.error.__cause__ = exc  # raise ... from, for an error not raised


def _buffers(session: SendSession, ring: int) -> list[SliceBuffer]:
    """The slice buffers of one round: the ring in flight plus one the reader fills."""
    return [SliceBuffer(session.blocksize, session.dest, session.slice_blocks)
            for _ in range(ring + 1)]


def _open_events(path: str | None):
    """--events FILE (or - for stdout): (stream, whether we close it)."""
    try:
        return open_events(path)
    except OSError as exc:
        raise SendError(f"--events {path}: {exc.strerror or exc}",
                        "give a path in a writable directory, or - for stdout") from exc


def _system_error(exc: OSError) -> SendError:
    """An OSError no layer below named (each wraps its own): say only what it is."""
    error = SendError(f"{exc.filename}: {exc.strerror}" if exc.filename
                      else f"system error: {exc}")
    error.__cause__ = exc  # raise ... from, for an error not raised
    return error
