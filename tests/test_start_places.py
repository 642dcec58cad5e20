"""The sender's start rule (agent.transfer.send.start, send.participants' `places`) against a
forger that replays a signed receiver's nonce: the wait is driven packet by packet on a fake
clock, through exactly the code `herdcast send` runs. test_forger.py does it through the
commands.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from agent.transfer.options import SendOptions
from agent.transfer.receive.negotiate import CONNECT_RETRY
from agent.transfer.send import start
from agent.transfer.send.participants import NONCE_SETTLE, Table
from agent.trust import statements
from agent.udpcast.protocol import Cap, Op

HONEST, VICTIM, FORGER = "10.9.0.14", "10.9.0.11", "10.9.0.12"
CAPS = Cap.STOCK | Cap.HERDCAST


def req(nonce: bytes | None = None, caps: int = CAPS) -> SimpleNamespace:
    """A parsed CONNECT_REQ as send.network hands it over (`nonce` set by connect_nonce)."""
    return SimpleNamespace(capabilities=caps, rcvbuf=1 << 20, nonce=nonce,
                           get=lambda name, default=None: nonce if name == "nonce" else default)


# a parsed stock DISCONNECT as send.network hands it over (no secret: disconnect_secret None)
PLAIN_DISCONNECT = SimpleNamespace(get=lambda name, default=None: default)


class Lan:
    """The sender's network on a fake clock: `script` is (time, op, msg, source ip); each
    receive() hands over what is due within its timeout and moves the clock on."""

    def __init__(self, script) -> None:
        self.now = 0.0
        self.script = sorted(script, key=lambda event: event[0])
        self.replied: list[str] = []

    def monotonic(self) -> float:
        return self.now

    def receive(self, timeout: float):
        self.now += max(timeout, 0.001)
        due = [e for e in self.script if e[0] <= self.now]
        self.script = self.script[len(due):]
        return [(op, msg, (ip, 9000)) for _, op, msg, ip in due]

    def hello(self) -> None:
        """The HELLO goes nowhere: the script says who answers it, and when."""


class Fail:
    """A parsed HC_FAIL (or a herdcast receiver's DISCONNECT) from `ip`, echoing the secret
    the sender told it (read from the table when it arrives, as the real receiver got it in
    its CONNECT_REPLY; send.network sets a DISCONNECT's from disconnect_secret)."""

    def __init__(self, table: Table, ip: str, reason: str) -> None:
        self.table, self.ip, self.reason = table, ip, reason

    @property
    def secret(self) -> bytes:
        return self.table.participants[self.ip].secret

    def get(self, name: str, default=None):
        return self.secret if name == "secret" else default


def wait(script, monkeypatch, table: Table | None = None, **options
         ) -> tuple[str, Table, float]:
    """Run wait_for_start over `script`; (why it started, the table, when)."""
    lan = Lan(script)
    monkeypatch.setattr(start.time, "monotonic", lan.monotonic)
    session = SimpleNamespace(opts=SendOptions(**options), net=lan, admits=lambda ip: True,
                              reply=lambda r, addr: lan.replied.append(addr[0]))
    table = table if table is not None else Table()
    why = start.wait_for_start(session, table, keyboard=False,
                               should_stop=lambda: lan.now > 30)
    return why, table, lan.now


@pytest.mark.parametrize("leave", [Op.DISCONNECT, Op.HC_FAIL], ids=["disconnect", "fail"])
def test_a_forger_replaying_a_nonce_does_not_start_the_round_without_its_owner(monkeypatch,
                                                                            leave):
    """--min-receivers 2, an unsigned receiver and a signed one: a forger that sniffed the
    signed one's nonce sends it from its own address before the owner reaches the sender,
    and leaves as soon as it has its (useless) signature, saying nothing or that it failed
    (a failed receiver keeps its place: the forger's is its nonce's owner's). The round does
    not start with the unsigned receiver and the forger: it starts once the owner is
    connected."""
    nonce, table = statements.new_nonce(), Table()
    script = [(0.01, Op.CONNECT_REQ, req(), HONEST),
              (0.02, Op.CONNECT_REQ, req(nonce), FORGER),
              (0.15, leave, Fail(table, FORGER, "forged"), FORGER),
              (0.90, Op.CONNECT_REQ, req(nonce), VICTIM)]  # its next repeat, a second on
    why, table, when = wait(script, monkeypatch, table, min_receivers=2)
    assert why.startswith("2 receiver(s) connected"), why
    assert set(table.participants) == {HONEST, VICTIM}
    assert when >= 0.02 + NONCE_SETTLE


def test_a_receiver_that_failed_before_the_start_is_not_waited_for(monkeypatch):
    """--min-receivers 2 --max-wait 30: a herdcast receiver connects and fails at once,
    saying why (HC_FAIL: its disk is too small); it will not come back. The round starts as
    soon as the other one connects, with the failed one's verdict kept, instead of waiting
    --max-wait for a second receiver."""
    table = Table()
    small = "10.9.0.16"
    script = [(0.01, Op.CONNECT_REQ, req(), small),
              (0.05, Op.HC_FAIL, Fail(table, small, "disk too small"), small),
              (1.00, Op.CONNECT_REQ, req(), HONEST)]
    why, table, when = wait(script, monkeypatch, table, min_receivers=2, max_wait=30)
    assert why == "1 receiver(s) connected, 1 failed before the start", why
    assert when < 1.2 and set(table.participants) == {HONEST}
    assert table.served[small].reason == "disk too small"


def test_a_receiver_that_left_before_the_start_is_waited_for(monkeypatch):
    """A receiver that leaves without a verdict (DISCONNECT: udp-receiver stopped by its
    user) gives up its place, as with udpcast: --min-receivers 2 waits on, to --max-wait."""
    script = [(0.01, Op.CONNECT_REQ, req(caps=Cap.STOCK), FORGER),
              (0.05, Op.DISCONNECT, PLAIN_DISCONNECT, FORGER),
              (1.00, Op.CONNECT_REQ, req(), HONEST)]
    why, table, when = wait(script, monkeypatch, min_receivers=2, max_wait=5)
    assert why == "--max-wait reached" and when >= 6.0, (why, when)


def test_a_replayed_nonce_while_its_owner_is_connected_adds_no_place(monkeypatch):
    """The forger stays: the owner and the forger share one place, so --min-receivers 3
    waits for a third receiver rather than counting the forger."""
    nonce = statements.new_nonce()
    script = [(0.01, Op.CONNECT_REQ, req(nonce), VICTIM),
              (0.02, Op.CONNECT_REQ, req(nonce), FORGER),
              (0.03, Op.CONNECT_REQ, req(), HONEST),
              (5.00, Op.CONNECT_REQ, req(), "10.9.0.15")]
    why, table, when = wait(script, monkeypatch, min_receivers=3)
    assert why == "4 receiver(s) connected" and when >= 5.0


def test_requests_forged_from_its_address_with_new_nonces_do_not_hold_its_place(monkeypatch):
    """A forger sending CONNECT_REQs from the signed receiver's own address, each with a new
    nonce: the receiver's place still counts two seconds after its first nonce."""
    nonce = statements.new_nonce()
    script = [(0.01, Op.CONNECT_REQ, req(nonce), VICTIM), (0.02, Op.CONNECT_REQ, req(), HONEST)]
    script += [(0.05 + i / 10, Op.CONNECT_REQ, req(statements.new_nonce()), VICTIM)
               for i in range(100)]
    why, table, when = wait(script, monkeypatch, min_receivers=2)
    assert why == "2 receiver(s) connected" and 0.01 + NONCE_SETTLE <= when < 2.5, (why, when)


def test_places_count_a_nonce_once_and_only_once_it_is_known_long_enough():
    nonce, other = statements.new_nonce(), statements.new_nonce()
    table = Table()
    table.connect(HONEST, (HONEST, 9000), CAPS, 0, None, now=0.0)
    table.connect(FORGER, (FORGER, 9000), CAPS, 0, nonce, now=0.0)
    assert table.places(0.1) == 1  # the forger's nonce may be somebody else's
    table.connect(FORGER, (FORGER, 9000), CAPS, 0, nonce, now=0.3)  # it asks again
    table.connect(VICTIM, (VICTIM, 9000), CAPS, 0, nonce, now=0.5)
    assert table.places(NONCE_SETTLE - 0.01) == 1
    assert table.places(NONCE_SETTLE) == 2  # the nonce's owner and its copy: one place
    table.connect("10.9.0.15", ("10.9.0.15", 9000), CAPS, 0, other, now=1.0)
    assert table.places(1.0 + NONCE_SETTLE) == 3


def test_the_settle_outlasts_two_of_the_owners_repeats():
    """A signed receiver repeats its CONNECT_REQ every CONNECT_RETRY: by the time a nonce's
    place counts, its owner has asked at least twice (one may be lost)."""
    assert NONCE_SETTLE >= 2 * CONNECT_RETRY


@pytest.mark.parametrize("min_receivers", [1, 2])
def test_receivers_without_a_nonce_start_it_at_once(monkeypatch, min_receivers):
    script = [(0.01, Op.CONNECT_REQ, req(), HONEST), (0.02, Op.CONNECT_REQ, req(), FORGER)]
    why, table, when = wait(script, monkeypatch, min_receivers=min_receivers)
    assert why.endswith("receiver(s) connected") and when < 0.2
