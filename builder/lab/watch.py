"""A process the benches watch: its stderr read by a thread that timestamps a marker line,
and its exit collected with wait4, so each side's CPU (user+sys, its children included) is
its own figure, not a share of the whole run's."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path


class Watched:
    """A process started in a lab host (`host.popen`) whose stderr is kept."""

    def __init__(self, host, argv: list[str], marker: bytes | None = None,
                 cwd: Path | None = None) -> None:
        self.proc = host.popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, cwd=cwd)
        self.marker = marker
        self.marked: float | None = None
        self.err = bytearray()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while chunk := self.proc.stderr.read1(65536):
            self.err += chunk
            if self.marker and self.marked is None and self.marker in self.err:
                self.marked = time.monotonic()

    @property
    def text(self) -> str:
        return self.err.decode(errors="replace")

    def wait(self, timeout: float) -> tuple[int, float, float]:
        """(returncode, cpu seconds, exit time); kills the process on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                ended = time.monotonic()
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                self.thread.join(5)
                return self.proc.returncode, usage.ru_utime + usage.ru_stime, ended
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait(10)
                return -9, 0.0, time.monotonic()
            time.sleep(0.01)
