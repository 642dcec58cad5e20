"""The shape of the code: the layer order, no import cycles, no module past ~400 lines,
one error family.

A newcomer reads the code from the commands down, each layer built on the ones below it
(LAYERS, which the README's Layout section states word for word); an import that points up,
a cycle or a giant module is where that reading breaks, so they fail here.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("agent", "builder")
MAX_LINES = 400

#: Top to bottom. A module belongs to the layer of its longest prefix listed here, and imports
#: only from its own layer or those below (lazy imports count too). A new package must be
#: placed here: an unplaced module fails.
LAYERS: list[tuple[str, ...]] = [
    # `python -m builder`, and the manual it makes from every command's parser (agent.cli)
    ("builder.__main__", "builder.manual"),
    # the commands: the dispatcher and one module per command
    ("agent.__main__", "agent.cli", "agent.cmd"),
    ("agent.deploy",),  # power a fleet on, serve it, disarm it
    ("builder",),  # make initrd, the boot loader configs, the labs
    ("agent.boot",),  # the node: cmdline -> config -> the steps, PID 1
    ("agent.transfer",),  # send and receive over udpcast's protocol
    ("agent.personalize",),  # a clone made its own machine
    ("agent.image",),  # used-block images
    ("agent.hw",),  # drivers, disks
    ("agent.net", "agent.trust"),  # the NIC and addresses; signing keys
    ("agent.udpcast",),  # the wire format
    ("agent.codec",),  # gz, lzop, zstd
    ("agent.say",),  # the one output path
    ("agent.errors", "agent"),  # the error family; the version
]


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports, anywhere in its body (lazy imports too:
    a cycle through a function-level import is still a cycle to read around)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    from agent.cli import COMMANDS  # the dispatcher imports these by name, when run

    graph["agent.cli"] |= {command.module for command in COMMANDS.values()}
    return graph


def layer_of(module: str, layers: list[tuple[str, ...]] = LAYERS) -> int | None:
    """The index in `layers` (0 is the top) of the longest prefix naming `module`."""
    best: tuple[int, int] | None = None
    for index, prefixes in enumerate(layers):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (
                    best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    return None if best is None else best[1]


def upward_imports(graph: dict[str, set[str]], layers: list[tuple[str, ...]] = LAYERS
                   ) -> list[str]:
    """Every import of a module from a layer above its own, as `importer -> imported`."""
    found = []
    for module, targets in sorted(graph.items()):
        here = layer_of(module, layers)
        for target in sorted(targets):
            there = layer_of(target, layers)
            if here is not None and there is not None and there < here:
                found.append(f"{module} -> {target}")
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that starts and ends on the same module, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_finder_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_graph_sees_lazy_imports():
    graph = import_graph()
    assert "agent.boot.node" in graph
    assert "agent.boot.node" in graph["agent.cmd.node"]  # imported inside a function
    assert "agent.cmd.send" in graph["agent.cli"]  # by name, from the dispatcher's table


def test_checker_sees_an_upward_import():
    """A synthetic graph: hw importing boot points up, boot importing hw does not."""
    assert upward_imports({"agent.hw.disk": {"agent.boot.node", "agent.errors"}}) == [
        "agent.hw.disk -> agent.boot.node"]
    assert upward_imports({"agent.boot.node": {"agent.hw.disk"}}) == []
    assert upward_imports({"agent.image.sink": {"agent.cmd.image"}}) == [
        "agent.image.sink -> agent.cmd.image"]
    # the longest prefix decides: a deeper listed package is its own layer
    assert upward_imports({"agent.a.b": {"agent.a"}}, [("agent.a",), ("agent.a.b",)]) == [
        "agent.a.b -> agent.a"]
    assert upward_imports({"agent.net.netif": {"agent.trust.keys"}}) == []  # one layer


def test_layers_point_down_only():
    upward = upward_imports(import_graph())
    assert not upward, ("imports that point up the layers (tests/test_architecture.py "
                        "LAYERS): " + ", ".join(upward))


def test_every_module_has_a_layer_and_every_layer_a_module():
    modules = _modules()
    unplaced = [name for name in modules if layer_of(name) is None]
    assert not unplaced, f"modules in no layer (add their package to LAYERS): {unplaced}"
    stale = [prefix for prefixes in LAYERS for prefix in prefixes
             if not any(m == prefix or m.startswith(prefix + ".") for m in modules)]
    assert not stale, f"LAYERS names modules that no longer exist (remove them): {stale}"


def test_readme_states_the_layers_the_test_checks():
    """The README's Layout section gives the same order, top to bottom."""
    text = (ROOT / "README.md").read_text()
    start = text.index("\nLayers, top to bottom:")
    line = " ".join(text[start:text.index("\n\n", start)].split())
    stated = [[word.strip("` ") for word in group.split(",")]
              for group in line.split(":", 1)[1].rstrip(".").split("→")]
    assert stated == [list(prefixes) for prefixes in LAYERS], line


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_giant_module():
    big = {name: n for name, path in _modules().items()
           if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines (split them by concern): {big}"


def test_one_error_family():
    """Every exception class the project declares descends from HerdcastError, so the entry
    points that catch it alone turn every failure into one line."""
    from agent.errors import HerdcastError

    strays = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                    isinstance(b, ast.Name) and b.id.endswith(("Error", "Exception"))
                    or isinstance(b, ast.Attribute) and b.attr.endswith("Error")
                    for b in node.bases):
                module = __import__(name, fromlist=["_"])
                cls = getattr(module, node.name)
                if not issubclass(cls, HerdcastError) and not node.name.startswith("_"):
                    strays.append(f"{name}.{node.name}")
    assert not strays, f"exceptions outside the HerdcastError family: {strays}"
