"""One service round: a stream to one set of receivers, from its first slice to the digests.

The stream is cut into slices of up to 1024 blocks, numbered from 0; the end is an empty
slice (REQACK with 0 bytes). Each slice's REQACK passes (ask, resend what is missing, ask
again; receivers dropped when silent) are send.passes'; what receivers say is
send.answers'. In full duplex slice n+1 goes out while slice n awaits its answers; half
duplex waits.

One thread does all network work. It never blocks on the input (a reader thread fills the
next slice) and sends data with sendmmsg in paced bursts (agent.transfer.send.pacer). The
slices in flight are `SliceInFlight`s (send.inflight); who takes part is the `Table`
(send.participants); the interface, block size and data address are the `SendSession`'s.
Timing questions are answered by the tracer (send.trace), which does nothing by default.
"""

from __future__ import annotations

import time

from agent.transfer.progress import Progress
from agent.transfer.result import SendStats
from agent.transfer.send.answers import Answers
from agent.transfer.send.fec import send_fec_block
from agent.transfer.send.inflight import SliceInFlight
from agent.transfer.send.network import SendError
from agent.transfer.send.pacer import Pacer, pause
from agent.transfer.send.participants import Table
from agent.transfer.send.passes import Passes
from agent.transfer.send.reader import EOF, SliceReader
from agent.transfer.send.session import SendSession
from agent.transfer.send.trace import Tracer, tracer
from agent.trust.statements import RAW
from agent.udpcast.protocol import WINDOW_SLICES, Cap

DIGEST_WAIT = 3.0


def ring_for(duplex: str, table: Table) -> int:
    """Slices in flight: one in half duplex; WINDOW_SLICES when every participant takes
    them (Cap.WINDOW: herdcast receivers), so a receiver late to answer does not idle the
    wire; else udpcast's two (a stock receiver seeing slice n+2 while missing part of n
    takes itself for dropped)."""
    if duplex == "half":
        return 1
    receivers = table.participants.values()
    if receivers and all(r.caps & Cap.WINDOW for r in receivers):
        return WINDOW_SLICES
    return 2
QUEUE_POLL = 0.0003  # how long to let this host's queue drain before looking again


class Round(Answers, Passes):
    """Sends one round's stream to the participants in `table`."""

    def __init__(self, session: SendSession, table: Table, reader: SliceReader, pacer: Pacer,
                 progress: Progress, stats: SendStats, rereadable: bool,
                 trace: Tracer | None = None, kind: int = RAW) -> None:
        self.session = session
        self.net = session.net
        self.table = table
        self.opts = opts = session.opts
        self.reader = reader
        self.pacer = pacer
        self.progress = progress
        self.stats = stats
        self.rereadable = rereadable and opts.late_join
        self.ring = ring_for(opts.duplex, table)
        self.tracer = trace or tracer()
        self.inflight: list[SliceInFlight] = []
        self.next_no = 0
        self.end_queued = False
        self.eof = False  # the reader reached the end of the stream
        self.done = False
        self.answer_time = 0.01
        self.digest: bytes | None = None
        self.total = 0
        self.kind = kind  # what the stream is (a signed result names it)

    # ------------------------------------------------------------------ slices

    def _complete(self, s: SliceInFlight) -> None:
        self.inflight.remove(s)
        for r in self.table.participants.values():
            r.bytes += s.nbytes
        if s.buf is not None:
            self.pacer.feedback(s.nblocks, s.congested, s.no, self.next_no)
            self.tracer.slice_done(s, self.pacer.rate, self.answer_time)
            self.reader.release(s.buf)
        if s.end:
            self.done = True

    def _ring_has_room(self) -> bool:
        return not self.inflight or self.next_no - self.inflight[0].no < self.ring

    def _start_slice(self) -> bool:
        """Take the next slice from the reader if the ring has room; False if none ready."""
        # Slice n+ring waits until slice n is complete, even when later ones completed
        # first: a receiver still missing part of slice n takes slice n+ring for being
        # dropped (udp-receiver: "Dropped by server", at n+2) and aborts.
        if self.end_queued or (self.inflight
                               and self.next_no - self.inflight[0].no >= self.ring):
            return False
        first = self.inflight[0] if self.inflight else None
        if first is not None and first.no == 0 and not set(self.table.participants) <= first.heard:
            # A receiver that joined the group a moment late may have missed all of slice 0;
            # stock udp-receiver aborts ("Previous slice size not known") if slice 1 then
            # arrives before a REQACK told it slice 0's size. Pipelining starts once
            # everybody answered slice 0.
            return False
        item = EOF if self.eof else self.reader.next_slice()
        if item is None:
            return False
        if item is EOF:
            # A stock receiver OKs a REQACK for a slice it has not started (it takes it for
            # an empty one), so the end slice waits until every data slice is complete.
            self.eof = True
            if self.inflight:
                return False
            self.digest = self.reader.sha.digest()
            self.total = self.reader.total
            s = SliceInFlight(None, self.next_no, 0, 0)
            self.inflight.append(s)
            self.end_queued = True
            self._reqack(s, time.monotonic())
            return True
        buf, nbytes, fec_blocks = item
        nblocks = buf.prepare(self.next_no, nbytes)
        self.inflight.append(SliceInFlight(buf, self.next_no, nbytes, nblocks,
                                           fec=fec_blocks or []))
        self.next_no += 1
        return True

    def _work(self) -> tuple[SliceInFlight, int, int, bool] | None:
        """The next blocks to send: retransmissions first, oldest slice first."""
        for s in self.inflight:
            if s.runs:
                first, count = s.runs[0]
                return s, first, count, True
        for s in self.inflight:
            if s.buf is not None and (s.sent < s.nblocks or s.fec):
                return s, s.sent, s.nblocks - s.sent, False
        return None

    def _send(self, s: SliceInFlight, first: int, count: int, rexmit: bool, now: float) -> float:
        """Send what the pacer allows; returns how long to wait when it allows nothing."""
        if not rexmit and count == 0:
            return self._send_fec(s, now)
        if self.net.blocks.backed_up():
            return QUEUE_POLL
        n = self.pacer.grant(count, now)
        if n == 0:
            return self.pacer.wait(count)
        t0 = time.monotonic()
        sent = self.net.blocks.send(s.buf, first, n)
        self.tracer.waited("send", time.monotonic() - t0)
        if rexmit:
            self.stats.rexmit_packets += sent
            f, c = s.runs[0]
            if sent >= c:
                s.runs.pop(0)
            else:
                s.runs[0] = (f + sent, c - sent)
            if not s.runs:
                self._reqack(s, time.monotonic())
        else:
            self.stats.data_packets += sent
            s.sent += sent
            self.stats.bytes_sent += min(s.nbytes, s.sent * s.buf.blocksize) - \
                min(s.nbytes, (s.sent - sent) * s.buf.blocksize)
            if s.sent >= s.nblocks and not s.fec:
                self._reqack(s, time.monotonic())
        return 0.0

    def _send_fec(self, s: SliceInFlight, now: float) -> float:
        """FEC blocks after the slice's data (paced like data), then its REQACK."""
        n = self.pacer.grant(len(s.fec), now)
        if n == 0:
            return self.pacer.wait(len(s.fec))
        dest = self.session.data_address
        for fec_no, payload in s.fec[:n]:
            send_fec_block(self.net.main, dest, self.opts.fec.stripes, s.no, s.nbytes, fec_no,
                           payload)
        self.stats.fec_packets += n
        del s.fec[:n]
        if not s.fec:
            self._reqack(s, time.monotonic())
        return 0.0

    def _next_deadline(self, now: float) -> float:
        deadline = now + 0.05
        for s in self.inflight:
            if s.asked_at is not None:
                deadline = min(deadline, s.asked_at + self._timeout(s))
        return deadline

    def _receive(self, timeout: float) -> None:
        for op, msg, addr in self.net.receive(timeout):
            self.handle(op, msg, addr)

    def run(self) -> None:
        """Send the whole stream and the end slice; returns once every participant OK'd it."""
        self.tracer.round_started()
        while not self.done:
            now = time.monotonic()
            self._receive(0)
            if not self.table.participants:
                raise SendError("every receiver was dropped or disconnected before the end")
            self._check(now)
            if self.done:
                break
            self.progress.update(self.stats.bytes_sent, retransmitted=self.stats.rexmit_packets,
                                 sent=self.stats.data_packets + self.stats.rexmit_packets,
                                 receivers=len(self.table.participants))
            job = self._work()
            if job is not None:
                wait = self._send(*job, now)
                self.tracer.waited("pacer", wait)
                pause(wait, self._receive)
                continue
            if self._start_slice():
                continue
            timeout = max(0.0, self._next_deadline(now) - time.monotonic())
            reading = not self.eof and self._ring_has_room()
            if reading:
                timeout = min(timeout, 0.001)  # the reader is filling the next slice
            t0 = time.monotonic()
            self._receive(timeout)
            self.tracer.waited("reader" if reading else "answers", time.monotonic() - t0)

    def wait_digests(self) -> None:
        """After the end slice: give herdcast receivers up to 3 s to report their digest,
        and stay to answer repeats until they said goodbye (an HC_DIGEST_ACK can be lost);
        as long as one personalising its clone keeps saying so, wait for what it changed."""
        deadline = time.monotonic() + DIGEST_WAIT
        self.tracer.end(self.stats)
        while True:
            now = time.monotonic()
            waiting = [r for r in self.table.participants.values()
                       if r.herdcast and not r.left]
            if not waiting or (now >= deadline
                               and not any(r.personalising(now) for r in waiting)):
                return
            self._receive(0.05)
