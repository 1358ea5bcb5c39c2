"""Shell completion through typer's public machinery, and no use of typer's private (vendored click) modules."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import cryptonorm

PKG = Path(cryptonorm.__file__).parent


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cryptonorm", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def test_bash_completion_of_commands_and_options() -> None:
    r = _cli([], {"_CRYPTONORM_COMPLETE": "complete_bash", "COMP_WORDS": "cryptonorm ba", "COMP_CWORD": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["backtest"]
    r = _cli([], {"_CRYPTONORM_COMPLETE": "complete_bash", "COMP_WORDS": "cryptonorm train --o", "COMP_CWORD": "2"})
    assert r.stdout.split() == ["--out"]


def test_install_completion_writes_the_script_under_home(tmp_path: Path) -> None:
    # typer detects the shell from the parent processes (none to find under a detached job or some CI
    # runners); with detection off, as in typer's own tests, the shell is the option's value
    r = _cli(["--install-completion", "bash"], {"HOME": str(tmp_path), "SHELL": "/bin/bash",
                                                 "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert r.returncode == 0, r.stderr
    script = tmp_path / ".bash_completions" / "cryptonorm.sh"
    assert "_CRYPTONORM_COMPLETE" in script.read_text()
    assert str(script) in (tmp_path / ".bashrc").read_text()


def test_usage_errors_stay_one_line_with_the_public_api() -> None:
    r = _cli(["train", "--bogus"], {})
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert r.stderr.startswith("error: No such option: --bogus") and "Traceback" not in r.stderr
    r = _cli(["config"], {})  # a bare group prints its help once
    assert r.returncode == 2 and r.stdout.count("Usage: cryptonorm config") == 1


def test_no_module_imports_typer_private_click() -> None:
    offenders = []
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.startswith(("typer._", "click")) for n in names):
                offenders.append(f"{path.relative_to(PKG)}: {names}")
    assert offenders == []
