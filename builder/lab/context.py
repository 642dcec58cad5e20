"""The one set-up/tear-down shape every lab shares: a namespace lab or a PXE lab is built on
entry and torn down on exit, and a set-up that fails half-way tears down what it had made
(namespaces, daemons, VMs), so a failed test never leaves the machine changed."""

from __future__ import annotations

from typing import Self


class LabContext:
    """Base of the labs: subclasses give `_setup()` and `close()` (which must cope with a
    half-made lab)."""

    def __enter__(self) -> Self:
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _setup(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError
