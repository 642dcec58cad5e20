"""The builder's side of herdcast's one error family (agent.errors.HerdcastError).

Every failure `python -m builder` can name is a `BuildError` (what failed, and the fix when
there is one); `builder/__main__.py` catches the family once and prints one line. The
concerns subclass it: `CpioError` (the archive), `PxeConfigError` (boot loader configs and
the node command), `LabError` (the VM lab).
"""

from agent.errors import HerdcastError


class BuildError(HerdcastError):
    """A build step failed for a reason the message names, with the fix when there is one."""
