"""The fleet's pieces without a network: --serve's options, rows and events, the report
schema (and docs/report-schema.md agreeing with it), MAC and host-name lookups, the views."""

from __future__ import annotations

import io
import json
import os
import re
import time
from pathlib import Path

import pytest

from agent.transfer.options import OptionError, parse_send_args
from agent.transfer.result import TransferResult
from agent.transfer.send import jsonreport
from agent.transfer.send.fleet import Fleet
from agent.transfer.send.names import Names, read_arp, read_names
from agent.transfer.send.participants import Table
from agent.transfer.send.record import Receiver, Verdict
from agent.transfer.send.report import serve_verdict
from agent.transfer.send.view import LiveView, PlainView, make_view

DOC = Path(__file__).resolve().parent.parent / "docs" / "report-schema.md"


def test_serve_defaults_and_conflicts():
    opts = parse_send_args(["-f", "/dev/null", "--serve"])
    assert opts.serve and opts.min_receivers is None and opts.report is None
    assert opts.live is None  # the live table when stderr is a terminal
    for extra, word in ((["--async", "--max-bitrate", "1m"], "--async"),
                        (["--no-late-join"], "--no-late-join"),
                        (["--start-timeout", "5"], "--start-timeout"),
                        (["--min-receivers", "4"], "--min-receivers"),
                        (["--max-wait", "60"], "--max-wait")):
        with pytest.raises(OptionError, match=f"--serve and {word} do not go together"):
            parse_send_args(["-f", "/dev/null", "--serve", *extra])
    with pytest.raises(OptionError, match="not stdin or --pipe"):
        parse_send_args(["--serve"])


def _fleet() -> tuple[Fleet, Table, io.StringIO]:
    events = io.StringIO()
    fleet = Fleet(events=events, names=Names(arp="/nonexistent", hosts="/nonexistent",
                                             leases=()))
    return fleet, Table(observer=fleet), events


def test_rows_states_and_events_through_a_round(capsys):
    fleet, table, events = _fleet()
    table.connect("10.0.0.11", ("10.0.0.11", 9000), 0x9 | 0x100, 0)
    table.connect("10.0.0.12", ("10.0.0.12", 9000), 0x9, 0)
    assert [r.state.value for r in fleet.rows] == ["waiting", "waiting"]
    fleet.round_started(0, list(table.participants.values()), "raw")
    table.wait_for_next("10.0.0.13", ("10.0.0.13", 9000), 0x9 | 0x100)
    assert fleet.counts() == {"receiving": 2, "waiting": 1}
    table.remove("10.0.0.12", Verdict.DROPPED)
    first = table.participants["10.0.0.11"]
    table.record_digest(first, 100, b"\x01" * 32, True)
    table.record_digest(first, 100, b"\x02" * 32, False)  # a verdict is given once
    table.settle()
    fleet.round_ended(100, "01" * 32)
    assert fleet.counts() == {"done": 1, "dropped": 1, "waiting": 1}
    said = capsys.readouterr().err.splitlines()
    assert any("receiver 10.0.0.12 dropped" in line for line in said)
    assert any("receiver 10.0.0.11 done" in line and "digest agreed" in line for line in said)
    kinds = [json.loads(line)["event"] for line in events.getvalue().splitlines()]
    assert kinds == ["connected", "connected", "round_started", "started", "started",
                     "connected", "dropped", "finished", "round_ended"]
    assert serve_verdict(fleet.finished_rows()) == (True, None)


def test_a_receiver_imaged_twice_has_two_rows():
    fleet, table, _ = _fleet()
    for round_no in range(2):
        table.connect("10.0.0.11", ("10.0.0.11", 9000), 0x9, 0)
        fleet.round_started(round_no, [table.participants["10.0.0.11"]], "raw")
        table.settle()
        fleet.round_ended(10, None)
    assert [r.round for r in fleet.finished_rows()] == [0, 1]


def test_serve_verdict_fails_only_on_finished_receivers_that_disagree():
    rows = [Receiver("a", verdict=Verdict.DROPPED), Receiver("b", verdict=Verdict.INTERRUPTED),
            Receiver("d", verdict=Verdict.OK)]
    assert serve_verdict(rows) == (True, None)
    ok, error = serve_verdict(rows[:2])  # nobody imaged is no success
    assert not ok and error.what.startswith("stopped before any receiver was imaged (2 came")
    ok, error = serve_verdict([])
    assert not ok and error.what == "stopped before any receiver was imaged"
    ok, error = serve_verdict([*rows, Receiver("c", verdict=Verdict.DIGEST_MISMATCH)])
    assert not ok and "c digest mismatch" in error.what and error.fix


def test_report_validates_and_the_schema_catches_mistakes():
    fleet, table, _ = _fleet()
    table.connect("10.0.0.11", ("10.0.0.11", 9000), 0x9 | 0x100, 0)
    fleet.round_started(0, [table.participants["10.0.0.11"]], "image")
    table.record_digest(table.participants["10.0.0.11"], 5, b"\x02" * 32, True)
    fleet.round_ended(5, "02" * 32)
    doc = jsonreport.build(fleet, TransferResult(ok=True, bytes=5, sha256="02" * 32),
                           "/dev/sda", 1 << 30, fleet.started + 3)
    assert jsonreport.validate(doc) == []
    json.dumps(doc)
    bad = json.loads(json.dumps(doc))
    bad["receivers"][0]["bytes"] = "5"
    del bad["session"]["digest"]
    bad["receivers"][0]["verdict"] = "fine"
    errors = jsonreport.validate(bad)
    assert "report.session: no 'digest'" in errors
    assert any("receivers[0].bytes: str is not integer" in e for e in errors)
    assert any("'fine' is not one of" in e for e in errors)


def _doc_fields(section: str) -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    part = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in part.splitlines() if line.startswith("| `")]
    return {re.match(r"\| `([^`]+)`", r).group(1): r.split("|")[2].strip() for r in rows}


@pytest.mark.parametrize("section, schema", [
    ("session", jsonreport.SCHEMA["properties"]["session"]),
    ("rounds", jsonreport.ROUND),
    ("receivers", jsonreport.RECEIVER),
])
def test_the_documented_schema_is_the_code(section, schema):
    """docs/report-schema.md lists each field with its JSON type, as the code checks it."""
    documented = _doc_fields(section)
    assert sorted(documented) == sorted(schema["properties"])
    for name, sub in schema["properties"].items():
        kinds = sub["type"] if isinstance(sub["type"], list) else [sub["type"]]
        assert documented[name] == " or ".join(f"`{k}`" for k in kinds), name


def test_arp_and_names_are_read_from_local_files(tmp_path):
    arp = tmp_path / "arp"
    arp.write_text("IP address  HW type  Flags  HW address         Mask  Device\n"
                   "10.0.0.11   0x1      0x2    52:54:00:AA:BB:01  *     eth0\n"
                   "10.0.0.12   0x1      0x0    00:00:00:00:00:00  *     eth0\n")
    assert read_arp(str(arp)) == {"10.0.0.11": "52:54:00:aa:bb:01"}
    leases, hosts = tmp_path / "leases", tmp_path / "hosts"
    leases.write_text("1700000000 52:54:00:aa:bb:01 10.0.0.11 lab-01 01:52:54:00:aa:bb:01\n"
                      "1700000000 52:54:00:aa:bb:02 10.0.0.12 * *\n")
    hosts.write_text("127.0.0.1 localhost\n10.0.0.12 lab-02 # comment\n")
    assert read_names(str(hosts), (str(leases),)) == {
        "10.0.0.11": "lab-01", "127.0.0.1": "localhost", "10.0.0.12": "lab-02"}
    names = Names(arp=str(arp), hosts=str(hosts), leases=(str(leases),))
    assert names.mac("10.0.0.11") == "52:54:00:aa:bb:01" and names.mac("10.0.0.12") is None
    assert names.hostname("10.0.0.11") == "lab-01"


def test_views_plain_on_a_pipe_live_when_asked(capsys):
    fleet, table, _ = _fleet()
    assert type(make_view(fleet, None, enabled=True, live=None)) is PlainView  # not a tty
    table.connect("10.0.0.11", ("10.0.0.11", 9000), 0x9, 0)
    fleet.round_started(0, [table.participants["10.0.0.11"]], "raw")
    plain = PlainView(fleet, 1000, True)
    assert plain.line().endswith("(1 receiving)")
    view = make_view(fleet, 1000, enabled=True, live=True)
    assert isinstance(view, LiveView)
    view.update(500)
    view.close()
    err = capsys.readouterr().err
    assert "10.0.0.11" in err and "receiving" in err


def test_the_report_is_written_through_no_planted_symlink(tmp_path):
    """Issue 17 (low): the report's temporary file had a predictable name beside it, so a
    symlink planted there made the write land elsewhere; it no longer follows one."""
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    report = tmp_path / "report.json"
    for name in (f"report.json.tmp{os.getpid()}", f".report.json.tmp{os.getpid()}"):
        (tmp_path / name).symlink_to(victim)
    jsonreport.write(str(report), {"ok": True})
    assert victim.read_text() == "keep me\n"
    assert not report.is_symlink() and json.loads(report.read_text()) == {"ok": True}
    assert oct(report.stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.is_symlink()) == [
        "report.json", "victim"]


def _render(view, width: int) -> str:
    from rich.console import Console

    from agent.transfer.send.view import fleet_table

    console = Console(width=width, record=True, file=io.StringIO())
    console.print(fleet_table(view, view.line(), width))
    return console.export_text()


def test_fleet_view_at_80_columns_keeps_address_host_and_state_whole(monkeypatch):
    """A node's console or a small terminal: address, host, state, percent and ETA whole on
    each row; the title's ETA is the slowest row's."""
    from agent.transfer.progress import Gauge

    fleet, table, _ = _fleet()
    for i, host in ((11, "lab-pc-number-01"), (12, "lab-pc-number-02")):
        r = table.connect(f"10.99.100.{i}", (f"10.99.100.{i}", 9000), 0x109, 0)
        r.hostname = host
    rows = list(table.participants.values())
    fleet.round_started(0, rows, "image")
    now = time.time()
    rows[0].started = rows[1].started = now - 10
    rows[0].bytes, rows[1].bytes = 500_000_000, 250_000_000  # 50 and 25 MB/s
    view = PlainView(fleet, None, True)
    view.new_round(Gauge(1_000_000_000), 0)
    view.update(600_000_000)
    monkeypatch.setattr(view, "eta", lambda rate: view.slowest(time.time()))  # as LiveView
    text = _render(view, 80)
    assert max(len(line) for line in text.splitlines()) <= 80, text
    for word in ("10.99.100.11", "10.99.100.12", "lab-pc-number-01", "receiving", "50%", "25%",
                 "0:10", "0:30"):
        assert word in text, (word, text)
    assert "…" not in text
    title = text.splitlines()[0]
    assert "ETA 0:30" in title or "ETA 0:29" in title, title  # the slowest row's
    wide = _render(view, 140)
    assert "MAC" in wide and "rexmit" in wide and "rate" in wide
