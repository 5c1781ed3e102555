"""Issue #11 structure rules, checked on the tree (scripts/check_structure.py): no import cycle among the
product packages (function-level and TYPE_CHECKING imports included), no module over ~800 lines except the
known offenders below (to be split; a new one fails)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "check_structure", Path(__file__).resolve().parent.parent / "scripts" / "check_structure.py")
assert _spec is not None and _spec.loader is not None
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)

#: modules still over the limit (issue #11): list shrinks as they are split, never grows
KNOWN_OVERSIZED = {"proto/config.py", "proto/messages.py", "lab/fabric.py", "client/ofplan.py"}


def test_no_import_cycle_among_product_packages():
    assert check.report()["cycles"] == []


def test_no_new_module_over_the_size_limit():
    big = {path for path, _ in check.report()["oversized"]}
    assert big <= KNOWN_OVERSIZED, f"new modules over {check.MAX_LINES} lines: {sorted(big - KNOWN_OVERSIZED)}"


def test_the_checker_sees_function_level_and_type_checking_imports(tmp_path):
    for pkg in check.PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "lab" / "a.py").write_text("def f():\n    from lab.b import g\n")
    (tmp_path / "lab" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from lab import a\n")
    (tmp_path / "proto" / "big.py").write_text("x = 1\n" * (check.MAX_LINES + 1))
    r = check.report(tmp_path)
    assert r["cycles"] == [["lab.a", "lab.b"]]
    assert r["oversized"] == [["proto/big.py", check.MAX_LINES + 1]]


_CLEANUP = {"close", "stop", "shutdown", "cleanup", "release"}


def _does_nothing(fn) -> bool:
    import ast

    return all(isinstance(b, ast.Pass) or (isinstance(b, ast.Return) and b.value is None)
               or (isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant)) for b in fn.body)


def test_no_cleanup_method_is_a_no_op():
    """Fresh-user finding: bench_convergence's `Injector.close()` did nothing (and was called as if it
    cleaned up). A close/stop/... that does nothing promises what it does not do: remove it instead.
    Protocol (interface) declarations are exempt."""
    import ast

    root = Path(__file__).resolve().parent.parent
    found = []
    for pkg in (*check.PACKAGES, "bench"):
        for path in sorted((root / pkg).rglob("*.py")):
            for cls in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(cls, ast.ClassDef) or any(
                        getattr(b, "id", getattr(b, "attr", None)) == "Protocol" for b in cls.bases):
                    continue
                found += [f"{path.relative_to(root)}:{fn.lineno} {cls.name}.{fn.name}" for fn in cls.body
                          if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) and fn.name in _CLEANUP
                          and _does_nothing(fn)]
    assert found == []
