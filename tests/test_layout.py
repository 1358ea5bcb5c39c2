"""The layout's promises, checked: module and function sizes (STYLE.md), the import contract, fast --help.

A function may run past 60 lines only with a written reason: a `# long function: ...` comment on the line
right above its `def` (or above its decorators)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cryptonorm"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_over_400_lines() -> None:
    big = {p.relative_to(ROOT).as_posix(): n for p in _modules()
           if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert big == {}, f"modules over {MAX_MODULE_LINES} lines: split them by concept"


def _long_functions(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    out = []
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = (node.end_lineno or node.lineno) - node.lineno + 1
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            reason = lines[first - 2].strip() if first >= 2 else ""
            if n > MAX_FUNCTION_LINES and not reason.startswith("# long function:"):
                out.append(f"{path.relative_to(ROOT).as_posix()}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_no_function_over_60_lines_without_a_reason() -> None:
    long = [f for p in _modules() for f in _long_functions(p)]
    assert long == [], "functions over 60 lines need a split or a '# long function: why' comment above the def"


def test_import_contract_holds() -> None:
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():  # a missing checker must not pass as a kept contract
        pytest.fail("import-linter is not installed, so the import contract is unchecked: pip install -e '.[dev]'")
    r = subprocess.run([str(exe)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:]


def test_no_module_shadows_a_notebook_api_name() -> None:
    """`cn.sweep(...)` is the notebook API; a subpackage `cryptonorm/sweep/` would replace it on
    `cryptonorm` as soon as anything imported it (the import system sets the attribute), and the second
    `cn.sweep(...)` of a notebook would call a module."""
    import pkgutil

    import cryptonorm

    modules = {m.name for m in pkgutil.iter_modules(cryptonorm.__path__)}
    assert modules & set(cryptonorm.__all__) == set()
