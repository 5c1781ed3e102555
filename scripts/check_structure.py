"""Structure checks of the product packages (proto controller client lab), issue #11:

- no import cycle among their modules, counting every import statement wherever it is (module level,
  inside functions, under `if TYPE_CHECKING:`);
- no module over `MAX_LINES` lines.

    python scripts/check_structure.py            # prints cycles and oversized modules; exit 1 if any
    python scripts/check_structure.py --json

Uses the stdlib `ast` only (the import graph of four packages does not need a dependency).
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

PACKAGES = ("proto", "controller", "client", "lab")
MAX_LINES = 800
ROOT = Path(__file__).resolve().parent.parent


def modules(root: Path = ROOT) -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Product modules `name` imports, anywhere in the file (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, base] if base else pkg)
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in known:          # `from pkg import name`: the module, or its package
                t = t.rpartition(".")[0]
            if t and t != name and t not in PACKAGES:
                found.add(t)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def report(root: Path = ROOT) -> dict[str, list]:
    mods = modules(root)
    known = set(mods)
    graph = {m: imports(m, p, known) for m, p in mods.items()}
    big = sorted(((str(p.relative_to(root)), n) for p in mods.values()
                  if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES), key=lambda x: -x[1])
    return {"cycles": cycles(graph), "oversized": [list(b) for b in big]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--root", type=Path, default=ROOT, help="a checkout of firepath (default: this one)")
    args = ap.parse_args(argv)
    r = report(args.root)
    if args.json:
        print(json.dumps(r, indent=1))
    else:
        for c in r["cycles"]:
            print("import cycle: " + " <-> ".join(c))
        for path, n in r["oversized"]:
            print(f"over {MAX_LINES} lines: {path} ({n})")
        if not r["cycles"] and not r["oversized"]:
            print("no import cycle, no module over", MAX_LINES, "lines")
    return 1 if r["cycles"] or r["oversized"] else 0


if __name__ == "__main__":
    sys.exit(main())
