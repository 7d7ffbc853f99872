"""The package layering of ``src/charter`` (docs/architecture.md), enforced from the source text.

Every ``import charter.…`` / ``from charter.… import …`` — at module level *and* inside functions — is an
edge from the importing package to the imported one. Two rules:

* **Layers import downward.** An edge from a package to one in a higher layer is a violation.
* **No reach-ins.** Importing another package's private module (``charter.pkg._mod``) is a violation.

and, following from the first, **no import cycles** between packages (same-layer edges are allowed, so the
cycle test checks them). All three are strict: there is no allow-list (the ratchet lists reached zero on
2026-12-05). ``from charter import access`` counts as an edge to ``charter.access``.

A third rule, at the end of this file: **no function over 80 lines** unless its docstring says why (a sentence
containing "over 80 lines"); ``KNOWN_LONG_FUNCTIONS`` is the same kind of shrinking list.
"""

from __future__ import annotations

import ast
import functools
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "charter"

# Bottom to top; a package may import packages of its own layer or below (same-layer edges are allowed
# when they do not form a cycle, which the cycle test checks separately).
LAYERS: list[set[str]] = [
    {"errors", "plugins", "threads"},
    {"spec", "store", "canaries"},
    {"policy", "identity", "screening", "context", "documents"},
    {"telemetry", "sources", "retrieval", "models", "access"},
    {"runtime", "review", "tools", "_answer_checks"},
    {"pipeline", "agents", "evals", "gate", "mcp"},
    {"cli", "server"},
]


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<root>"


@functools.cache
def _modules() -> frozenset[str]:
    """The top-level packages and modules of ``charter``."""
    return frozenset(
        p.stem if p.suffix == ".py" else p.name
        for p in SRC.iterdir()
        if p.suffix == ".py" or (p / "__init__.py").exists()
    )


@functools.cache
def _imports() -> list[tuple[str, str]]:
    """(importing module, imported module) for every charter-internal import in src/charter."""
    out: list[tuple[str, str]] = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "charter":
                # ``from charter import access``: an edge to each submodule named (root API names are not)
                targets = [f"charter.{a.name}" for a in node.names if a.name in _modules()]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            out.extend((module, t) for t in targets if t.startswith("charter.") or t == "charter")
    return out


def _layer(package: str) -> int | None:
    for i, layer in enumerate(LAYERS):
        if package in layer:
            return i
    return None


def upward_edges(imports: list[tuple[str, str]] | None = None) -> set[tuple[str, str]]:
    edges: set[tuple[str, str]] = set()
    for src, dst in _imports() if imports is None else imports:
        a, b = _package(src), _package(dst)
        if a == b or "<root>" in (a, b):
            continue
        la, lb = _layer(a), _layer(b)
        assert la is not None, f"package {a!r} is in no layer: add it to LAYERS and docs/architecture.md"
        assert lb is not None, f"package {b!r} is in no layer: add it to LAYERS and docs/architecture.md"
        if lb > la:
            edges.add((a, b))
    return edges


def reach_ins(imports: list[tuple[str, str]] | None = None) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for src, dst in _imports() if imports is None else imports:
        a, b = _package(src), _package(dst)
        if a == b:
            continue
        rest = dst.split(".")[2:]
        if any(p.startswith("_") and not p.startswith("__") for p in rest):
            found.add((a, dst))
    return found


def cycles(imports: list[tuple[str, str]] | None = None) -> list[list[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for src, dst in _imports() if imports is None else imports:
        a, b = _package(src), _package(dst)
        if a != b and "<root>" not in (a, b):
            graph[a].add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
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

    for v in sorted(set(graph) | {w for ws in graph.values() for w in ws}):
        if v not in index:
            visit(v)
    return out


# ------------------------------------------------------------------------------------------ the rules
# A violation is fixed in the code, never allowed here: move the function down a layer, expose a public name
# from the owning package (its ``__all__``), or let the package that owns a record apply a lower rule to it.


def test_no_upward_import() -> None:
    found = upward_edges()
    assert not found, "imports from a lower layer to a higher one (docs/architecture.md): " + ", ".join(
        f"{a} -> {b}" for a, b in sorted(found)
    )


def test_no_reach_into_another_package() -> None:
    found = reach_ins()
    assert not found, "imports of another package's private module: " + ", ".join(
        f"{a} imports {b}" for a, b in sorted(found)
    )


def test_no_import_cycle_between_packages() -> None:
    found = cycles()
    assert not found, "packages that import each other (directly or around a loop): " + "; ".join(
        " <-> ".join(c) for c in found
    )


def test_the_rules_see_violations() -> None:
    assert upward_edges([("charter.store._x", "charter.runtime")]) == {("store", "runtime")}
    assert upward_edges([("charter.runtime", "charter.store")]) == set()
    assert reach_ins([("charter.gate._run", "charter.models._budget")]) == {
        ("gate", "charter.models._budget")
    }
    assert reach_ins([("charter.models._gateway", "charter.models._budget")]) == set()
    assert cycles([("charter.pipeline", "charter.gate"), ("charter.gate._run", "charter.pipeline")]) == [
        ["gate", "pipeline"]
    ]
    assert cycles([("charter.pipeline", "charter.gate")]) == []


def test_every_package_is_in_a_layer_and_the_checker_sees_imports() -> None:
    packages = {p.name for p in SRC.iterdir() if (p / "__init__.py").exists()}
    packages |= {p.stem for p in SRC.glob("*.py") if not p.name.startswith("__")}
    layered = set().union(*LAYERS)
    assert packages <= layered, f"not in LAYERS (and docs/architecture.md): {sorted(packages - layered)}"
    # the checker must see function-local imports too (they are how cycles hide), and ``from charter import x``
    seen = {(_package(a), b) for a, b in _imports()}
    assert ("cli", "charter.pipeline") in seen
    assert ("review", "charter.access") in seen


# ---- function length -------------------------------------------------------------------------------------

MAX_FUNCTION_LINES = 80
# A function may stay longer only if its docstring says why, in a sentence containing "over 80 lines"
# (one linear state machine, one table that reads best whole).
LONG_FUNCTION_REASON = "over 80 lines"

# Functions over 80 lines still to split ("path:function"); empty since 2026-12-05 and must stay so — the
# stale-entry test below fails on an entry that is no longer long.
KNOWN_LONG_FUNCTIONS: set[str] = set()


def _long_in(source: str, where: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        if length <= MAX_FUNCTION_LINES:
            continue
        if LONG_FUNCTION_REASON in " ".join((ast.get_docstring(node) or "").split()):
            continue
        out[f"{where}:{node.name}"] = length
    return out


def long_functions() -> dict[str, int]:
    """``"path/in/charter.py:name"`` -> length in lines, for every function over the limit whose docstring
    does not say why it is long."""
    out: dict[str, int] = {}
    for path in sorted(SRC.rglob("*.py")):
        out.update(_long_in(path.read_text(encoding="utf-8"), path.relative_to(SRC).as_posix()))
    return out


def test_no_function_over_80_lines_without_a_reason() -> None:
    new = {k: v for k, v in long_functions().items() if k not in KNOWN_LONG_FUNCTIONS}
    assert not new, (
        f"functions over {MAX_FUNCTION_LINES} lines: split them into helpers, or say why in the docstring "
        f"(a sentence containing {LONG_FUNCTION_REASON!r}): "
        + ", ".join(f"{k} ({v})" for k, v in sorted(new.items()))
    )


def test_split_long_functions_are_removed_from_the_allow_list() -> None:
    stale = KNOWN_LONG_FUNCTIONS - set(long_functions())
    assert not stale, f"these functions are short now: delete them from KNOWN_LONG_FUNCTIONS: {sorted(stale)}"


def test_the_length_check_sees_long_functions_and_reasons() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    assert _long_in(f"def f():\n{body}\n", "m.py") == {"m.py:f": MAX_FUNCTION_LINES + 1}
    assert _long_in(f"def f():\n{body[: body.rindex(chr(10))]}\n", "m.py") == {}
    why = '    """One state machine; it stays over\n    80 lines because splitting it hides the order."""\n'
    assert _long_in(f"def f():\n{why}{body}\n", "m.py") == {}
    nested = "\n".join("    " + line for line in body.splitlines())
    assert _long_in(f"class C:\n    async def g(self):\n{nested}\n", "m.py") == {"m.py:g": 81}
