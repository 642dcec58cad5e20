"""The one error type the build raises for things the user can fix."""


class BuildError(RuntimeError):
    """A build step failed for a reason the message names, with the fix when there is one."""
