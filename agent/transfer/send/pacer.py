"""The sender's pace: a token bucket whose rate follows the receivers' feedback.

udpcast blasts each slice at line rate and lets the receivers' 212 KB socket buffers
overflow (20-30% of packets retransmitted on a bridge). herdcast paces packets with a token
bucket in small bursts sized to the smallest receiver buffer, and adjusts the rate per slice
(AIMD): a slice whose receivers lost a run of consecutive blocks (the signature of a buffer
overrun or a full queue) lowers the rate in proportion to the loss; a clean slice raises it.
Isolated losses (a lossy link) barely move it, since sending slower would not help them.
--max-bitrate caps the rate, as in udpcast. Feedback that comes now and then rather than
per slice (the chunk carousel's HC_NEED reports, one per receiver every 2 s while nothing
is lost) ramps with the time it covers, not per report (`now`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

WIRE_OVERHEAD = 16 + 8 + 20 + 14  # DATA header, UDP, IPv4, Ethernet: what a link carries
UNLIMITED = 10e9  # bits/s when no --max-bitrate: the feedback finds the real ceiling
INITIAL = 800e6
INITIAL_BIG_BUFFERS = 2e9
FLOOR = 16e6
SKB_TRUESIZE = 2304  # what one ~1.5 KB datagram costs in a receiver's socket buffer
GAIN = 1.05  # a clean slice's increase; with time-stamped feedback, per RAMP_PERIOD clean
RAMP_PERIOD = 0.1  # s: 5% per 0.1 s (x1.6 a second) while the reports show no loss
# waits shorter than this are slept, not polled: epoll counts whole milliseconds, so a 0.4 ms
# wait for the next burst (64 packets, 0.8 ms at 1 Gbit/s) took 1 ms and held the pace
# near 700 Mbit/s, whatever the rate said
SLEEP_UNDER = 0.002


def pause(wait: float, receive: Callable[[float], None]) -> None:
    """Wait `wait` seconds for the pacer's next burst: a long wait answers receivers
    (`receive(timeout)` polls), a short one sleeps (to the microsecond) after a look."""
    if wait > SLEEP_UNDER:
        receive(wait)
    elif wait > 0:
        receive(0)
        time.sleep(wait)


def truesize(blocksize: int) -> int:
    """What one datagram of `blocksize` costs in a receiver's socket buffer: 2304 bytes for
    an Ethernet-sized one; a jumbo frame's buffer is the next power of two above it."""
    if blocksize <= 1472:
        return SKB_TRUESIZE
    return 1 << (blocksize + 1024 - 1).bit_length()


class Pacer:
    """Token bucket in packets; `rate` in bits/s on the wire."""

    def __init__(self, blocksize: int, max_bitrate: int | None = None,
                 min_rcvbuf: int | None = None, link_bits: float | None = None) -> None:
        self.packet_bits = (blocksize + WIRE_OVERHEAD) * 8
        self.cap = float(max_bitrate) if max_bitrate else UNLIMITED
        if link_bits:  # the link's own speed (netif.speed_of): never ramp past it
            self.cap = min(self.cap, link_bits)
        # receivers with big buffers (herdcast's) absorb a fast start; stock ones start lower
        initial = INITIAL_BIG_BUFFERS if min_rcvbuf and min_rcvbuf >= 1 << 20 else INITIAL
        self.rate = self.cap if max_bitrate else min(initial, self.cap)
        self.floor = min(FLOOR, self.cap)
        # a burst must fit a receiver's socket buffer several times over
        burst = (min_rcvbuf // truesize(blocksize) // 3) if min_rcvbuf else 64
        self.burst = max(4, min(64, burst))
        self.min_batch = max(1, self.burst // 2)
        self.tokens = float(self.burst)
        self.last = time.monotonic()
        self.cut_before = -1  # slices numbered below this went out before the last cut
        self.changed: float | None = None  # when time-stamped feedback last moved the rate

    def _refill(self, now: float) -> None:
        self.tokens = min(float(self.burst),
                          self.tokens + (now - self.last) * self.rate / self.packet_bits)
        self.last = now

    def grant(self, want: int, now: float) -> int:
        """How many of `want` packets may go now (taken from the bucket); 0 until at least
        half a burst (or all of `want`) is there, so each send call carries a batch."""
        self._refill(now)
        if self.tokens < min(want, self.min_batch):
            return 0
        n = min(want, self.burst, int(self.tokens))
        self.tokens -= n
        return n

    def wait(self, want: int) -> float:
        """Seconds until grant(want) returns packets."""
        need = min(want, self.min_batch) - self.tokens
        return max(0.0, need * self.packet_bits / self.rate)

    def feedback(self, blocks: int, congested: int, slice_no: int | None = None,
                 next_no: int = 0, now: float | None = None) -> None:
        """A slice of `blocks` was answered; `congested` of them were lost in runs. With
        slice numbers (`slice_no`, and `next_no`, the next to go out): one cut per loss
        event, as TCP's: the slices already sent when the rate was cut were sent too fast
        by the old rate, and their losses (one receiver descheduled for 100 ms overruns
        every slice in flight) must not halve it again and again. With `now` (reports
        that come now and then): a clean one raises the rate by GAIN per RAMP_PERIOD since
        the last change, however many reports there are."""
        if blocks <= 0:
            return
        loss = congested / blocks
        if loss > 0.002:
            if now is not None:
                self.changed = now  # no credit for time with losses in it
            if slice_no is not None and slice_no < self.cut_before:
                return  # the event the last cut answered
            self.rate = max(self.floor, self.rate * max(0.5, 1.0 - 1.5 * loss - 0.03))
            if slice_no is not None:
                self.cut_before = next_no
        elif self.rate < self.cap:
            if now is None:
                self.rate = min(self.cap, self.rate * GAIN + 2e6)
                return
            periods = (now - self.changed) / RAMP_PERIOD if self.changed is not None else 1
            self.rate = min(self.cap, self.rate * GAIN ** min(periods, 50.0) + 2e6)
            self.changed = now
        elif now is not None:
            self.changed = now


def congested_blocks(missing: int, nblocks: int, min_run: int = 3) -> int:
    """Blocks of an int bitmap of missing blocks that lie in runs of >= min_run."""
    total = 0
    run = 0
    for i in range(nblocks + 1):
        if i < nblocks and missing >> i & 1:
            run += 1
        else:
            if run >= min_run:
                total += run
            run = 0
    return total
