"""The map of the code holds: no import cycle between modules, every import allowed by
docs/DESIGN.md's table, no package over 30% of the lines, no module far over ~400 lines.

Imports are read with `ast` from every module, at the top and inside functions alike (a lazy
import is still a dependency)."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (
    "storage",
    "envs",
    "sae",
    "agents",
    "steering",
    "monitors",
    "rollouts",
    "reports",
    "studies",
    "cli",
)
MAX_MODULE_LINES = 420  # "about 400": a module past this is two ideas
MAX_PACKAGE_SHARE = 0.30


def modules() -> dict[str, Path]:
    """Dotted module name → file, for every module of every package."""
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imported_names(path: Path, name: str) -> list[tuple[str, int]]:
    """(dotted name, line) of every import in a module, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")
                parts = parts if path.name == "__init__.py" else parts[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            out += [(f"{base}.{a.name}", node.lineno) for a in node.names]
    return out


def import_graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], int]]:
    """Module → the physteer modules it imports (a name resolves to its longest module prefix)."""
    mods = modules()

    def resolve(dotted: str) -> str | None:
        while dotted and dotted not in mods:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    graph: dict[str, set[str]] = defaultdict(set)
    lines = {}
    for name, path in mods.items():
        graph[name]
        for dotted, line in imported_names(path, name):
            target = resolve(dotted)
            if target and target != name:
                graph[name].add(target)
                lines.setdefault((name, target), line)
    return graph, lines


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def design_rules() -> dict[str, set[str]]:
    """Package → the packages it may import, read from docs/DESIGN.md's table."""
    text = (ROOT / "docs" / "DESIGN.md").read_text()
    section = text.split("## Which package may import which", 1)[1]
    block = section.split("```text", 1)[1].split("```", 1)[0]
    rules = {}
    for line in block.strip().splitlines():
        m = re.match(r"(\w+)\s+<-\s+([^(]*)", line)
        assert m, f"DESIGN.md rule line not understood: {line!r}"
        allowed = {w.strip() for w in m.group(2).split(",")} - {"nothing", ""}
        rules[m.group(1)] = allowed
    return rules


def test_no_import_cycles():
    found = cycles(import_graph()[0])
    assert found == [], f"{len(found)} import cycles: {found}"


def test_cycle_finder_finds_a_cycle():
    """The check itself can fail: a planted two-module cycle and a three-module one are found."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c", "a"}, "f": set()}
    assert cycles(graph) == [["a", "b"], ["c", "d", "e"]] or sorted(cycles(graph)) == [
        ["a", "b"],
        ["c", "d", "e"],
    ]


def test_design_rules_cover_every_package_and_hold():
    rules = design_rules()
    assert set(rules) == set(PACKAGES), (
        f"DESIGN.md's table names {sorted(rules)}, packages are {sorted(PACKAGES)}"
    )
    graph, lines = import_graph()
    broken = []
    for source, targets in graph.items():
        package = source.split(".")[0]
        for target in targets:
            other = target.split(".")[0]
            if other != package and other not in rules[package]:
                broken.append(
                    f"{source} imports {target} (line {lines[(source, target)]}): {package} may import {sorted(rules[package])}"
                )
    assert broken == [], "\n".join(broken)


def test_third_party_rules():
    """envs never imports torch or transformers; storage imports only the standard library at
    module level (its heavy libraries are imported inside the functions that write them)."""
    import sys

    graph_mods = modules()
    offenders = []
    for name, path in graph_mods.items():
        package = name.split(".")[0]
        tree = ast.parse(path.read_text())
        if package == "envs":
            for dotted, line in imported_names(path, name):
                if dotted.split(".")[0] in {"torch", "transformers"}:
                    offenders.append(f"{name}:{line} imports {dotted}")
        if package == "storage":
            for node in tree.body:
                if isinstance(node, (ast.Import, ast.ImportFrom)) and not getattr(node, "level", 0):
                    top = (
                        node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                    ).split(".")[0]
                    if top not in sys.stdlib_module_names and top not in ("storage", "__future__"):
                        offenders.append(f"{name}:{node.lineno} imports {top} at module level")
    assert offenders == [], offenders


def test_package_and_module_sizes():
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    total = sum(sizes.values())
    shares = {p: sum(n for m, n in sizes.items() if m.split(".")[0] == p) / total for p in PACKAGES}
    assert max(shares.values()) <= MAX_PACKAGE_SHARE, {p: round(s, 3) for p, s in shares.items()}
    big = {m: n for m, n in sizes.items() if n > MAX_MODULE_LINES}
    assert big == {}, f"modules over {MAX_MODULE_LINES} lines: {big}"


def test_every_package_says_what_it_may_import():
    for package in PACKAGES:
        doc = ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text()))
        assert doc and "import" in doc.lower(), (
            f"{package}/__init__.py: docstring should say what it is and what it may import"
        )
