"""The wait for the start: HELLO, CONNECT_REQ/CONNECT_REPLY, and udpcast's start triggers.

Two waits, one function each over the same `Gathering` (it answers CONNECT_REQ, repeats
HELLO, forgets receivers that leave). `wait_for_start` waits for udpcast's triggers
(checked every 50 ms instead of every 2 s): GO from any host, a key on the sender's console,
--min-receivers/--min-wait/--max-wait, --autostart; under --serve, without those options, a
round starts once a receiver is connected and nobody new came for SERVE_SETTLE seconds
(nodes booted together share a round), at most SERVE_GATHER after the first.
`wait_for_late` waits for the receivers that asked while the last round ran, or gives up.
The rules count the table's `places` (send.participants): a host sending a sniffed nonce
from its own address takes no place of its own, so it cannot start a round before the
receiver the nonce belongs to has had the time to connect; a receiver that said why it
stopped (HC_FAIL) before the round keeps its place, so --min-receivers does not wait for it.
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
from agent.transfer.send.record import Verdict
from agent.transfer.send.session import SendSession
from agent.udpcast.extensions import said
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


class Gathering:
    """What both waits do with each message and tick: answer CONNECT_REQ (those `admit`
    lets in), drop receivers that leave, repeat HELLO every `interval` seconds."""

    def __init__(self, session: SendSession, table: Table, interval: float | None,
                 admit: Callable[[str], bool] | None = None, tick=None,
                 should_stop: Callable[[], bool] | None = None) -> None:
        self.session, self.table, self.admit = session, table, admit
        self.tick, self.should_stop = tick or (lambda: None), should_stop or (lambda: False)
        self.interval = interval
        self.start = self.last_connect = self.last_message = time.monotonic()
        self.first_connect: float | None = None
        self.go = False  # a GO arrived
        self.hellos = 0
        session.net.hello()
        self.next_hello = self.start + interval if interval else None

    def _told(self, ip: str, msg) -> bool:
        """An HC_FAIL from a participant, echoing the secret its CONNECT_REPLY told it (a
        herdcast receiver stopping before the round, and why); a forged one is ignored."""
        r = self.table.participants.get(ip)
        return r is not None and r.told(msg.secret)

    def _leaves(self, ip: str, msg) -> bool:
        """A DISCONNECT that is the participant's own (a herdcast one's echoes its secret;
        Receiver.leaves), or from an address not in the table (nothing to remove)."""
        r = self.table.participants.get(ip)
        return r is None or r.leaves(msg.get("secret"))

    def step(self) -> bool:
        """Wait for and handle messages up to CHECK_INTERVAL, tick, repeat HELLO when due;
        False when asked to stop."""
        net, table = self.session.net, self.table
        timeout = CHECK_INTERVAL
        if self.next_hello is not None:
            timeout = min(timeout, max(0.0, self.next_hello - time.monotonic()))
        for op, msg, addr in net.receive(timeout):
            self.last_message = time.monotonic()
            ip = addr[0]
            if op in (Op.CONNECT_REQ, Op.GO) and not self.session.admits(ip):
                continue  # not one of the fleet (--allow): not answered, not counted
            if op == Op.CONNECT_REQ:
                if self.admit is not None and not self.admit(ip):
                    continue
                new = ip not in table.participants
                r = table.connect(ip, addr, msg.capabilities, msg.rcvbuf, msg.get("nonce"),
                                  self.last_message)
                self.session.reply(r, addr)
                if r is not None and new:
                    self.last_connect = self.last_message
                if r is not None and self.first_connect is None:
                    self.first_connect = self.last_message
            elif op == Op.GO:
                self.go = True
            elif op == Op.DISCONNECT and self._leaves(ip, msg) or (
                    op == Op.HC_FAIL and self._told(ip, msg)):
                r = table.remove(ip, *((Verdict.DISCONNECTED,) if op == Op.DISCONNECT else
                                       (Verdict.FAILED, said(msg.reason))))
                if r is not None and op == Op.HC_FAIL:  # it came: it keeps its place
                    table.failed[ip] = r
                if not table.participants:
                    self.first_connect = None
        self.tick()
        if self.should_stop():
            return False
        now = time.monotonic()
        if self.next_hello is not None and now >= self.next_hello:
            net.hello()
            self.hellos += 1
            self.next_hello = now + self.interval
        return True


def wait_for_start(session: SendSession, table: Table, *, keyboard: bool,
                   should_stop: Callable[[], bool] | None = None, tick=None) -> str:
    """Negotiate until a start trigger fires; returns what started it ("stopped" when
    `should_stop()` said so; `tick()` is called every CHECK_INTERVAL).

    `keyboard`: any key on the console starts (the terminal is put in cbreak mode meanwhile
    and restored). --start-timeout aborts (its timer restarts on every message, as
    udpcast's); so does --autostart with nobody connected.
    """
    opts = session.opts
    ms = opts.rexmit_hello_interval or (1000 if opts.autostart or opts.async_ else 0)
    interval = ms / 1000 if ms else (SERVE_HELLO_INTERVAL if opts.serve else None)
    rule = opts.min_receivers is not None or opts.min_wait is not None \
        or opts.max_wait is not None
    with _cbreak(keyboard):
        g = Gathering(session, table, interval, tick=tick, should_stop=should_stop)
        if keyboard:
            say("Ready. Press any key to start sending data.")
        while True:
            hellos = g.hellos
            if not g.step():
                return "stopped"
            n = len(table.participants)
            now = time.monotonic()
            places = table.places(now)  # what the rules count: a replayed nonce takes none
            if g.go and (n or opts.async_):
                return "GO"
            g.go = False
            if keyboard and _keyboard_ready():
                os.read(sys.stdin.fileno(), 4096)
                return "keyboard"
            if rule and g.first_connect is not None:
                waited = now - g.first_connect
                enough = places >= max(1, opts.min_receivers or 0)
                if enough and waited >= (opts.min_wait or 0):
                    failed = len(table.failed_before())
                    return f"{n} receiver(s) connected" + (
                        f", {failed} failed before the start" if failed else "")
                if opts.max_wait is not None and waited >= opts.max_wait:
                    return "--max-wait reached"
            elif opts.serve and g.first_connect is not None and places and (
                    now - g.last_connect >= SERVE_SETTLE
                    or now - g.first_connect >= SERVE_GATHER):
                return f"{n} receiver(s) connected"
            if opts.start_timeout and now - g.last_message >= opts.start_timeout:
                raise SendError(f"no transfer started within --start-timeout "
                                f"{opts.start_timeout:g} s ({n} receiver(s) connected): start "
                                "the receivers first, or raise --start-timeout")
            if opts.autostart and g.hellos != hellos and g.hellos >= opts.autostart:
                if n or opts.async_:
                    return "--autostart"
                raise SendError(f"no receiver connected after --autostart {opts.autostart} "
                                "HELLOs: start the receivers, or raise --autostart")


def wait_for_late(session: SendSession, table: Table, expect: set[str], *,
                  admit: Callable[[str], bool], hello_interval: float, give_up: float,
                  should_stop: Callable[[], bool] | None = None, tick=None) -> str:
    """A late-join round's wait: starts as soon as the `expect`ed IPs are connected, or
    after `give_up` seconds; `admit(ip)` says which other receivers may join it."""
    g = Gathering(session, table, hello_interval, admit=admit, tick=tick,
                  should_stop=should_stop)
    while True:
        if not g.step():
            return "stopped"
        if expect <= set(table.participants):
            return "late receivers connected"
        if time.monotonic() - g.start >= give_up:
            return "late-join wait over"
