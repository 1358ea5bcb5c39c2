"""Packaging: `cryptonorm init DIR` (the example configs for a pip user), one version, the extras.

The wheel itself (built, installed into a fresh venv outside the checkout, then run) is checked by
.ci/wheel_check.sh, which .ci/run calls after the tests (a build needs the package index for its isolated
build environment, which tests do not reach).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cryptonorm import __version__
from cryptonorm.cli import app
from cryptonorm.pipeline import examples

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
runner = CliRunner()


def _repo_files() -> dict[str, bytes]:
    """The repository's configs/ tree, walked here with os.walk (not through the code under test)."""
    out = {}
    for folder, dirs, files in os.walk(CONFIGS):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
        for name in files:
            if not name.startswith("."):
                path = Path(folder) / name
                out[str(Path("configs") / path.relative_to(CONFIGS))] = path.read_bytes()
    return out


def _tree(dest: Path) -> dict[str, bytes]:
    return {str(p.relative_to(dest)): p.read_bytes() for p in dest.rglob("*") if p.is_file()}


def test_init_copies_every_example_config_and_claim_file(tmp_path: Path) -> None:
    dest = tmp_path / "project"
    res = runner.invoke(app, ["init", str(dest)])
    assert res.exit_code == 0, res.output
    want = _repo_files()
    assert "configs/quickstart.yaml" in want and "configs/studies/claim1_training_speed.yaml" in want
    assert _tree(dest) == want
    assert f"{len(want)} example file(s)" in res.output
    assert "cryptonorm run configs/quickstart.yaml" in res.output
    mode = (dest / "configs" / "quickstart.yaml").stat().st_mode & 0o777
    assert mode & 0o444 == 0o444 & ~_umask()  # readable like any file the user makes


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_init_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    res = runner.invoke(app, ["init", str(tmp_path)])
    assert res.exit_code == 2
    assert res.output.count("\n") == 1 and "is not empty" in res.output and "--force" in res.output
    assert "Error" not in res.output and "Traceback" not in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_init_force_adds_the_missing_files_and_never_replaces_one(tmp_path: Path) -> None:
    assert runner.invoke(app, ["init", str(tmp_path)]).exit_code == 0
    mine = tmp_path / "configs" / "quickstart.yaml"
    mine.write_text("name: my-own\n")
    (tmp_path / "configs" / "sweeps" / "norms.yaml").unlink()
    res = runner.invoke(app, ["init", str(tmp_path), "--force"])
    assert res.exit_code == 0, res.output
    assert mine.read_text() == "name: my-own\n"  # the user's edit survives
    restored = tmp_path / "configs" / "sweeps" / "norms.yaml"
    assert restored.read_bytes() == (CONFIGS / "sweeps" / "norms.yaml").read_bytes()
    assert "1 example file(s)" in res.output
    assert "not replaced" in res.output and "configs/quickstart.yaml" in res.output


def test_init_onto_a_file_is_one_line_and_exit_1(tmp_path: Path) -> None:
    target = tmp_path / "afile"
    target.write_text("x")
    res = runner.invoke(app, ["init", str(target)])
    assert res.exit_code == 1
    assert res.output.strip() == f"error: {target}: it is a file, not a folder; choose a new folder for the project"
    assert target.read_text() == "x"


def test_init_never_overwrites_a_file_that_appears_during_the_copy(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The last-moment check is the link itself: a file created after the exists() check is kept."""
    target = tmp_path / "configs" / "quickstart.yaml"
    real_copy = examples.shutil.copyfile

    def copy_then_race(src: str | Path, dst: str | Path) -> object:
        out = real_copy(src, dst)
        if Path(src).name == "quickstart.yaml" and not target.exists():
            target.write_text("raced in\n")  # another process writes the same name meanwhile
        return out

    monkeypatch.setattr(examples.shutil, "copyfile", copy_then_race)
    result = examples.init_project(tmp_path)
    assert target.read_text() == "raced in\n"
    assert Path("configs/quickstart.yaml") in result.kept
    assert not [p for p in tmp_path.rglob(".*.tmp")]  # no temp file left behind


def test_examples_are_found_in_the_checkout_and_in_an_installed_package(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    assert examples.examples_root() == CONFIGS  # a source checkout: its configs/
    package = tmp_path / "site-packages" / "cryptonorm"
    (package / "resources" / "configs").mkdir(parents=True)
    monkeypatch.setattr(examples, "_PACKAGE", package)
    assert examples.examples_root() == package / "resources" / "configs"
    (package / "resources" / "configs").rmdir()
    with pytest.raises(examples.DataError, match="not installed with this copy"):
        examples.examples_root()


def test_the_version_lives_in_one_place() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "cryptonorm._version.__version__"}
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"cryptonorm {__version__}"
    from cryptonorm._version import __version__ as written

    assert written == __version__


def test_the_extras_and_their_old_names() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for name in ("gbm", "track", "ray", "export", "reports", "docs", "vol", "notebook", "dev"):
        assert extras[name], name
    assert extras["onnx"] == ["cryptonorm[export]"] and extras["html"] == ["cryptonorm[reports]"]
    assert any(req.startswith("mkdocs-material") for req in extras["docs"])
    dev_self = next(r for r in extras["dev"] if r.startswith("cryptonorm["))
    for name in ("gbm", "track", "ray", "export", "reports", "vol", "notebook", "docs"):
        assert name in dev_self  # `pip install -e .[dev]` gets every optional feature to test it



def test_the_missing_plotly_note_names_the_extra_in_full(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Printed through rich, `[reports]` was read as markup and vanished: `pip install 'cryptonorm'`."""
    import cryptonorm.render.html as html
    from cryptonorm.cli.app import report_formats

    monkeypatch.setattr(html, "formats", lambda fmt: ("png",))  # as when plotly is not installed
    assert report_formats(None) == ("png",)
    assert "pip install 'cryptonorm[reports]' (or plotly>=5)" in capsys.readouterr().out

