"""The newc writer: GNU cpio reads what it writes, and the same inputs give the same bytes."""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from builder import cpio

pytestmark = pytest.mark.skipif(shutil.which("cpio") is None, reason="GNU cpio not installed")


def _tree(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "etc" / "deep" / "er").mkdir(parents=True)
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    (root / "bin" / "tool").chmod(0o700)
    (root / "etc" / "empty").write_bytes(b"")
    (root / "etc" / "deep" / "er" / "odd").write_bytes(bytes(range(256)) * 3 + b"x")
    (root / "etc" / "a-b").write_bytes(b"sorts between etc/ and etc/a/")
    (root / "sh").symlink_to("bin/tool")
    return root


def _archive(entries, mtime: int = 0) -> bytes:
    buf = io.BytesIO()
    cpio.write_archive(entries, buf, mtime=mtime)
    return buf.getvalue()


def test_gnu_cpio_extracts_files_dirs_and_symlinks(tmp_path):
    src = _tree(tmp_path / "src")
    blob = _archive(cpio.entries_from_tree(src), mtime=1_700_000_000)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(
        ["cpio", "-i", "--quiet", "-d", "--no-absolute-filenames", "--preserve-modification-time"],
        input=blob, cwd=out, capture_output=True, timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    for rel in ("bin/tool", "etc/empty", "etc/deep/er/odd", "etc/a-b"):
        assert (out / rel).read_bytes() == (src / rel).read_bytes(), rel
        assert (out / rel).stat().st_mtime == 1_700_000_000
    assert os.readlink(out / "sh") == "bin/tool"
    assert stat.S_IMODE((out / "bin/tool").stat().st_mode) == 0o755  # executable: normalised
    assert stat.S_IMODE((out / "etc/empty").stat().st_mode) == 0o644


def test_gnu_cpio_lists_every_member_with_owner_root_and_device_nodes(tmp_path):
    src = _tree(tmp_path / "src")
    devices = [cpio.directory("dev"), cpio.chardev("dev/console", 5, 1)]
    entries = cpio.entries_from_tree(src) + devices
    blob = _archive(entries)
    proc = subprocess.run(
        ["cpio", "-t", "-v", "--quiet", "--numeric-uid-gid"],
        input=blob, capture_output=True, timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.decode().splitlines()
    names = [line.split()[-1] if " -> " not in line else line.split()[-3] for line in lines]
    expected = sorted(e.name for e in entries)
    assert names == expected
    console = next(line for line in lines if line.endswith("dev/console"))
    assert console.startswith("crw-------")
    assert re.search(r"\b5,\s+1\b", console), console
    for line in lines:
        assert line.split()[2:4] == ["0", "0"], line  # uid, gid


def test_reader_round_trips_the_writer(tmp_path):
    src = _tree(tmp_path / "src")
    entries = cpio.entries_from_tree(src)
    members = list(cpio.read_archive(_archive(entries, mtime=42)))
    assert [name for _, name, _ in members] == sorted(e.name for e in entries)
    by_name = {name: (hdr, data) for hdr, name, data in members}
    assert by_name["etc/deep/er/odd"][1] == (src / "etc/deep/er/odd").read_bytes()
    assert by_name["sh"][1] == b"bin/tool"
    assert {hdr["mtime"] for hdr, _ in by_name.values()} == {42}
    assert len({hdr["ino"] for hdr, _ in by_name.values()}) == len(members)


def test_same_inputs_give_same_bytes_whatever_the_files_mtimes_and_umask(tmp_path):
    first = _archive(cpio.entries_from_tree(_tree(tmp_path / "a")), mtime=7)
    b = _tree(tmp_path / "b")
    os.utime(b / "etc" / "empty", (123456, 123456))
    (b / "etc" / "empty").chmod(0o600)
    second = _archive(list(reversed(cpio.entries_from_tree(b))), mtime=7)
    assert first == second
    assert _archive(cpio.entries_from_tree(b), mtime=8) != second


def test_members_are_aligned_and_archive_ends_with_trailer(tmp_path):
    blob = _archive([cpio.regular("abc", b"12345"), cpio.directory("d")])
    assert blob.startswith(b"070701")
    assert b"TRAILER!!!\0" in blob
    # second header starts on a 4-byte boundary
    second = blob.index(b"070701", 1)
    assert second % 4 == 0


def test_duplicate_names_are_refused():
    with pytest.raises(cpio.CpioError, match="duplicate"):
        _archive([cpio.regular("x", b"1"), cpio.regular("/x", b"2")])


def test_source_date_epoch_must_be_a_number(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert cpio.source_date_epoch() == 1700000000
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(cpio.CpioError, match="SOURCE_DATE_EPOCH"):
        cpio.source_date_epoch()
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert cpio.source_date_epoch() == 0
