"""Issue 25's key move: backtest.walk_forward is now split.walk_forward (it changes the training). The old key
is still read, with a one-line note, and both give identical runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cryptonorm.cli import app
from cryptonorm.config import build_config, load_config, moved_keys
from cryptonorm.errors import ConfigError
from cryptonorm.sweeps.spec import config_hash

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "configs" / "quickstart.yaml")
WF = {"enabled": True, "step": 300, "train_bars": 700}


def test_the_old_key_is_read_at_its_new_place_and_the_new_key_wins_where_both_are_given() -> None:
    old = load_config(QUICK, [f"backtest.walk_forward.{k}={v}" for k, v in WF.items()])
    new = load_config(QUICK, [f"split.walk_forward.{k}={v}" for k, v in WF.items()])
    assert old == new and new.split.walk_forward.enabled and new.split.walk_forward.step == 300
    assert "walk_forward" not in new.to_dict()["backtest"]
    both = build_config({"backtest": {"walk_forward": {"step": 720, "train_bars": 50}},
                         "split": {"walk_forward": {"step": 7}}})
    assert (both.split.walk_forward.step, both.split.walk_forward.train_bars) == (7, 50)
    # a dumped config (every default under split) with the old key set on it: the old key's values count
    dumped = load_config(QUICK).to_dict()
    dumped["backtest"]["walk_forward"] = {"enabled": True, "step": 150}
    assert build_config(dumped).split.walk_forward.enabled and build_config(dumped).split.walk_forward.step == 150
    with pytest.raises(ConfigError, match=r"backtest.walk_forward.step = 5 and split.walk_forward.step = 7: the "
                                          r"key moved to split.walk_forward; give it there only"):
        build_config({"backtest": {"walk_forward": {"step": 5}}, "split": {"walk_forward": {"step": 7}}})
    assert moved_keys({"backtest": {"walk_forward": {"step": 5}}}) == [
        "note: backtest.walk_forward is now split.walk_forward (it changes the training, not the backtest); the "
        "old key still works: rename it"]
    assert moved_keys({"split": {"walk_forward": {"step": 5}}}) == []


def test_walk_forward_still_changes_a_sweep_cell_s_training_hash() -> None:
    """A sweep retrains a cell whose walk_forward changed (and only re-backtests one whose backtest changed)."""
    base = config_hash(load_config(QUICK))
    assert config_hash(load_config(QUICK, ["split.walk_forward.step=300"])) != base
    assert config_hash(load_config(QUICK, ["backtest.walk_forward.step=300"])) == \
        config_hash(load_config(QUICK, ["split.walk_forward.step=300"]))
    assert config_hash(load_config(QUICK, ["backtest.fee_bps=3"])) == base


@pytest.mark.slow  # two small walk-forward trainings (~20 s on a loaded 2-core machine)
def test_both_keys_train_identical_runs_and_only_the_old_one_prints_a_note(tmp_path: Path) -> None:
    small = ["--set", "train.epochs=1", "--set", "model.hidden=[8]", "--set", "train.threads=1", "--set",
             "data.since=2022-01-01", "--set", "data.until=2022-03-01", "--set", f"data.dir={tmp_path / 'data'}"]
    runner = CliRunner()
    out = {}
    for section in ("backtest", "split"):
        wf = [a for k, v in WF.items() for a in ("--set", f"{section}.walk_forward.{k}={v}")]
        r = runner.invoke(app, ["-q", "train", QUICK, *small, *wf, "--out", str(tmp_path / section)])
        assert r.exit_code == 0, r.stderr
        notes = [line for line in r.stderr.splitlines() if line.startswith("note: ")]
        assert len(notes) == (1 if section == "backtest" else 0), r.stderr
        out[section] = tmp_path / section
    assert (out["backtest"] / "forecasts.csv").read_bytes() == (out["split"] / "forecasts.csv").read_bytes()
    assert (out["backtest"] / "folds.csv").read_bytes() == (out["split"] / "folds.csv").read_bytes()
    stored = yaml.safe_load((out["backtest"] / "config.yaml").read_text())
    assert stored["split"]["walk_forward"]["enabled"] is True and "walk_forward" not in stored["backtest"]


def test_the_notebook_api_warns_about_the_old_key() -> None:
    import cryptonorm as cn

    with pytest.warns(FutureWarning, match=r"^backtest.walk_forward is now split.walk_forward"):
        cfg = cn.load_config(QUICK, {"backtest.walk_forward.step": 300})
    assert cfg.split.walk_forward.step == 300
