"""Byte ranges of a disk, and the few set operations a used-block map needs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Extent:
    """`length` bytes of the disk starting at byte `offset`."""

    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length


def normalize(extents: Iterable[Extent]) -> list[Extent]:
    """Sorted, with overlapping or touching ranges merged and empty ones dropped."""
    out: list[Extent] = []
    for e in sorted(e for e in extents if e.length > 0):
        if out and e.offset <= out[-1].end:
            last = out[-1]
            out[-1] = Extent(last.offset, max(last.end, e.end) - last.offset)
        else:
            out.append(e)
    return out


def subtract(whole: Extent, holes: Iterable[Extent]) -> list[Extent]:
    """The parts of `whole` that no hole covers."""
    out, pos = [], whole.offset
    for h in normalize(holes):
        if h.end <= pos or h.offset >= whole.end:
            continue
        if h.offset > pos:
            out.append(Extent(pos, h.offset - pos))
        pos = max(pos, h.end)
    if pos < whole.end:
        out.append(Extent(pos, whole.end - pos))
    return out


def total(extents: Iterable[Extent]) -> int:
    return sum(e.length for e in extents)
