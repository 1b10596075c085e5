"""The house keeps its shape: no import circle among the project's modules (DESIGN's layering is one-way), and no
library module cites a file of the repository that is not there (a reader follows those references)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("envs", "rewards", "trainer", "launch")
TOP = ("envs", "rewards", "trainer", "launch", "benchmarks", "docs", "tests", "docker")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            parts = list(p.relative_to(ROOT).with_suffix("").parts)
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def import_graph() -> dict[str, set[str]]:
    """Every import of one of our modules by another, at the top or inside a function (a lazy import is an arrow
    too: it only hides the circle until that function runs)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            graph[m] |= {n for n in names if n in mods and n != m and not m.startswith(n + ".")}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_the_checker_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_among_our_modules():
    assert circles(import_graph()) == []


CITED = re.compile(r"(?<![\w./-])((?:" + "|".join(TOP) + r")/[\w./-]*\w|[A-Z][A-Z_]+\.md)\b")


def test_no_library_module_cites_a_file_that_is_not_in_the_repo():
    missing = []
    for p in _modules().values():
        for ref in CITED.findall(p.read_text()):
            if any(c in ref for c in "*{}") or "NAME" in ref or "." not in ref.rsplit("/", 1)[-1]:
                continue  # a pattern or a name (a metric like rewards/asr/mean), not a file
            if not (ROOT / ref).exists():
                missing.append(f"{p.relative_to(ROOT)}: {ref}")
    assert missing == []


ALLOWED = {"envs": {"envs"}, "rewards": {"envs", "rewards"}, "trainer": {"envs", "rewards", "trainer"},
           "launch": set(PACKAGES)}


def test_arrows_point_down_the_layers():
    upward = [f"{m} -> {n}" for m, deps in import_graph().items() for n in deps
              if n.split(".")[0] not in ALLOWED[m.split(".")[0]]]
    assert upward == []


def wide_functions(source: str, limit: int = 6) -> list[str]:
    """Functions (methods without self/cls) that take more than ``limit`` parameters."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ("self", "cls")]
            if len(names) > limit:
                out.append(f"{node.name}({len(names)})")
    return out


def test_no_trainer_function_takes_more_than_six_parameters():
    """A helper with ten arguments is a run's state passed by hand: it belongs on the run object, or its settings
    in the config section (or small settings object) it reads."""
    sample = "def f(a, b, c, d, e, f, g): pass\nclass C:\n    def m(self, a, b, c, d, e, f): pass"
    assert wide_functions(sample) == ["f(7)"]
    wide = {str(p.relative_to(ROOT)): w for p in (ROOT / "trainer").rglob("*.py")
            if (w := wide_functions(p.read_text()))}
    assert wide == {}

