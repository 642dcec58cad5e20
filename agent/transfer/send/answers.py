"""What receivers say during a round, and what the sender does with it.

OK and RETRANSMIT answer a slice's REQACK pass (send.passes); DISCONNECT ends a receiver's
part (a finished one leaving is the normal end); HC_FAIL is a herdcast receiver stopping,
with its reason (a disk too small, a refused signature, a write error); a CONNECT_REQ from
a receiver not in the round queues it for the next one (or tells a herdcast receiver it
missed the start, when the input cannot be read again); HC_DIGEST is a herdcast receiver's
verdict on what it wrote; a verdict, once given, never changes.
"""

from __future__ import annotations

import hmac
import time

from agent.say import say
from agent.transfer.send.record import Verdict
from agent.transfer.send.signing import digest_ack
from agent.udpcast.extensions import said
from agent.udpcast.protocol import Cap, ChangedStatus, LateStatus, Op, build


class Answers:
    """The round's message handling (mixed into send.round.Round, whose `table`, `net`,
    `session`, `inflight`, `digest`, `total`, `tracer` and `rereadable` it uses)."""

    def _find(self, no: int):
        for s in self.inflight:
            if s.no == no:
                return s
        return None

    def handle(self, op: Op, msg, addr: tuple[str, int]) -> None:
        """One message from the network, during the round or its digest wait."""
        ip = addr[0]
        if op == Op.HC_DIGEST:
            self._digest(ip, addr, msg)
            return
        if op == Op.HC_CHANGED:
            self._changed(ip, addr, msg)
            return
        r = self.table.participants.get(ip)
        if op == Op.CONNECT_REQ:
            if r is not None:
                self.session.reply(r, addr)
            elif self.session.admits(ip):  # --allow: strangers are not queued
                self._late(ip, addr, msg.capabilities)
            return
        if r is None or op == Op.DISCONNECT and not r.leaves(msg.get("secret")):
            return  # a DISCONNECT spoofed from a herdcast receiver's address: not its own
        if op == Op.HC_FAIL:  # a herdcast receiver stops and says why: one line
            if r.told(msg.secret):  # its own, not a stranger's from its address
                self.table.remove(ip, Verdict.FAILED, said(msg.reason))
            return
        r.answered()
        if op in (Op.OK, Op.RETRANSMIT):
            r.answers += 1
            self.tracer.answer(ip, op, msg, self.inflight)
        if op == Op.OK:
            s = self._find(msg.slice_no)
            if s is not None and not s.ok >> r.slot & 1:
                r.done_with(s.no, time.monotonic())
            if s is not None:
                s.answered_ok(r.slot, ip)
                if s.end:
                    self.table.finished_data(r)
        elif op == Op.RETRANSMIT:
            s = self._find(msg.slice_no)
            if s is not None:
                s.heard.add(ip)
                r.holds(s.no, int.from_bytes(msg.received, "little").bit_count(),
                        time.monotonic())
            if s is None or s.ok >> r.slot & 1 or msg.rxmit != s.rxmit or s.asked_at is None:
                return  # an answer to an older pass: the receiver answers the new one
            r.retransmissions += s.answered_missing(ip, msg.received).bit_count()
        elif op == Op.DISCONNECT and (r.finished or self.end_queued):
            # the end slice goes out only once every data slice is complete, so a receiver
            # leaving now has everything: its OK for the end slice was lost
            r.left = True
            self.table.finished_data(r)
            self._end_ok(r)
        elif op == Op.DISCONNECT:
            # a finished receiver leaving is the normal end: it stays for its verdict
            self.table.remove(ip, Verdict.DISCONNECTED)
            say(f"herdcast send: receiver {ip} disconnected mid-transfer")

    def _late(self, ip: str, addr: tuple[str, int], caps: int) -> None:
        """A CONNECT_REQ after the start: queue it for another round, or say it missed."""
        if self.rereadable and ip not in self.table.refuse_late:
            r = self.table.wait_for_next(ip, addr, caps)
            if r is None:
                return  # the waiting set is full: it asks again later
            status = LateStatus.NEXT_ROUND
        else:
            status = LateStatus.MISSED
        if caps & Cap.HERDCAST:
            current = self.inflight[0].no if self.inflight else self.next_no
            self.net.send(build(Op.HC_LATE, status=int(status), slice_no=current), addr)

    def _digest(self, ip: str, addr: tuple[str, int], msg) -> None:
        """Answer every genuine HC_DIGEST (idempotent) and note the verdict in the table.
        Genuine: it echoes the secret only that receiver was told (its CONNECT_REPLY went
        to it alone), so a digest forged from its address is not believed."""
        if self.digest is None:
            return  # cannot happen before the end slice; the receiver repeats it
        r = self.table.find(ip)
        if r is None or not hmac.compare_digest(msg.secret, r.secret):
            return
        if self.table.participants.get(ip) is not r:
            # a receiver of the last round repeating its digest (our answer was lost):
            # answered only when its row agreed, with what it agreed on
            if r.verdict is Verdict.OK and r.digest == msg.sha256.hex():
                self.net.send(digest_ack(self.opts.sign_key, r.statement, r.secret, True,
                                         msg.total_bytes, msg.sha256, r.kind), addr)
            return
        agreed = msg.total_bytes == self.total and msg.sha256 == self.digest
        r.kind = self.kind
        self.net.send(digest_ack(self.opts.sign_key, r.statement, r.secret, agreed,
                                 self.total, self.digest, self.kind), addr)
        self.table.record_digest(r, msg.total_bytes, msg.sha256, agreed)
        # a receiver reports its digest only once it has the end slice: this is its OK for
        # it (its OK may be lost, and it leaves without an exit wait once acknowledged)
        self.table.finished_data(r)
        self._end_ok(r)

    def _changed(self, ip: str, addr: tuple[str, int], msg) -> None:
        note_changed(self.table, self.net, ip, addr, msg)


def note_changed(table, net, ip: str, addr: tuple[str, int], msg) -> None:
    """A receiver whose digest agreed personalising its clone (after a round or the chunk
    carousel): WORKING keeps the sender waiting (Receiver.personalising); DONE and FAILED
    go in its row, acknowledged every time (the receiver repeats them until it hears so)."""
    r = table.find(ip)
    if r is None or r.verdict is not Verdict.OK or not r.herdcast:
        return
    r.personal_at = time.monotonic()
    if msg.status == ChangedStatus.WORKING:
        r.personalised = r.personalised or "working"
        return
    if msg.status not in (ChangedStatus.DONE, ChangedStatus.FAILED):
        return
    net.send(build(Op.HC_CHANGED_ACK, status=msg.status), addr)
    if r.personalised in ("done", "failed"):
        return  # a repeat: our acknowledgement was lost
    text = msg.text.rstrip(b"\0").decode(errors="replace")
    r.personalised = "done" if msg.status == ChangedStatus.DONE else "failed"
    r.changes = [line for line in text.splitlines() if line.strip()]
    table.observer.on_changed(r)
