"""herdcast as a service: `make install` puts `herdcast` on PATH (its own venv, the package
installed, not the checkout) with the systemd unit for `send --serve` and its settings file;
systemd accepts the unit; and the unit's own command line, expanded from the settings as
systemd expands it, serves a node, dates its log lines and writes its report when stopped."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from peers import herdcast_receiver, logs, make_source, sha, wait

from builder.lab.netlab import NetLab

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A `make install` into a temporary prefix: PREFIX/usr/bin, PREFIX/etc."""
    top = tmp_path_factory.mktemp("install")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MAKEFLAGS")}
    proc = subprocess.run(["make", "-s", "install", f"PREFIX={top}/usr",
                           f"SYSCONFDIR={top}/etc"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return top


def _unit(top: Path) -> str:
    return (top / "etc/systemd/system/herdcast-serve.service").read_text()


def test_install_puts_herdcast_on_path(installed: Path):
    exe = installed / "usr/bin/herdcast"
    env = {"PATH": f"{exe.parent}:/usr/bin:/bin"}  # no PYTHONPATH: not the checkout's
    proc = subprocess.run(["herdcast", "--version"], env=env, cwd=installed,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("herdcast "), proc.stderr
    assert os.path.realpath(exe).startswith(str(installed / "usr/lib/herdcast"))


def test_install_puts_the_man_page_and_completions_in_place(installed: Path):
    """`man herdcast` and tab completion work after `make install` (generated there from
    the installed parsers, builder.manual)."""
    share = installed / "usr/share"
    page = (share / "man/man1/herdcast.1").read_text()
    assert ".TH HERDCAST" in page and "\\-\\-min\\-receivers" in page
    assert "--min-receivers" in (share / "bash-completion/completions/herdcast").read_text()
    assert "--blank" in (share / "zsh/site-functions/_herdcast").read_text()


def test_install_keeps_an_edited_settings_file(installed: Path):
    env_file = installed / "etc/herdcast/serve.env"
    env_file.write_text(env_file.read_text() + "# edited\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MAKEFLAGS")}
    subprocess.run(["make", "-s", "install", f"PREFIX={installed}/usr",
                    f"SYSCONFDIR={installed}/etc"], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=280)
    assert env_file.read_text().endswith("# edited\n")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_accepts_the_unit(installed: Path):
    unit = installed / "etc/systemd/system/herdcast-serve.service"
    assert "@" not in re.sub(r"^#.*$", "", unit.read_text(), flags=re.M)
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _expand(word: str, env: dict[str, str]) -> list[str]:
    """systemd's ExecStart expansion: ${VAR} is one word, a lone $VAR splits at blanks."""
    if m := re.fullmatch(r"\$([A-Za-z_]\w*)", word):
        return env.get(m.group(1), "").split()
    return [re.sub(r"\$\{(\w+)\}", lambda v: env.get(v.group(1), ""), word)]


def _exec_start(top: Path, settings: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    env = {}
    for line in (top / "etc/herdcast/serve.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    env.update(settings)
    (line,) = [ln for ln in _unit(top).splitlines() if ln.startswith("ExecStart=")]
    argv = [w for word in shlex.split(line.removeprefix("ExecStart=")) for w in
            _expand(word, env)]
    return argv, env


@pytest.mark.netns
def test_the_units_command_serves_and_reports(installed: Path, tmp_path: Path):
    src = make_source(tmp_path, 2_000_003)
    reports = tmp_path / "reports"
    reports.mkdir()
    argv, _ = _exec_start(installed, {"HERDCAST_IMAGE": str(src),
                                      "HERDCAST_INTERFACE": "eth0",
                                      "HERDCAST_REPORT_DIR": str(reports)})
    assert Path(argv[0]) == installed / "usr/bin/herdcast"
    out = tmp_path / "out.bin"
    with NetLab(2, net=93) as lab:
        server, node = lab.hosts
        svc = server.popen(argv, cwd=tmp_path, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL,
                           stderr=(tmp_path / "service.log").open("wb"))
        time.sleep(0.5)
        rcv = herdcast_receiver(node, out, tmp_path / "node.log")
        assert wait(rcv, 60) == 0, logs(tmp_path)
        svc.send_signal(signal.SIGTERM)  # systemctl stop: idle, so at once
        assert wait(svc, 30) == 0, logs(tmp_path)
    assert sha(out) == sha(src)
    report = json.loads((reports / "serve.json").read_text())
    assert [r["verdict"] for r in report["receivers"]] == ["ok"], report
    events = [json.loads(x)["event"] for x in (reports / "events.jsonl").read_text().splitlines()]
    assert "finished" in events and events[-1] == "session_ended"
    dated = (reports / "serve.log").read_text().splitlines()
    assert dated and all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} ", line)
                         for line in dated), dated
    assert any("herdcast send: receiver 10.93.0.11" in line for line in dated)
