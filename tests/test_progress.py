"""Progress: live line on a terminal, plain rate-limited lines otherwise, silent when off."""

from __future__ import annotations

import io

from agent.transfer import progress
from agent.transfer.progress import Progress


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_stream_gets_rate_limited_lines(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    p = Progress("receive", total=10_000_000, stream=out)
    p.update(1_000_000)
    assert out.getvalue() == ""  # not due yet
    clock[0] += progress.LOG_INTERVAL + 0.1
    p.update(5_000_000, retransmitted=1, sent=100, receivers=2)
    text = out.getvalue()
    assert text.endswith("\n") and "\r" not in text
    assert "5.00 MB / 10.00 MB (50%)" in text
    assert "retransmitted 1.0%" in text
    assert "ETA" in text and "2 receivers" in text
    p.update(6_000_000)
    assert out.getvalue().count("\n") == 1  # still rate-limited
    p.close("done")
    assert out.getvalue().endswith("done\n")


def test_tty_gets_live_line_and_newline_on_close(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    out = FakeTty()
    p = Progress("send", stream=out)
    clock[0] = 1.0
    p.update(2_000_000, receivers=1)
    assert out.getvalue().startswith("\rsend: 2.00 MB, 2.0 MB/s")
    assert "1 receiver" in out.getvalue() and "ETA" not in out.getvalue()
    p.close()
    assert out.getvalue().endswith("\n")


def test_disabled_prints_nothing(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    out = FakeTty()
    p = Progress("receive", total=5, enabled=False, stream=out)
    clock[0] = 100.0
    p.update(5)
    p.close("summary")
    assert out.getvalue() == ""
    assert p.done == 5


def test_gauge_maps_a_used_block_stream_to_the_disks_used_bytes():
    """A used-block image's stream bytes are records and data with zero runs left out: the
    gauge maps them to the used bytes its encoder had read, from marks the reader sets."""
    from agent.image.stream import Position

    at = Position()
    gauge = progress.Gauge(1000, at)
    at.used = 400
    gauge.mark(100)  # the first 100 stream bytes carried 400 used bytes (zeros left out)
    at.used = 1000
    gauge.mark(700)
    assert [gauge.data(n) for n in (0, 50, 100, 400, 700, 900)] == [0, 200, 400, 700, 1000,
                                                                    1000]
    raw = progress.Gauge(5000)  # a raw stream: its bytes are the data
    raw.mark(100)
    assert raw.data(1234) == 1234 and raw.total == 5000
