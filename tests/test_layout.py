"""The tree reads like the data flow: PBX edge -> ``acd`` core -> service -> console / IVR /
recordings, with the entry points on top.  Checked from the source (every import, also those
inside functions), so a new import that runs the wrong way or closes a cycle fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("acd", "callcenter", "agent_console", "ivr", "recordings")
# The entry points: they build everything, so they may import any wing.
ENTRY_POINTS = {"callcenter.cli", "callcenter.demo", "callcenter.demo_orders",
                "callcenter.bench", "callcenter.telephony", "callcenter.migrations.env",
                "callcenter.desk_cli", "callcenter.bench_search", "callcenter.web",
                "callcenter.bench_scaleout"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "versions" not in path.parts:  # alembic revisions import only sqlalchemy/alembic
                found[module_name(path)] = path
    return found


MODULES = project_modules()


def imports_of(name: str) -> set[str]:
    """The project modules ``name`` imports, anywhere in its body."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        for t in targets:
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            if t and t != name and not (name.startswith(t + ".") or t == name):
                out.add(t)
    # a package's __init__ is reached by importing any of its modules; do not count it as a use
    return {t for t in out if not any(m.startswith(t + ".") for m in MODULES) or t in _leaves()}


def _leaves() -> set[str]:
    return {m for m in MODULES if MODULES[m].name != "__init__.py"}


GRAPH = {m: imports_of(m) for m in MODULES}


def test_there_is_no_import_cycle() -> None:
    seen: dict[str, int] = {}  # 1 on the stack, 2 done
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        seen[m] = 1
        for n in sorted(GRAPH[m]):
            if seen.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in seen:
                visit(n, stack + [n])
        seen[m] = 2

    for m in sorted(GRAPH):
        if m not in seen:
            visit(m, [m])
    assert cycles == []


# Which wings each wing may import (besides itself).  Read top to bottom as the data flow.
MAY_IMPORT: dict[str, tuple[str, ...]] = {
    "acd": (),
    "callcenter": (),  # the package itself; its modules are listed below
    "callcenter.config": ("acd",),
    "callcenter.logs": (),
    "callcenter.runtime": (),  # process plumbing with no project import: any wing may use it
    "callcenter.db": ("acd", "callcenter.config"),
    "callcenter.pbx": ("acd", "callcenter.config", "callcenter.logs", "callcenter.runtime",
                       "recordings.store"),  # the simulator writes MixMonitor WAVs with it
    "callcenter.orders": ("callcenter.db", "callcenter.config"),
    # per-day report summaries: built by the service's writer, read by the reports
    "callcenter.report_days": ("acd", "callcenter.config", "callcenter.db"),
    "callcenter.service": ("acd", "callcenter.config", "callcenter.db", "callcenter.pbx.ami",
                           "callcenter.report_days"),
    "callcenter.ops": ("callcenter.service",),
    "callcenter.bus": ("callcenter.runtime",),
    "callcenter.ha": (),
    # the scale-out rig (simulator child, core processes, queue_log truth): tests and bench
    "callcenter.scaleout": ("acd", "callcenter.db", "callcenter.logs", "callcenter.pbx",
                            "callcenter.runtime"),
    "recordings": ("acd", "callcenter.config", "callcenter.db", "callcenter.runtime",
                   "callcenter.pbx.ami", "callcenter.orders",
                   "ivr.values"),  # a pure leaf: values from the PBX on their way back
    "ivr": ("acd", "callcenter.config", "callcenter.db", "callcenter.pbx.ami",
            "callcenter.orders", "callcenter.runtime"),
    "agent_console": ("acd", "callcenter.config", "callcenter.db", "callcenter.pbx.ami",
                      "callcenter.ops", "callcenter.report_days",
                      "callcenter.orders", "callcenter.service", "callcenter.runtime",
                      "recordings", "ivr"),
}


def wing_of(module: str) -> str | None:
    best = None
    for wing in MAY_IMPORT:
        if (module == wing or module.startswith(wing + ".")) and (best is None or len(wing) > len(best)):
            best = wing
    return best


def allowed(target: str, rules: tuple[str, ...]) -> bool:
    return any(target == r or target.startswith(r + ".") for r in rules)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m not in ENTRY_POINTS))
def test_each_wing_imports_only_the_wings_below_it(module: str) -> None:
    wing = wing_of(module)
    assert wing is not None, f"{module} has no wing in MAY_IMPORT: give it one"
    wrong = sorted(t for t in GRAPH[module]
                   if wing_of(t) != wing and not allowed(t, MAY_IMPORT[wing]))
    assert wrong == [], f"{module} ({wing}) imports {wrong}"


def test_only_entry_points_and_tests_import_the_app_module() -> None:
    importers = sorted(m for m, targets in GRAPH.items() if "agent_console.server" in targets)
    assert set(importers) <= ENTRY_POINTS, importers


def test_every_package_says_what_it_is() -> None:
    for name, path in MODULES.items():
        if path.name == "__init__.py" and name not in ("callcenter.migrations", "tests"):
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
            assert doc and "import" in doc.lower(), f"{name}/__init__.py must say what the wing is and may import"
