"""`herdcast receive`: udp-receiver's options (agent.transfer.options), then
agent.transfer.receive.

Exit status: 0 with the image written and its digest said, 1 when the receive failed (the
error names what and the fix; a disk left incomplete says so), 2 for a bad option.
"""

from __future__ import annotations

from agent.say import log_to, say
from agent.transfer.options import parse_receive_args, receive_parser
from agent.transfer.progress import human_bytes
from agent.transfer.receive.receiver import receive


def parser():
    """`herdcast receive`'s options, one row each (agent.transfer.optiontable)."""
    return receive_parser()


def main(argv: list[str]) -> int:
    opts = parse_receive_args(argv)
    log_to(opts.log)  # every line from here on, the dispatcher's last one included
    result = receive(opts)
    if not result.ok:
        raise result.error
    rate = result.bytes / result.seconds / 1e6 if result.seconds > 0 else 0.0
    say(f"Transfer complete: {human_bytes(result.bytes)} ({result.bytes} bytes) in "
        f"{result.seconds:.2f} s, {rate:.1f} MB/s, sha256 {result.sha256}")
    return 0
