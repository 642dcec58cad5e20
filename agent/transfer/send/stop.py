"""Stopping `herdcast send --serve`: SIGINT and SIGTERM end the service cleanly.

The first signal asks to stop: the wait for receivers ends at once, a round in flight is
finished first (its receivers keep their disks). A second signal stops now: the round in
flight is interrupted (its receivers are failed rows). Either way the sender prints its final
table, writes --report, and exits 0 when every receiver that finished agreed.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

from agent.say import say
from agent.transfer.send.record import Receiver
from agent.udpcast.extensions import build_fail
from agent.udpcast.protocol import Op

STOP_COPIES = 2  # HC_STOP is sent this many times: one lost datagram still tells why


class Stop:
    """The stop requests; installed for the length of a `with` block (main thread only)."""

    def __init__(self, also: Callable[[], bool] | None = None) -> None:
        self.also = also  # a caller's own reason to stop (herdcast deploy: every node done)
        self.requested = False
        self.busy = False  # a round is in flight (set by the send loop)
        self._saved: dict[int, object] = {}

    def __enter__(self) -> Stop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._saved[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.requested or not self.busy:
            if self.busy:
                say(f"herdcast send: {name} again: stopping now, the round in flight is cut")
                raise KeyboardInterrupt
            self.requested = True
            say(f"herdcast send: {name}: stopping")
            return
        self.requested = True
        say(f"herdcast send: {name}: stopping after the round in flight "
            "(send it again to stop now)")

    def __call__(self) -> bool:
        if not self.requested and self.also is not None and self.also():
            self.requested = True
        return self.requested


def tell_stopped(net, participants: list[Receiver], why: str) -> None:
    """HC_STOP, `why` in one line, to each herdcast receiver of a round the sender cuts (an
    error, or a second signal): it stops at once and says the sender's reason on its
    console, instead of waiting out its silence limit for a sender that is gone. Each copy
    carries that receiver's secret, so a stranger spoofing the sender cannot stop it. Sent
    twice: one lost datagram still tells. Stock receivers have no such message."""
    message = f"the sender stopped: {why}"
    for r in participants:
        if r.herdcast and r.addr is not None:  # one already done has gone: nothing hears
            for _ in range(STOP_COPIES):
                net.send(build_fail(message, r.secret, Op.HC_STOP), r.addr)
