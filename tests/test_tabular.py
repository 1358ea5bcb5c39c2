"""model.kind ridge | lightgbm through the real pipeline on real BTC/USDT 1h candles, against independent code:
scikit-learn's Ridge and LogisticRegression on a design matrix built here by a plain loop, LightGBM's own
Booster.predict on the saved text model; determinism, predict, importance.csv, and the one-line refusals."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cryptonorm import pipeline
from cryptonorm.cli import app
from cryptonorm.config import build_config
from cryptonorm.features import dataset, splits
from tests.conftest import small_real_config

runner = CliRunner()
LAGS = 3


def _cfg(kind: str, target: str = "return", **over: Any) -> Any:
    model = {"kind": kind, "norm": "none", "lags": LAGS, "ridge": {"alpha": 3.0},
             "lightgbm": {"n_estimators": 40, "early_stopping_rounds": 10, "num_leaves": 8, "threads": 1}}
    raw = small_real_config(model=model, **over)
    raw["target"] = {"kind": target, "horizon": 1}
    return build_config(raw)


def _train(tmp: Path, cfg: Any, name: str) -> tuple[Path, pd.DataFrame, Any]:
    out = tmp / name
    pipeline.train(cfg, out)
    df = pd.read_csv(out / "forecasts.csv")
    from cryptonorm.data.store import load_candles

    ds = splits.split(dataset.prepare(load_candles(cfg), cfg), cfg)
    return out, df, ds


def _loop_design(X: np.ndarray, rows: np.ndarray, lags: int) -> np.ndarray:
    """One row per sample: the last `lags` bars of the window, oldest first, by a plain loop."""
    return np.array([np.concatenate([X[t - k] for k in range(lags - 1, -1, -1)]) for t in rows], dtype=np.float64)


def _at(df: pd.DataFrame, ds: Any, rows: np.ndarray) -> np.ndarray:
    by_ts = df.set_index("timestamp")["forecast"]
    return by_ts.loc[ds.timestamps[rows]].to_numpy("float64")


def test_ridge_forecasts_equal_sklearn_ridge_on_the_same_design(tmp_path: Path) -> None:
    from sklearn.linear_model import Ridge

    out, df, ds = _train(tmp_path, _cfg("ridge"), "ridge")
    A = _loop_design(ds.X, ds.train_idx, LAGS)
    ref = Ridge(alpha=3.0).fit(A, ds.y[ds.train_idx].astype("float64"))
    for rows in (ds.val_idx, ds.test_idx):
        np.testing.assert_allclose(_at(df, ds, rows), ref.predict(_loop_design(ds.X, rows, LAGS)),
                                   rtol=1e-7, atol=1e-12)
    coef = json.loads((out / "model.json").read_text())
    assert coef["kind"] == "ridge" and len(coef["coef"]) == LAGS * ds.X.shape[1]
    imp = pd.read_csv(out / "importance.csv")
    assert len(imp) == LAGS * ds.X.shape[1] and imp["importance"].sum() == pytest.approx(1.0)
    assert set(imp["lag"]) == set(range(LAGS))
    # predict rebuilds the model from model.json alone: the same test forecasts
    pred, _ = pipeline.predict(out)
    p = pd.read_csv(pred).set_index("timestamp")["forecast"].loc[ds.timestamps[ds.test_idx]].to_numpy()
    np.testing.assert_allclose(p, _at(df, ds, ds.test_idx), rtol=1e-12)
    assert not (out / "model.pt").exists()


def test_direction_ridge_is_sklearn_logistic_regression(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    out, df, ds = _train(tmp_path, _cfg("ridge", "direction"), "logit")
    A = _loop_design(ds.X, ds.train_idx, LAGS)
    ref = LogisticRegression(C=1 / 3.0, tol=1e-12, max_iter=10_000).fit(A, ds.y[ds.train_idx].astype(int))
    want = ref.predict_proba(_loop_design(ds.X, ds.test_idx, LAGS))[:, 1]
    # both solve the same convex problem to their own tolerances (sklearn's lbfgs stops a little earlier)
    np.testing.assert_allclose(_at(df, ds, ds.test_idx), want, atol=1e-5)
    y = ds.y[ds.train_idx].astype("float64")

    def objective(w: np.ndarray, b: float) -> float:  # summed log-loss + alpha / 2 ||w||^2, alpha = 3
        z = A @ w + b
        return float(np.sum(np.logaddexp(0, z) - y * z) + 1.5 * w @ w)

    meta = json.loads((out / "model.json").read_text())
    ours = objective(np.asarray(meta["coef"]), meta["intercept"])
    assert ours <= objective(ref.coef_[0], float(ref.intercept_[0])) + 1e-9


@pytest.mark.parametrize("target", ["return", "direction"])
def test_lightgbm_forecasts_equal_the_saved_boosters_own_predict(tmp_path: Path, target: str) -> None:
    lgb = pytest.importorskip("lightgbm")
    out, df, ds = _train(tmp_path, _cfg("lightgbm", target), "gbm")
    booster = lgb.Booster(model_file=str(out / "model.txt"))
    raw = booster.predict(_loop_design(ds.X, ds.test_idx, LAGS).astype(np.float32))
    meta = json.loads((out / "model.json").read_text())
    want = raw if target == "direction" else raw * meta["y_std"] + meta["y_mean"]  # fitted standardized
    np.testing.assert_allclose(_at(df, ds, ds.test_idx), want, rtol=1e-12, atol=1e-15)
    if target == "direction":
        assert ((want > 0) & (want < 1)).all()
    hist = pd.read_csv(out / "history.csv")
    m = json.loads((out / "metrics.json").read_text())
    assert booster.num_trees() == m["best_epoch"] <= len(hist) <= 40  # only the kept rounds are saved
    imp = pd.read_csv(out / "importance.csv")
    assert {"gain", "split"} <= set(imp.columns) and imp["split"].sum() > 0
    if target == "return":  # the importances are shown in the backtest's report.html
        pytest.importorskip("plotly")
        page = (pipeline.backtest(out, fmt="html")[0] / "report.html").read_text()
        top = imp.sort_values("importance").iloc[-1]
        assert "Feature importance" in page and f"{top['feature']} (lag {int(top['lag'])})" in page


def test_lightgbm_is_deterministic_for_a_seed_and_thread_count(tmp_path: Path) -> None:
    pytest.importorskip("lightgbm")
    cfg = _cfg("lightgbm")
    a, b = tmp_path / "a", tmp_path / "b"
    pipeline.train(cfg, a)
    pipeline.train(cfg, b)
    assert (a / "forecasts.csv").read_bytes() == (b / "forecasts.csv").read_bytes()
    assert (a / "model.txt").read_bytes() == (b / "model.txt").read_bytes()


def test_volatility_ridge_beside_the_strongest_baseline(tmp_path: Path) -> None:
    raw = small_real_config(model={"kind": "ridge", "norm": "none", "lags": 2},
                            data={**small_real_config()["data"], "until": "2024-09-01"})  # type: ignore[dict-item]
    raw["target"] = {"kind": "volatility", "horizon": 4, "vol_form": "vol"}
    out = tmp_path / "vol"
    pipeline.train(build_config(raw), out)
    m = json.loads((out / "metrics.json").read_text())
    df = pd.read_csv(out / "forecasts.csv")
    val = df[(df["split"] == "val") & df["forecast"].notna()]
    np.testing.assert_allclose(val["forecast_var"], val["forecast"] ** 2, rtol=1e-12)  # vol_form vol
    y = val["y_var"].to_numpy()
    scores = {c.removeprefix("baseline_"): float(np.mean(y / val[c] - np.log(y / val[c]) - 1))
              for c in df.columns if c.startswith("baseline_") and val[c].notna().all() and (val[c] > 0).all()}
    assert m["best_baseline"]["name"] == min(scores, key=scores.__getitem__)
    assert m["best_baseline"]["chosen_on"] == "val"
    assert {"har", "har_levels", "ewma", "ewma_fit", "naive"} <= set(m["test"]["baselines"])
    for split in ("val", "test"):
        assert 0 <= m[split]["dm_vs_best_baseline"]["qlike"]["p"] <= 1
        assert "dm_vs_har" in m[split]


def test_walk_forward_refits_a_tabular_model_per_fold(tmp_path: Path) -> None:
    cfg = _cfg("ridge")
    raw = cfg.to_dict()
    raw["backtest"]["walk_forward"] = {"enabled": True, "step": 500, "train_bars": 1200}
    out = tmp_path / "wf"
    pipeline.train(build_config(raw), out)
    folds = pd.read_csv(out / "folds.csv")
    assert len(folds) >= 2 and (folds["best_epoch"] == 1).all()
    df = pd.read_csv(out / "forecasts.csv")
    assert df.loc[df["split"] == "test", "forecast"].notna().sum() == folds["test_samples"].sum()


def _cli(*args: str) -> tuple[int, str]:
    r = runner.invoke(app, list(args))
    return r.exit_code, r.stderr


@pytest.mark.parametrize("sets, words", [
    (["model.kind=ridge", "model.norm=batch"], "model.norm 'batch'"),
    (["model.kind=lightgbm", "model.input_norm=revin"], "model.input_norm 'revin'"),
    (["model.kind=ridge", "model.lags=99"], "model.lags=99"),
    (["model.lags=4"], "model.lags is for model.kind ridge or lightgbm"),
    (["model.kind=ridge", "data.exchange=binance", 'data.universe={"symbols": ["BTC/USDT", "ETH/USDT"]}'],
     "not available on a universe"),
])
def test_bad_tabular_configs_are_one_line_exit_2(tmp_path: Path, sets: list[str], words: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("features: {window: 16}\n")
    code, err = _cli("config", "validate", str(cfg), *[a for s in sets for a in ("--set", s)])
    assert code == 2 and words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_lightgbm_without_the_extra_names_the_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lightgbm", None)  # what an environment without the package looks like
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {kind: lightgbm}\n")
    code, err = _cli("config", "validate", str(cfg))
    assert code == 2 and "pip install 'cryptonorm[gbm]'" in err and len(err.strip().splitlines()) == 1, err


def test_export_onnx_refuses_a_tabular_run_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "r"
    pipeline.train(_cfg("ridge"), out)
    code, err = _cli("export", str(out), "--onnx", str(tmp_path / "m.onnx"))
    assert code == 2 and "model.kind ridge" in err and "model.json" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()
