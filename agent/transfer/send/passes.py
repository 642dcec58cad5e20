"""A slice's REQACK passes: ask, wait for every answer, resend what is missing, ask again.

After a slice's data the sender asks REQACK(slice, pass, readySet); each receiver not yet
in readySet answers OK or RETRANSMIT(bitmap of the blocks it has). Once everybody answered
the pass, the union of missing blocks is resent and the next pass asked (udpcast calls the
pass number `rxmit`). A pass nobody finishes answering times out (the timeout doubles up to
1 s, so a live sender repeats REQACK at least every second). A receiver is dropped when it
has answered nothing for --drop-after seconds (5 by default) while asked and for more
requests in a row than its own answer rate explains (Record.silence_that_means_gone: at
heavy loss a live receiver can miss five requests running; a dead one misses them all), or
for more than --retries-until-drop passes; and when it answers but gets no further for
NO_PROGRESS seconds (it holds the round: "nothing received" forever), while --drop-after is
not 0. A receiver whose CONNECT_REPLY may be lost is sent it again with every request it
leaves unanswered until it is heard.

"Round" is the service's word (send.round: one stream to one set of receivers); "pass" is
this module's.
"""

from __future__ import annotations

from agent.say import say
from agent.transfer.send.inflight import SliceInFlight, runs_of
from agent.transfer.send.record import Receiver, Verdict
from agent.udpcast.protocol import BITMAP_BYTES, Op, build

MIN_TIMEOUT = 0.02
MAX_TIMEOUT = 1.0
END_TIMEOUT = 0.15
END_SILENT_PASSES = 20  # x END_TIMEOUT: a receiver with all the data is gone, not lagging
FALSE_DROP = 1e-4  # the chance of dropping a live receiver that we accept, per silence
NO_PROGRESS = 30.0  # seconds owing a slice without getting further: it holds the round


class Passes:
    """The REQACK passes of a round's slices in flight (mixed into send.round.Round, whose
    `inflight`, `table`, `net`, `session`, `opts` and `stats` it uses)."""

    answer_time: float = 0.01  # how long a whole pass takes to be answered, smoothed

    def _reqack(self, s: SliceInFlight, now: float) -> None:
        """Ask slice `s`'s current pass."""
        ready = s.ok.to_bytes(BITMAP_BYTES, "little")
        self.net.send(build(Op.REQACK, slice_no=s.no, slice_bytes=s.nbytes, rxmit=s.rxmit,
                            ready_set=ready), self.session.data_address)
        self.stats.reqacks += 1
        for r in self.table.participants.values():
            if not s.ok >> r.slot & 1:
                r.asked(now, s.no)
        s.asked_at = now
        s.answered = set()
        s.missing = 0

    def _timeout(self, s: SliceInFlight) -> float:
        base = max(MIN_TIMEOUT, 2.5 * self.answer_time)
        # Receivers that OK'd the end slice stay only while REQACKs keep coming (--exit-wait,
        # 500 ms by default): ask often enough that a lost OK is asked again before they go.
        cap = END_TIMEOUT if s.end else MAX_TIMEOUT
        return min(cap, base * (2 ** min(s.timeouts, 10)))

    def _next_pass(self, s: SliceInFlight, now: float) -> None:
        """Resend what the answers asked for, then ask the next pass."""
        s.runs = runs_of(s.missing, s.nblocks)
        s.rxmit += 1
        s.asked_at = None
        if not s.runs:
            self._reqack(s, now)

    def _check(self, now: float) -> None:
        """Finish slices everybody OK'd, close answered passes, time out silent ones."""
        participants = self.table.participants
        all_slots = 0
        for r in participants.values():
            all_slots |= 1 << r.slot
        for s in list(self.inflight):
            if s.asked_at is None:
                continue
            if s.ok & all_slots == all_slots:
                self._complete(s)
                continue
            pending = [r for r in participants.values()
                       if not s.ok >> r.slot & 1 and r.address not in s.answered]
            if not pending:
                self.answer_time = 0.8 * self.answer_time + 0.2 * (now - s.asked_at)
                s.timeouts = 0
                self._next_pass(s, now)
            elif now - s.asked_at >= self._timeout(s):
                s.timeouts += 1
                for r in pending:
                    self._unanswered(r, s, now)
                if self.table.participants:
                    self._next_pass(s, now)
        if self.opts.drop_after:
            for r in list(participants.values()):
                if r.stuck_for(now) > NO_PROGRESS:
                    why = (f"no progress for {r.stuck_for(now):.0f} s (it answers, but "
                           "gets no further)")
                    self.table.remove(r.address, Verdict.DROPPED, why)
                    say(f"herdcast send: dropping receiver {r.address}: {why}")

    def _unanswered(self, r: Receiver, s: SliceInFlight, now: float) -> None:
        """`r` did not answer pass `s.rxmit` in time: ask again, count as finished, or drop."""
        if not r.heard:  # its CONNECT_REPLY may be lost (a stock one asks only once)
            self.session.reply(r, r.addr)
        r.silent += 1
        if s.end and r.silent > min(END_SILENT_PASSES, self.opts.retries_until_drop):
            # it OK'd every data slice, so it has every byte; its OK for the end marker and
            # its DISCONNECT were lost, and it left after --exit-wait
            say(f"herdcast send: receiver {r.address} went quiet after OK'ing all its "
                "data: counted as finished")
            r.left = True
            self.table.finished_data(r)
            self._end_ok(r)
        elif r.silent > self.opts.retries_until_drop or (
                self.opts.drop_after and r.silent_for(now) > self.opts.drop_after
                and r.silent >= r.silence_that_means_gone(FALSE_DROP)):
            why = f"no answer for {r.silent_for(now):.1f} s ({r.silent} requests)"
            self.table.remove(r.address, Verdict.DROPPED, why)
            say(f"herdcast send: dropping receiver {r.address}: {why}")

    def _end_ok(self, r: Receiver) -> None:
        """Count `r` as having OK'd the end slice (its OK was lost, but it has it all)."""
        for s in self.inflight:
            if s.end:
                s.answered_ok(r.slot, r.address)
