"""`herdcast send`: udp-sender's options (agent.transfer.options), then agent.transfer.send.

Prints the receivers table at the end; a failed send raises the HerdcastError its result
carries. Exit status: 0 when every receiver agreed (under --serve: every receiver that
finished, and at least one did), 1 when a receiver failed, was dropped or disagreed, none
took part (--serve: none was imaged), or the input, network, --log, --events or --report
failed, 2 for a bad option.
"""

from __future__ import annotations

from agent.say import log_to, say
from agent.transfer.options import parse_send_args, send_parser
from agent.transfer.send.allow import AllowList
from agent.transfer.send.report import format_table
from agent.transfer.send.sender import send


def parser():
    """`herdcast send`'s options, one row each (agent.transfer.optiontable)."""
    return send_parser()


def main(argv: list[str]) -> int:
    opts = parse_send_args(argv)
    AllowList.parse(opts.allow)  # a bad --allow entry is a usage error before anything runs
    log_to(opts.log)  # every line from here on, the dispatcher's last one included
    result = send(opts)
    stats = result.stats
    if result.receivers or stats is not None and stats.data_packets:
        say(format_table(result, stats))
    if not result.ok:
        raise result.error
    return 0
