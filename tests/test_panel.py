"""One model across a universe: time splits with an embargo, windows inside one coin, the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cryptonorm.cli.app import app
from cryptonorm.config import build_config, load_config
from cryptonorm.data.universe import load_universe
from cryptonorm.features.panel import prepare_panel
from cryptonorm.pipeline.panel import panel_data, split_times

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "configs" / "panel_quickstart.yaml")
runner = CliRunner()


def _cfg(**synthetic: object):  # type: ignore[no-untyped-def]
    raw = {"data": {"exchange": "synthetic", "universe": {"synthetic": {"coins": 6, "days": 40, **synthetic}}},
           "features": {"window": 8, "cross_section": "zscore"}, "target": {"kind": "excess_return"},
           "split": {"train": 0.6, "val": 0.2, "test": 0.2}}
    return build_config(raw)


def test_split_by_time_with_embargo_and_every_coin_in_every_split() -> None:
    cfg = _cfg(listed=0.0, delisted=0.0)
    prep = prepare_panel(load_universe(cfg), cfg)
    tr, va, te = split_times(prep, cfg)
    embargo = prep.horizon + prep.window
    last_tr, first_va = np.flatnonzero(tr)[-1], np.flatnonzero(va)[0]
    last_va, first_te = np.flatnonzero(va)[-1], np.flatnonzero(te)[0]
    assert first_va - last_tr - 1 >= embargo and first_te - last_va - 1 >= embargo
    assert not (tr & va).any() and not (va & te).any()
    for mask in (tr, va, te):
        assert (prep.valid[mask].sum(axis=0) > 0).all()  # a split by time holds every coin


def test_windows_stay_inside_one_coin_and_scaling_sees_training_rows_only() -> None:
    cfg = _cfg(listed=0.5, delisted=0.5, seed=2)
    prep = prepare_panel(load_universe(cfg), cfg)
    data = panel_data(prep, cfg)
    t_n, w = data.n_times, data.window
    for idx in (data.train_idx, data.val_idx, data.test_idx):
        assert ((idx // t_n) == ((idx - w + 1) // t_n)).all()  # first and last row of the window: one coin
        t, c = idx % t_n, idx // t_n
        for k in range(w):  # every row of every window holds that coin's real features (nothing zero-filled)
            assert prep.usable[t - k, c].all()
            assert (data.X[idx - k] == 0).mean() < 0.05
    # the scaler's centre is the training period's mean, not the whole panel's
    tr = split_times(prep, cfg)[0]
    j = prep.feature_names.index("logret_1")
    train_rows = prep.usable & (np.arange(t_n) <= np.flatnonzero(tr)[-1])[:, None]
    assert data.scaler.center[j] == pytest.approx(float(prep.features[:, :, j][train_rows].astype("float64").mean()))


def _panel_run(tmp_path: Path, signal: float, seed: int) -> dict:
    out = tmp_path / f"s{signal}-{seed}"
    res = runner.invoke(app, ["panel", QUICK, "--out", str(out), "--json",
                              "--set", f"data.universe.synthetic.signal={signal}",
                              "--set", f"data.universe.synthetic.seed={seed}", "--set", "train.epochs=2"])
    assert res.exit_code == 0, res.output
    forecasts = pd.read_csv(out / "forecasts.csv")
    assert set(forecasts["symbol"]) <= set(load_config(QUICK).data.symbols) and len(forecasts) > 1000
    return json.loads((out / "metrics.json").read_text())  # type: ignore[no-any-return]


@pytest.mark.slow
def test_planted_cross_sectional_signal_is_found_and_the_null_is_honest(tmp_path: Path) -> None:
    found = _panel_run(tmp_path, 0.2, 0)["model"]["ic"]
    assert found["ic"] > 0 and found["t_nw"] > 3
    for seed in (0, 1):
        null = _panel_run(tmp_path, 0.0, seed)["model"]["ic"]
        assert abs(null["t_nw"]) < 3


def test_by_time_batches_hold_whole_timestamps_in_random_order() -> None:
    import torch

    from cryptonorm.learn.loop import by_time_order

    cfg = build_config({**_cfg().model_dump(mode="json"), "train": {"batching": "by_time", "batch_size": 64}})
    prep = prepare_panel(load_universe(cfg), cfg)
    data = panel_data(prep, cfg)
    assert data.groups is not None and len(data.groups) == len(data.train_idx)
    gen = torch.Generator().manual_seed(0)
    order = by_time_order(torch.as_tensor(data.groups), gen).numpy()
    assert sorted(order.tolist()) == list(range(len(order)))  # a permutation of the training samples
    times = data.train_idx[order] % data.n_times
    # each timestamp's samples are contiguous: the time changes exactly (number of timestamps - 1) times
    assert int((np.diff(times) != 0).sum()) == len(np.unique(times)) - 1
    assert not (np.diff(times) > 0).all()  # and the timestamps are not in calendar order
    again = by_time_order(torch.as_tensor(data.groups), gen).numpy()
    assert not np.array_equal(order, again)  # another order next epoch
    with pytest.raises(Exception, match="train.batching"):
        build_config({"train": {"batching": "by_time"}})


def test_by_time_batchnorm_trains_through_the_cli(tmp_path: Path) -> None:
    res = runner.invoke(app, ["panel", QUICK, "--out", str(tmp_path / "bt"), "--json", "--set", "train.epochs=1",
                              "--set", "train.batching=by_time", "--set", "model.norm=batch",
                              "--set", "data.universe.synthetic.days=40"])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "bt" / "metrics.json").read_text())
    assert m["training"]["stopped"] == "completed"
    one = next(iter(m["model"]["per_coin"].values()))  # each coin's own forecast metrics
    assert one["n"] > 10 and -1 <= one["ic_pearson"] <= 1


def test_portfolio_k_larger_than_the_universe_is_refused_before_training(tmp_path: Path) -> None:
    res = runner.invoke(app, ["panel", QUICK, "--out", str(tmp_path / "k"), "--set", "backtest.portfolio.k=7"])
    assert res.exit_code == 2 and "backtest.portfolio.k = 7" in " ".join(res.output.split())
    assert not (tmp_path / "k").exists()  # refused before anything was trained or written


def test_walk_forward_folds_are_out_of_sample_with_an_embargo(tmp_path: Path) -> None:
    from cryptonorm.pipeline.panel_walkforward import fold_times

    raw = _cfg(listed=0.3, delisted=0.3, seed=5).model_dump(mode="json")
    raw["backtest"] = {"walk_forward": {"enabled": True, "train_bars": 400, "step": 150, "mode": "rolling"}}
    raw["train"] = {"epochs": 1, "threads": 1}
    cfg = build_config(raw)
    prep = prepare_panel(load_universe(cfg), cfg)
    folds = fold_times(prep, cfg)
    embargo = prep.horizon + prep.window
    tests = [np.flatnonzero(te) for _, _, te in folds]
    assert len(folds) >= 3 and all(a[-1] < b[0] for a, b in zip(tests[:-1], tests[1:], strict=True))  # in order
    for train, val, test in folds:
        t0 = np.flatnonzero(test)[0]
        assert np.flatnonzero(val)[-1] < t0 - embargo and np.flatnonzero(train)[-1] < np.flatnonzero(val)[0] - embargo
        assert train.sum() <= 400  # rolling window
    from cryptonorm.pipeline.panel import run_panel

    res = run_panel(cfg, tmp_path / "wf")
    assert len(res.metrics["folds"]) >= 3
    f = pd.read_csv(tmp_path / "wf" / "forecasts.csv")
    first_test = prep.timestamps[tests[0][0]]
    assert f["timestamp"].min() >= first_test  # nothing forecast before the first fold's test block


def test_panel_refuses_a_users_folder_and_replaces_its_own(tmp_path: Path) -> None:
    user = tmp_path / "mine"
    user.mkdir()
    (user / "metrics.json").write_text('{"mine": 1}')
    args = ["--set", "train.epochs=1", "--set", "data.universe.synthetic.days=40"]
    res = runner.invoke(app, ["panel", QUICK, "--out", str(user), *args])
    assert res.exit_code == 2 and "not a cryptonorm run directory" in " ".join(res.output.split())
    assert (user / "metrics.json").read_text() == '{"mine": 1}'  # untouched
    ours = tmp_path / "ours"
    for _ in range(2):  # a second panel run into its own folder replaces its outputs
        res = runner.invoke(app, ["panel", QUICK, "--out", str(ours), *args])
        assert res.exit_code == 0, res.output
    assert "model" in json.loads((ours / "metrics.json").read_text())
