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
