"""The wait for the start: HELLO, CONNECT_REQ/CONNECT_REPLY, and udpcast's start triggers.

Triggers (udpcast's, checked every 50 ms instead of every 2 s): GO from any host, a key on
the sender's console, --min-receivers/--min-wait/--max-wait, --autostart. A late-join round
waits for the receivers it expects instead. Under --serve, without those options, a round
starts once a receiver is connected and nobody new came for SERVE_SETTLE seconds (nodes
booted together share a round), at most SERVE_GATHER after the first.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import time
from collections.abc import Callable

from agent.say import say
from agent.transfer.send.network import SendError
from agent.transfer.send.participants import Table
from agent.transfer.send.session import SendSession
from agent.udpcast.protocol import Op

CHECK_INTERVAL = 0.05  # how often start triggers are looked at (udpcast: up to 2 s)
SERVE_SETTLE = 1.0
SERVE_GATHER = 10.0
SERVE_HELLO_INTERVAL = 1.0  # --serve repeats HELLO: receivers started before it find it


def _keyboard_ready() -> bool:
    return bool(select.select([sys.stdin], [], [], 0)[0])


@contextlib.contextmanager
def _cbreak(enabled: bool):
    """Any key (not just Enter) starts, as udpcast's console does; the terminal is restored."""
    if not enabled:
        yield
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    try:
        saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
    except (OSError, termios.error):
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError, termios.error):
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def wait_for_start(session: SendSession, table: Table, *, keyboard: bool,
                   expect: set[str] | None = None,
                   admit: Callable[[str], bool] | None = None,
                   hello_interval: float | None = None, give_up: float | None = None,
                   should_stop: Callable[[], bool] | None = None, tick=None) -> str:
    """Negotiate until a start trigger fires; returns what started it.

    `keyboard`: any key on the console starts (the terminal is put in cbreak mode meanwhile
    and restored). `expect` (late-join rounds) starts as soon as those IPs are connected, or
    after `give_up` seconds; `admit(ip)` says which other receivers may join that round.
    --start-timeout aborts (its timer restarts on every message, as udpcast's).
    `should_stop()` true ends the wait ("stopped"); `tick()` is called every CHECK_INTERVAL.
    """
    with _cbreak(keyboard):
        return _negotiate(session, table, keyboard, expect, admit, hello_interval, give_up,
                          should_stop, tick)


def _negotiate(session: SendSession, table: Table, keyboard: bool, expect: set[str] | None,
               admit: Callable[[str], bool] | None, hello_interval: float | None,
               give_up: float | None, should_stop, tick) -> str:
    """wait_for_start's loop: answer CONNECT_REQ, repeat HELLO, check the triggers."""
    net, opts = session.net, session.opts
    start = time.monotonic()
    interval = hello_interval
    if interval is None:
        ms = opts.rexmit_hello_interval or (1000 if opts.autostart or opts.async_ else 0)
        interval = ms / 1000 if ms else (SERVE_HELLO_INTERVAL if opts.serve else None)
    net.hello()
    hellos = 0
    next_hello = start + interval if interval else None
    first_connect: float | None = None
    last_connect = start
    last_message = start
    rule = opts.min_receivers is not None or opts.min_wait is not None \
        or opts.max_wait is not None
    if keyboard:
        say("Ready. Press any key to start sending data.")
    while True:
        now = time.monotonic()
        timeout = CHECK_INTERVAL
        if next_hello is not None:
            timeout = min(timeout, max(0.0, next_hello - now))
        for op, msg, addr in net.receive(timeout):
            last_message = time.monotonic()
            ip = addr[0]
            if op == Op.CONNECT_REQ:
                if expect is not None and admit is not None and not admit(ip):
                    continue
                new = ip not in table.participants
                p = table.connect(ip, addr, msg.capabilities, msg.rcvbuf, msg.get("nonce"))
                session.reply(p, addr)
                if p is not None and new:
                    last_connect = last_message
                if p is not None and first_connect is None:
                    first_connect = last_message
            elif op == Op.GO:
                if expect is None and (table.participants or opts.async_):
                    return "GO"
            elif op == Op.DISCONNECT:
                table.remove(ip, "disconnected")
                table.reports.pop(ip, None)
                if not table.participants:
                    first_connect = None
        now = time.monotonic()
        n = len(table.participants)
        if tick is not None:
            tick()
        if should_stop is not None and should_stop():
            return "stopped"
        if expect is not None:
            if expect <= set(table.participants):
                return "late receivers connected"
            if give_up is not None and now - start >= give_up:
                return "late-join wait over"
        else:
            if keyboard and _keyboard_ready():
                os.read(sys.stdin.fileno(), 4096)
                return "keyboard"
            if rule and first_connect is not None:
                waited = now - first_connect
                if n >= max(1, opts.min_receivers or 0) and waited >= (opts.min_wait or 0):
                    return f"{n} receiver(s) connected"
                if opts.max_wait is not None and waited >= opts.max_wait:
                    return "--max-wait reached"
            elif opts.serve and first_connect is not None and n and (
                    now - last_connect >= SERVE_SETTLE or now - first_connect >= SERVE_GATHER):
                return f"{n} receiver(s) connected"
            if opts.start_timeout and now - last_message >= opts.start_timeout:
                raise SendError(f"no transfer started within --start-timeout "
                                f"{opts.start_timeout:g} s ({n} receiver(s) connected): start "
                                "the receivers first, or raise --start-timeout")
        if next_hello is not None and now >= next_hello:
            net.hello()
            hellos += 1
            next_hello = now + interval
            if expect is None and opts.autostart and hellos >= opts.autostart:
                if n or opts.async_:
                    return "--autostart"
                raise SendError(f"no receiver connected after --autostart {opts.autostart} "
                                "HELLOs: start the receivers, or raise --autostart")
