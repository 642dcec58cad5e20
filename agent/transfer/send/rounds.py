"""One round of a transfer: slices out, REQACK rounds, retransmissions, the end slice.

The stream is cut into slices of up to 1024 blocks, numbered from 0; the end is an empty
slice (REQACK with 0 bytes). After a slice's data the sender asks REQACK(slice, rxmit,
readySet); each receiver not yet in readySet answers OK or RETRANSMIT(bitmap of blocks it
has). Once everybody answered the round, the union of missing blocks is resent and the next
round asked; a round nobody finishes answering times out (the timeout doubles up to 1 s, so
a live sender repeats REQACK at least every second) and a receiver is dropped when it has
answered nothing for --drop-after seconds (5 by default) while asked, or for more than
--retries-until-drop rounds, whichever comes first. In full duplex slice n+1 goes out while slice n
awaits its answers; half duplex waits.

One thread does all network work. It never blocks on the input (a reader thread fills the
next slice) and sends data with sendmmsg in paced bursts (agent.transfer.send.pacer). The
slices in flight are `SliceInFlight`s (send.inflight); who takes part is the `Table`
(send.participants); the interface, block size and data address are the `SendSession`'s.
"""

from __future__ import annotations

import os
import time

from agent.say import say
from agent.transfer.progress import Progress
from agent.transfer.result import SendStats
from agent.transfer.send.fec import send_fec_block
from agent.transfer.send.inflight import SliceInFlight, runs_of
from agent.transfer.send.network import SendError
from agent.transfer.send.pacer import Pacer
from agent.transfer.send.participants import Participant, Table
from agent.transfer.send.reader import EOF, SliceReader
from agent.transfer.send.session import SendSession
from agent.transfer.send.signing import digest_ack
from agent.udpcast.protocol import BITMAP_BYTES, Cap, LateStatus, Op, build

MIN_TIMEOUT = 0.02
MAX_TIMEOUT = 1.0
END_TIMEOUT = 0.15
END_SILENT_ROUNDS = 20  # x END_TIMEOUT: a receiver with all the data is gone, not lagging
DIGEST_WAIT = 3.0
DEBUG = bool(os.environ.get("HERDCAST_DEBUG"))


class Transfer:
    """Sends one round's stream to the participants in `table`."""

    def __init__(self, session: SendSession, table: Table, reader: SliceReader, pacer: Pacer,
                 progress: Progress, stats: SendStats, late: dict, rereadable: bool) -> None:
        self.session = session
        self.net = session.net
        self.table = table
        self.opts = opts = session.opts
        self.reader = reader
        self.pacer = pacer
        self.progress = progress
        self.stats = stats
        self.late = late  # ip -> (addr, caps) of receivers that asked after the start
        self.rereadable = rereadable and opts.late_join
        self.ring = 1 if opts.duplex == "half" else 2
        self.inflight: list[SliceInFlight] = []
        self.next_no = 0
        self.end_queued = False
        self.eof = False  # the reader reached the end of the stream
        self.done = False
        self.answer_time = 0.01
        self.digest: bytes | None = None
        self.total = 0

    # ------------------------------------------------------------------ messages

    def _find(self, no: int) -> SliceInFlight | None:
        for s in self.inflight:
            if s.no == no:
                return s
        return None

    def handle(self, op: Op, msg, addr: tuple[str, int]) -> None:
        """One message from the network, during the round or its digest wait."""
        ip = addr[0]
        p = self.table.participants.get(ip)
        if op == Op.HC_DIGEST:
            self._digest(ip, addr, msg)
            return
        if op == Op.CONNECT_REQ:
            if p is not None:
                self.session.reply(p, addr)
            else:
                self._late(ip, addr, msg.capabilities)
            return
        if p is None:
            return
        p.answered()
        if DEBUG and op in (Op.OK, Op.RETRANSMIT) and msg.slice_no < 4:
            say(f"t={time.monotonic():.4f} {ip} {op.name} slice={msg.slice_no} "
                f"rxmit={getattr(msg, 'rxmit', '-')} "
                f"inflight={[(x.no, x.rxmit, x.sent) for x in self.inflight]}")
        if op == Op.OK:
            s = self._find(msg.slice_no)
            if s is not None:
                s.answered_ok(p.slot, ip)
                if s.end and not p.finished and self.table.observer is not None:
                    self.table.observer.on_finished_data(ip)
                p.finished = p.finished or s.end
        elif op == Op.RETRANSMIT:
            s = self._find(msg.slice_no)
            if s is not None:
                s.heard.add(ip)
            if s is None or s.ok >> p.slot & 1 or msg.rxmit != s.rxmit or s.asked_at is None:
                return  # an answer to an older round: the receiver answers the new one
            p.report.retransmissions += s.answered_missing(ip, msg.received).bit_count()
        elif op == Op.DISCONNECT and (p.finished or self.end_queued):
            # the end slice goes out only once every data slice is complete, so a receiver
            # leaving now has everything: its OK for the end slice was lost
            p.finished = p.left = True
            self._end_ok(p)
        elif op == Op.DISCONNECT:
            # a finished receiver leaving is the normal end: it stays for its verdict
            self.table.remove(ip, "disconnected")
            say(f"herdcast send: receiver {ip} disconnected mid-transfer")

    def _end_ok(self, p: Participant) -> None:
        """Count `p` as having OK'd the end slice (its OK was lost, but it has it all)."""
        for s in self.inflight:
            if s.end:
                s.answered_ok(p.slot, p.ip)

    def _late(self, ip: str, addr: tuple[str, int], caps: int) -> None:
        """A CONNECT_REQ after the start: queue it for another round, or say it missed."""
        herdcast = bool(caps & Cap.HERDCAST)
        if self.rereadable:
            if ip not in self.late:
                say(f"herdcast send: receiver {ip} joined late: it gets the next round")
                if self.table.observer is not None:
                    self.table.observer.on_late(ip, herdcast)
            self.late[ip] = (addr, caps)
            status = LateStatus.NEXT_ROUND
        else:
            status = LateStatus.MISSED
        if herdcast:
            current = self.inflight[0].no if self.inflight else self.next_no
            self.net.send(build(Op.HC_LATE, status=int(status), slice_no=current), addr)

    def _digest(self, ip: str, addr: tuple[str, int], msg) -> None:
        """Answer every HC_DIGEST (idempotent) and note the verdict in the table."""
        if self.digest is None:
            return  # cannot happen before the end slice; the receiver repeats it
        agreed = msg.total_bytes == self.total and msg.sha256 == self.digest
        p = self.table.participants.get(ip)
        self.net.send(digest_ack(self.opts.sign_key, p.nonce if p else None, agreed,
                                 self.total, self.digest), addr)
        self.table.record_digest(ip, msg.total_bytes, msg.sha256, agreed)

    # ------------------------------------------------------------------ slices

    def _reqack(self, s: SliceInFlight, now: float) -> None:
        ready = s.ok.to_bytes(BITMAP_BYTES, "little")
        self.net.send(build(Op.REQACK, slice_no=s.no, slice_bytes=s.nbytes, rxmit=s.rxmit,
                            ready_set=ready), self.session.data_address)
        self.stats.reqacks += 1
        for p in self.table.participants.values():
            if not s.ok >> p.slot & 1:
                p.asked(now)
        s.asked_at = now
        s.answered = set()
        s.missing = 0

    def _timeout(self, s: SliceInFlight) -> float:
        base = max(MIN_TIMEOUT, 2.5 * self.answer_time)
        # Receivers that OK'd the end slice stay only while REQACKs keep coming (--exit-wait,
        # 500 ms by default): ask often enough that a lost OK is asked again before they go.
        cap = END_TIMEOUT if s.end else MAX_TIMEOUT
        return min(cap, base * (2 ** min(s.timeouts, 10)))

    def _next_round(self, s: SliceInFlight, now: float) -> None:
        """Resend what the answers asked for, then ask the next round."""
        s.runs = runs_of(s.missing, s.nblocks)
        s.rxmit += 1
        s.asked_at = None
        if not s.runs:
            self._reqack(s, now)

    def _check(self, now: float) -> None:
        """Finish slices everybody OK'd, close answered rounds, time out silent ones."""
        participants = self.table.participants
        all_slots = 0
        for p in participants.values():
            all_slots |= 1 << p.slot
        for s in list(self.inflight):
            if s.asked_at is None:
                continue
            if s.ok & all_slots == all_slots:
                self._complete(s)
                continue
            pending = [p for p in participants.values()
                       if not s.ok >> p.slot & 1 and p.ip not in s.answered]
            if not pending:
                self.answer_time = 0.8 * self.answer_time + 0.2 * (now - s.asked_at)
                s.timeouts = 0
                self._next_round(s, now)
            elif now - s.asked_at >= self._timeout(s):
                s.timeouts += 1
                for p in pending:
                    if not p.heard and p.silent >= 1:  # its CONNECT_REPLY may be lost
                        self.session.reply(p, p.addr)
                    p.silent += 1
                    if s.end and p.silent > min(END_SILENT_ROUNDS,
                                                self.opts.retries_until_drop):
                        # it OK'd every data slice, so it has every byte; its OK for the end
                        # marker and its DISCONNECT were lost, and it left after --exit-wait
                        say(f"herdcast send: receiver {p.ip} went quiet after OK'ing all its "
                            "data: counted as finished")
                        p.finished = p.left = True
                        self._end_ok(p)
                    elif p.silent > self.opts.retries_until_drop or (
                            self.opts.drop_after and p.silent_for(now) > self.opts.drop_after):
                        self.table.remove(p.ip, "dropped")
                        say(f"herdcast send: dropping receiver {p.ip}: no answer for "
                            f"{p.silent_for(now):.1f} s ({p.silent} requests)")
                if self.table.participants:
                    self._next_round(s, now)

    def _complete(self, s: SliceInFlight) -> None:
        self.inflight.remove(s)
        for p in self.table.participants.values():
            p.report.bytes += s.nbytes
        if s.buf is not None:
            self.pacer.feedback(s.nblocks, s.congested)
            if DEBUG:
                say(f"slice {s.no} done t={time.monotonic():.3f} rounds={s.rxmit} "
                    f"congested={s.congested} rate={self.pacer.rate / 1e6:.0f}M "
                    f"answer={self.answer_time * 1000:.1f}ms")
            self.reader.release(s.buf)
        if s.end:
            self.done = True

    def _ring_has_room(self) -> bool:
        return not self.inflight or self.next_no - self.inflight[0].no < self.ring

    def _start_slice(self) -> bool:
        """Take the next slice from the reader if the ring has room; False if none ready."""
        # Slice n+2 waits until slice n is complete, even when n+1 completed first: a
        # receiver still missing part of slice n takes slice n+2 for being dropped
        # (udp-receiver: "Dropped by server") and aborts.
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
        n = self.pacer.grant(count, now)
        if n == 0:
            return self.pacer.wait(count)
        t0 = time.monotonic() if DEBUG else 0.0
        sent = self.net.blocks.send(s.buf, first, n)
        if DEBUG:
            self.stats.send_time += time.monotonic() - t0
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

    def run(self) -> None:
        """Send the whole stream and the end slice; returns once every participant OK'd it."""
        net = self.net
        if DEBUG:
            say(f"round start t={time.monotonic():.3f}")
        while not self.done:
            now = time.monotonic()
            for op, msg, addr in net.receive(0):
                self.handle(op, msg, addr)
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
                if DEBUG:
                    self.stats.pace_wait += wait
                if wait > 0:
                    if wait > 0.002:
                        for op, msg, addr in net.receive(wait):
                            self.handle(op, msg, addr)
                    else:
                        time.sleep(wait)
                continue
            if self._start_slice():
                continue
            timeout = max(0.0, self._next_deadline(now) - time.monotonic())
            if not self.eof and self._ring_has_room():
                timeout = min(timeout, 0.001)  # the reader is filling the next slice
                if DEBUG:
                    self.stats.reader_wait += timeout
            elif DEBUG:
                self.stats.ack_wait -= time.monotonic()
            for op, msg, addr in net.receive(timeout):
                self.handle(op, msg, addr)
            if DEBUG and not (not self.eof and self._ring_has_room()):
                self.stats.ack_wait += time.monotonic()

    def wait_digests(self) -> None:
        """After the end slice: give herdcast receivers up to 3 s to report their digest,
        and stay to answer repeats until they said goodbye (an HC_DIGEST_ACK can be lost)."""
        deadline = time.monotonic() + DIGEST_WAIT
        if DEBUG:
            say(f"end slice done t={time.monotonic():.3f} {self.stats}")
        while time.monotonic() < deadline:
            waiting = [p for p in self.table.participants.values()
                       if p.herdcast and not p.left]
            if not waiting:
                return
            for op, msg, addr in self.net.receive(0.05):
                self.handle(op, msg, addr)
