"""The node's boot-phase line (agent.boot.phases): when PID 1's Python started, when the
agent's steps began, each step's duration, and the end, on the kernel's boot clock."""

from agent.boot.phases import Phases


def test_the_line_names_each_step_with_its_duration():
    phases = Phases(python=4.1, now=6.25)
    phases.mark("hardware", now=9.5)
    phases.mark("network", now=10.6)
    phases.mark("transfer", now=13.7)
    assert phases.line() == ("boot phases (s after the kernel started): python 4.1, agent 6.2, "
                             "hardware +3.2, network +1.1, transfer +3.1, done 13.7")


def test_a_node_that_failed_early_still_says_when_it_began():
    assert Phases(now=5.0).line() == ("boot phases (s after the kernel started): agent 5.0, "
                                      "done 5.0")
