"""The chunks' zstd level, chosen by the wire and this machine's CPU rather than fixed.

A sender compresses every chunk before it sends (agent.image.chunkfile), on all its cores;
the transfer then takes about that pass plus the compressed bytes' time on the wire. So the
level is the one that makes `used / (cores x its speed) + used x its ratio / wire` least,
measured on a few of the disk's own chunks (zstd's speed and ratio depend on the data: a
root of binaries and text, measured here, gives level -1: 563 MB/s per core at 0.475 of
the size, level 1: 488 MB/s at 0.416, level 3: 305 MB/s at 0.368). Slow wires get the
tighter levels, fast wires with few cores the faster ones. Decompression runs above
1.1 GB/s per core at every one of them, so the receivers never decide it.
"""

from __future__ import annotations

import time

from agent.codec.block import compress

LEVELS = (-1, 1, 3)
DEFAULT_LEVEL = 3


def choose_level(samples: list[bytes], wire_bytes_per_s: float,
                 workers: int) -> tuple[int, str]:
    """(level, a line saying why) for data like `samples` sent at `wire_bytes_per_s`."""
    total = sum(len(s) for s in samples)
    if not total or wire_bytes_per_s <= 0:
        return DEFAULT_LEVEL, f"level {DEFAULT_LEVEL} (nothing to measure)"
    best: tuple[float, int, str] | None = None
    for level in LEVELS:
        started = time.perf_counter()
        out = sum(len(compress("zstd", s, level)) for s in samples)
        speed = total / max(time.perf_counter() - started, 1e-6)
        ratio = out / total
        cost = 1 / (speed * workers) + ratio / wire_bytes_per_s
        why = (f"level {level}: {speed / 1e6:.0f} MB/s per core x {workers}, {ratio:.3f} of "
               f"the size, wire {wire_bytes_per_s * 8 / 1e9:.2f} Gbit/s")
        if best is None or cost < best[0]:
            best = (cost, level, why)
    assert best is not None
    return best[1], best[2]
