"""The package's layering: every module imports, and no import cycle exists — counting the
imports inside functions too, which hide cycles from a plain `import` at start-up."""

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "subliminal"


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def targets(module: str, path: Path, known: dict[str, Path], node: ast.AST) -> set[str]:
    """The package's modules an import statement loads (a submodule loads its packages)."""
    names = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            pkg = module.split(".")[: None if path.name == "__init__.py" else -1]
            pkg = pkg[: len(pkg) - node.level + 1]
            base = ".".join(pkg + [base] if base else pkg)
        names = [base] + [f"{base}.{a.name}" for a in node.names]
    explicit = set(names) & set(known)
    implied = {".".join(n.split(".")[:i]) for n in names for i in range(1, n.count(".") + 1)}
    own_parents = {p for p in implied if module.startswith(p + ".")}
    return (explicit | (implied & set(known)) - own_parents) - {module}


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {m: set().union(*(targets(m, p, known, n) for n in ast.walk(ast.parse(p.read_text()))
                             if isinstance(n, (ast.Import, ast.ImportFrom))))
            for m, p in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        work = [(v, iter(sorted(graph[v])))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter[0]
                    counter[0] += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                elif nxt in on:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_even_inside_functions():
    found = cycles(import_graph())
    assert not found, f"import cycles: {found}"


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("name", sorted(m for m in modules() if not m.endswith("__main__")))
def test_every_module_imports(name):
    importlib.import_module(name)
