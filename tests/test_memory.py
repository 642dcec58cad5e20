"""agent.hw.memory: what a process may still take, under its memory cgroup's limit (v1, v2)."""

from __future__ import annotations

from agent.hw import memory

MiB = 1 << 20


def fake(tmp_path, monkeypatch, cgroup: str, mount: str, files: dict[str, str]) -> None:
    (tmp_path / "cgroup").write_text(cgroup)
    (tmp_path / "mountinfo").write_text(
        "22 1 0:21 / /proc rw,nosuid - proc proc rw\n" + mount.format(root=tmp_path / "fs"))
    (tmp_path / "meminfo").write_text("MemTotal: 4000000 kB\nMemAvailable: 2000000 kB\n")
    for name, text in files.items():
        path = tmp_path / "fs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.setattr(memory, "PROC_CGROUP", str(tmp_path / "cgroup"))
    monkeypatch.setattr(memory, "PROC_MOUNTINFO", str(tmp_path / "mountinfo"))
    monkeypatch.setattr(memory, "PROC_MEMINFO", str(tmp_path / "meminfo"))


def test_a_v2_limit_leaves_its_room_and_counts_reclaimable_cache_as_free(tmp_path, monkeypatch):
    fake(tmp_path, monkeypatch, "0::/system.slice/herdcast.service\n",
         "30 25 0:26 / {root} rw - cgroup2 cgroup2 rw\n",
         {"system.slice/herdcast.service/memory.max": f"{512 * MiB}\n",
          "system.slice/herdcast.service/memory.current": f"{300 * MiB}\n",
          "system.slice/herdcast.service/memory.stat": f"anon 1\ninactive_file {40 * MiB}\n",
          "system.slice/memory.max": "max\n", "system.slice/memory.current": "1\n"})
    assert memory.cgroup_left() == 252 * MiB
    assert memory.available() == 252 * MiB  # under MemAvailable's 1.9 GiB


def test_a_v1_parent_limit_counts_and_no_limit_is_the_machines(tmp_path, monkeypatch):
    fake(tmp_path, monkeypatch, "4:memory:/lab/node\n3:cpu:/\n",
         "31 25 0:27 / {root} rw - cgroup cgroup rw,memory\n",
         {"lab/node/memory.limit_in_bytes": "9223372036854771712\n",
          "lab/node/memory.usage_in_bytes": f"{10 * MiB}\n",
          "lab/memory.limit_in_bytes": f"{100 * MiB}\n",
          "lab/memory.usage_in_bytes": f"{90 * MiB}\n"})
    assert memory.available() == 10 * MiB
    (tmp_path / "fs" / "lab" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert memory.cgroup_left() is None and memory.available() == 2000000 * 1024
