"""The generated reference pages (docs/gen_ref.py) cover every config key and CLI option; the API's doctests run.

The keys and options are enumerated here independently of the generator (pydantic's `model_fields`, typer's
click command tree), so a key the generator skipped fails the test.
"""

from __future__ import annotations

import doctest
import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import get_args, get_origin

import pytest
import typer.main
from pydantic import BaseModel

import cryptonorm.api
from cryptonorm.cli import app
from cryptonorm.config import Config, TargetConfig
from cryptonorm.config.descriptions import field_comments

ROOT = Path(__file__).resolve().parents[1]


def _gen_ref() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_ref", ROOT / "docs" / "gen_ref.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted keys as written in a file (aliases), nested models included (`a.b`, a list of them `a[].b`)."""
    out = []
    for name, info in model.model_fields.items():
        key = prefix + (info.alias or name)
        out.append(key)
        tp = info.annotation
        for arg in (tp, *get_args(tp)):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                out += _keys(arg, f"{key}[]." if get_origin(tp) is list else f"{key}.")
    return out


def test_every_config_key_is_in_the_config_reference() -> None:
    page = _gen_ref().config_page()
    keys = _keys(Config)
    assert len(keys) > 100  # the whole nested schema, not one section
    missing = [k for k in keys if f"`{k}`" not in page]
    assert not missing, f"config keys missing from docs/reference/config.md: {missing}"
    # every key's row shows its default and, for choices, every allowed value
    row = next(line for line in page.splitlines() if line.startswith("| `model.norm` |"))
    assert '`"layer"`' in row
    for value in ("none", "batch", "batchrenorm", "layer", "group", "instance", "rms", "weight"):
        assert f"`{value}`" in row


def test_every_sweep_file_and_claim_file_key_is_in_the_reference() -> None:
    from cryptonorm.claims.spec import ClaimFile
    from cryptonorm.sweeps.spec import SweepSpec

    page = _gen_ref().config_page()
    sweep_part = page[page.index("# Sweep files"):page.index("# Claim files")]
    claim_part = page[page.index("# Claim files"):]
    assert "`set`" in sweep_part and "`zip`" in sweep_part  # the keys as written, not the field names
    assert "`rule.comparisons[].treatment`" in claim_part and "`rule.change.from`" in claim_part
    missing = [k for k in _keys(SweepSpec) if f"`{k}`" not in sweep_part]
    missing += [k for k in _keys(ClaimFile) if f"`{k}`" not in claim_part]
    assert not missing, missing


def test_config_descriptions_come_from_the_comments_beside_each_field() -> None:
    comments = field_comments(TargetConfig)
    assert comments["horizon"] == "bars ahead"  # a trailing comment
    # a comment block above a field without a trailing comment is that field's
    assert comments["loss"].startswith("auto: bce for direction, qlike for volatility")
    assert "huber otherwise" in comments["loss"] and "bars ahead" not in comments["loss"]
    # comment lines under a trailing comment, before a field with its own trailing comment, continue it
    assert comments["vol_form"].endswith("metrics are always reported on variance and vol")
    assert comments["rv"].startswith("volatility: per-bar realized variance")
    assert comments["rv"].endswith("(features/realized.py)")  # continued after the last field too


def _options(cmd: object, path: str) -> list[tuple[str, str]]:
    out = [(path, opt) for p in getattr(cmd, "params", []) if not getattr(p, "hidden", False) for opt in p.opts]
    for name, sub in getattr(cmd, "commands", {}).items():
        out += _options(sub, f"{path} {name}")
    return out


def test_every_cli_command_and_option_is_in_the_cli_reference() -> None:
    page = _gen_ref().cli_page()
    sections = dict(re.findall(r"^## (cryptonorm[^\n]*)\n(.*?)(?=^## |\Z)", page, flags=re.M | re.S))
    options = _options(typer.main.get_command(app), "cryptonorm")
    assert len(options) > 50
    missing = [(path, opt) for path, opt in options
               if path not in sections or (opt.startswith("-") and f"`{opt}`" not in sections[path])
               or (not opt.startswith("-") and f"`{opt}`" not in sections[path])]
    assert not missing, f"commands/options missing from docs/reference/cli.md: {missing}"
    assert "Override a config key" in sections["cryptonorm train"]  # the help text, not only the name


def test_the_api_page_holds_every_public_name_and_docstring() -> None:
    page = _gen_ref().api_page()
    for name in cryptonorm.__all__:
        if name != "__version__":
            assert f"## cn.{name}" in page
            doc = (getattr(cryptonorm.api, name).__doc__ or "").strip().splitlines()[0]
            assert doc.strip() in page, name


@pytest.mark.slow
def test_the_api_docstring_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The `>>>` examples of cryptonorm.api (the tour trains a 1-epoch MLP on two synthetic months)."""
    monkeypatch.chdir(tmp_path)  # nothing the examples write may land in the checkout
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = doctest.testmod(cryptonorm.api, optionflags=doctest.ELLIPSIS, report=True)
    assert result.attempted >= 10
    assert result.failed == 0


def test_the_readme_is_a_landing_page_whose_links_resolve() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [link.split("#")[0] for link in links if "://" not in link]
    assert len(local) > 20
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"


def test_every_page_in_the_site_nav_exists() -> None:
    """mkdocs build --strict checks this too (make docs, CI); this is the quick check. The reference pages
    are written by docs/gen_ref.py, so they need only be among its pages."""
    nav = re.findall(r":\s*([\w./-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), flags=re.M)
    assert "index.md" in nav and "reference/config.md" in nav
    generated = {f"reference/{name}" for name in _gen_ref().PAGES}
    missing = [page for page in nav if page not in generated and not (ROOT / "docs" / page).exists()]
    assert not missing, missing


def test_the_site_hook_unlinks_only_the_study_plots_that_were_not_copied(tmp_path: Path) -> None:
    """docs/hooks.py: in a study report under results/, a link to a file missing from docs/ becomes text;
    a link that resolves, and every link of a hand-written page, is left for the strict build to check."""
    spec = importlib.util.spec_from_file_location("hooks", ROOT / "docs" / "hooks.py")
    assert spec is not None and spec.loader is not None
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    (tmp_path / "results" / "claims_x" / "plots").mkdir(parents=True)
    (tmp_path / "results" / "claims_x" / "plots" / "a.png").write_bytes(b"png")

    class File:
        def __init__(self, src_uri: str) -> None:
            self.src_uri = src_uri

    class Page:
        def __init__(self, src_uri: str) -> None:
            self.file = File(src_uri)

    text = "![a](plots/a.png) ![b](claim1/plots/b.png) [site](https://example.org/x.png)"
    out = hooks.on_page_markdown(text, Page("results/claims_x/verdicts.md"), {"docs_dir": str(tmp_path)}, None)
    assert "![a](plots/a.png)" in out and "[site](https://example.org/x.png)" in out
    assert "](claim1/plots/b.png)" not in out and "b (`claim1/plots/b.png`: in the study directory" in out
    hand_written = hooks.on_page_markdown(text, Page("guide/claims.md"), {"docs_dir": str(tmp_path)}, None)
    assert hand_written == text


def test_make_docs_builds_strictly_and_shows_the_warnings_it_counts() -> None:
    """mkdocs' --quiet drops warnings before --strict counts them: a broken link would then build fine."""
    recipe = (ROOT / "Makefile").read_text().split("\ndocs:", 1)[1].split("\n\n", 1)[0]
    build = next(line for line in recipe.splitlines() if "mkdocs build" in line and not line.strip().startswith("#"))
    assert "--strict" in build and "--quiet" not in build and " -q" not in build
    assert "gen_ref.py" in recipe.split("mkdocs build")[0]  # the reference pages are written first
    assert "make docs" in (ROOT / ".ci" / "run").read_text()
