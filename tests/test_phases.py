"""The node's boot-phase line (agent.boot.phases): when init ran, when the agent's steps
began, each step's duration, and the end, on the kernel's boot clock."""

import os

from agent.boot.phases import Phases, process_start, since_boot


def test_the_line_names_each_step_with_its_duration():
    phases = Phases(init=4.1, now=6.25)
    phases.mark("hardware", now=9.5)
    phases.mark("network", now=10.6)
    phases.mark("transfer", now=13.7)
    assert phases.line() == ("boot phases (s after the kernel started): init 4.1, agent 6.2, "
                             "hardware +3.2, network +1.1, transfer +3.1, done 13.7")


def test_a_node_that_failed_early_still_says_when_it_began():
    assert Phases(now=5.0).line() == ("boot phases (s after the kernel started): agent 5.0, "
                                      "done 5.0")


def test_process_start_reads_proc_stat(tmp_path):
    (tmp_path / "1").mkdir()
    # pid (comm) state ppid ... field 22 (starttime) in clock ticks; comm may hold ") "
    fields = ["S", *["0"] * 18, "450"]
    (tmp_path / "1" / "stat").write_text(f"1 (in it) x) {' '.join(fields)} 0 0\n")

    assert process_start(1, str(tmp_path)) == 450 / os.sysconf("SC_CLK_TCK")
    assert process_start(2, str(tmp_path)) is None


def test_this_process_started_before_now():
    started = process_start(os.getpid())
    assert started is not None and 0 <= started <= since_boot()



