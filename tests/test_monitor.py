"""`cryptonorm monitor`: PSI and KS against scipy and slow loops, the BatchNorm drift against a hand
computation from forward hooks, and the alarm on real candles and on a shifted copy of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SHARED_DATA, small_real_config
from scipy import stats
from typer.testing import CliRunner

from cryptonorm.cli import app
from cryptonorm.config import ModelConfig
from cryptonorm.evaluate import drift
from cryptonorm.learn import bn_monitor
from cryptonorm.learn.models import build_model
from cryptonorm.learn.norms import BATCH_STAT_MODULES, StepBatchNorm

runner = CliRunner()


# ---------------------------------------------------------------- PSI and KS


def test_rolling_psi_matches_scipy_entropy_both_ways() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(size=3000)
    x = np.concatenate([rng.normal(size=600), rng.normal(0.7, 2.0, size=600)])
    window = 400
    got = drift.rolling_psi(x, train, window)
    assert np.isnan(got[: window - 1]).all()
    edges = drift.psi_edges(train)
    assert len(edges) == drift.PSI_BINS - 1

    def shares(v: np.ndarray) -> np.ndarray:  # slow loop: bin b holds edges[b-1] <= v < edges[b]
        out = np.zeros(len(edges) + 1)
        for value in v:
            out[sum(1 for e in edges if e <= value)] += 1
        return out / len(v)

    e = shares(train)
    for t in (window - 1, 700, len(x) - 1):
        a = shares(x[t - window + 1: t + 1])
        assert (a > drift.PSI_FLOOR).all()  # no floor in play: scipy's entropy is the same quantity
        want = stats.entropy(a, e) + stats.entropy(e, a)
        assert got[t] == pytest.approx(want, rel=1e-10)
    assert got[-1] > 0.25 > got[window - 1]  # the shifted half is a major shift, the first one is not


def test_rolling_ks_is_exact_on_its_grid_and_brackets_scipy() -> None:
    rng = np.random.default_rng(1)
    train = rng.standard_t(4, size=2000)
    x = np.concatenate([rng.standard_t(4, size=300), 1.5 * rng.standard_t(4, size=300) + 0.3])
    window = 250
    got = drift.rolling_ks(x, train, window)
    grid = np.unique(np.quantile(train, np.linspace(0, 1, drift.KS_GRID)))
    for t in (window - 1, 400, len(x) - 1):
        w = x[t - window + 1: t + 1]
        slow = max(abs(np.mean(w <= g) - np.mean(train <= g)) for g in grid)  # the grid, point by point
        assert got[t] == pytest.approx(slow, abs=1e-12)
        exact = stats.ks_2samp(w, train).statistic
        assert got[t] <= exact + 1e-12
        assert exact <= got[t] + 1.0 / drift.KS_GRID + 1.0 / window + 1e-12


# ---------------------------------------------------------------- BatchNorm drift against forward hooks


def _bn_model(**model: object) -> torch.nn.Module:
    m = ModelConfig.model_validate({"norm": "batch", "hidden": [12, 6], "dropout": 0.0, **model})
    torch.manual_seed(0)
    net = build_model(m, n_features=3, window=8)
    g = torch.Generator().manual_seed(1)
    for mod in net.modules():  # running statistics unlike the data's, so the drift is far from 0
        if isinstance(mod, BATCH_STAT_MODULES):
            rm: torch.Tensor = mod.running_mean  # type: ignore[assignment]
            rv: torch.Tensor = mod.running_var  # type: ignore[assignment]
            rm.copy_(torch.randn(rm.shape, generator=g) * 0.5)
            rv.copy_(torch.rand(rv.shape, generator=g) + 0.5)
    return net.eval()


MODELS = [{"kind": "mlp"}, {"kind": "lstm"}, {"kind": "lstm", "norm_placement": "cell"}, {"kind": "gru"},
          {"kind": "tcn"}, {"kind": "transformer"}, {"kind": "patchtst"}, {"kind": "tsmixer"}]


@pytest.mark.parametrize("model", MODELS, ids=["-".join(map(str, m.values())) for m in MODELS])
def test_layer_drift_matches_a_hand_computation_from_forward_hooks(model: dict[str, object]) -> None:
    net = _bn_model(**model)
    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 3)).astype(np.float32)
    window, n_last = 8, 50
    idx = np.arange(window - 1, len(X))
    fp = bn_monitor.forward_with_sums(net, X, idx, window, lambda o: o, batch_size=64)
    assert len(fp.layers) >= 1
    assert np.allclose(fp.outputs, net(torch.as_tensor(
        np.stack([X[i - window + 1: i + 1] for i in idx]))).detach().numpy().astype(np.float64), atol=1e-5)
    # the hand computation: the last n_last windows in ONE forward pass, each layer's input read by a hook
    last = torch.as_tensor(np.stack([X[i - window + 1: i + 1] for i in idx[-n_last:]]))  # (n_last, W, F)
    mods = [m for m in net.modules() if isinstance(m, BATCH_STAT_MODULES)]
    seen: dict[int, list[torch.Tensor]] = {j: [] for j in range(len(mods))}

    def keep(j: int, mod: torch.nn.Module):  # type: ignore[no-untyped-def]
        def hook(_m: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].double()
            if x.dim() == 3:  # BatchNorm1d of (B, C, T): channels on axis 1
                x = x.transpose(1, 2)
            if isinstance(mod, StepBatchNorm):  # standardize each step with its own statistics
                s = min(int(args[1]), mod.running_mean.shape[0] - 1)
                x = (x - mod.running_mean[s].double()) / torch.sqrt(mod.running_var[s].double() + mod.eps)
            else:
                x = (x - mod.running_mean.double()) / torch.sqrt(mod.running_var.double() + mod.eps)
            seen[j].append(x.reshape(-1, x.shape[-1]))  # rows of C channels
        return hook

    handles = [m.register_forward_pre_hook(keep(j, m)) for j, m in enumerate(mods)]
    with torch.no_grad():
        net(last)
    for h in handles:
        h.remove()
    for j, layer in enumerate(fp.layers):
        z = torch.cat(seen[j])  # (values, C)
        var, mean = torch.var_mean(z, dim=0, correction=0)
        want_shift = float(torch.sqrt((mean ** 2).mean()))
        want_logvar = float(torch.sqrt((torch.log(var) ** 2).mean()))
        shift, logvar = bn_monitor.layer_drift(layer, n_last)
        assert shift[-1] == pytest.approx(want_shift, rel=1e-6)
        assert logvar[-1] == pytest.approx(want_logvar, rel=1e-6)
        assert np.isnan(shift[: n_last - 1]).all() and np.isfinite(shift[n_last - 1:]).all()


# ---------------------------------------------------------------- the command on real candles


def _slice(tmp: Path, name: str, scale_vol: float = 1.0, scale_price: float = 1.0) -> Path:
    """The run's own candles (BTC 1h, Jan-Apr 2024) as a CSV; optionally a shifted copy: every price p
    becomes scale_price * p0 * (p / p0) ** scale_vol (log moves x scale_vol, the level x scale_price)."""
    df = pd.read_csv(SHARED_DATA / "BTC_USDT-1h.csv.gz")
    ts = pd.to_datetime(df["timestamp"], unit="ms", utc=True)
    df = df[(ts >= "2024-01-01") & (ts < "2024-05-01")].drop(columns=["datetime"]).reset_index(drop=True)
    p0 = float(df["close"].iloc[0])
    for c in ("open", "high", "low", "close"):
        df[c] = scale_price * p0 * (df[c] / p0) ** scale_vol
    path = tmp / name
    df.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def bn_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cryptonorm import pipeline
    from cryptonorm.config import build_config

    out = tmp_path_factory.mktemp("bn") / "run"
    pipeline.train(build_config(small_real_config(**{"model.norm": "batch"})), out)
    return out


def test_the_alarm_rises_on_a_shifted_copy_and_stays_low_on_the_training_data(bn_run: Path, tmp_path: Path) -> None:
    own, shifted = _slice(tmp_path, "own.csv"), _slice(tmp_path, "shifted.csv", scale_vol=3.0, scale_price=10.0)
    frames = {}
    for name, path in (("own", own), ("shifted", shifted)):
        r = runner.invoke(app, ["monitor", str(bn_run), "--data", str(path), "--window", "168", "-o",
                                str(tmp_path / name)])
        assert r.exit_code == 0, r.stderr
        assert "alarm (batchnorm)" in r.stdout
        frames[name] = pd.read_csv(tmp_path / name / "monitor.csv")
        assert (tmp_path / name / "monitor.html").exists()
    a, b = frames["own"], frames["shifted"]
    assert len(a) == len(b) and a["alarm"].notna().sum() > 2000
    assert {"bn_shift", "bn_logvar", "psi_mean", "ks_max", "forecast"} <= set(a.columns)
    # on the shifted copy more than half the bars alarm above the level only 5% of the training data's bars
    # reach (measured: median 2.2 against a 95th percentile of 2.0 and a median of 1.2); the standardized mean
    # shift of the layers and the input PSI rise 3-5x (the log variance part is noisy on the data itself:
    # a calm week has a much smaller variance than the whole training period)
    assert b["alarm"].median() > a["alarm"].quantile(0.95)
    assert b["bn_shift"].median() > 3 * a["bn_shift"].median()
    assert b["psi_mean"].median() > 3 * a["psi_mean"].median()
    # --fail-above between the two: exit 3 on the shifted copy only
    limit = f"{(a['alarm'].iloc[-1] + b['alarm'].iloc[-1]) / 2:.6g}"
    r = runner.invoke(app, ["monitor", str(bn_run), "--data", str(own), "-o", str(tmp_path / "x"), "--fail-above",
                            limit])
    assert r.exit_code == 0, r.stderr
    r = runner.invoke(app, ["monitor", str(bn_run), "--data", str(shifted), "-o", str(tmp_path / "y"),
                            "--fail-above", limit])
    assert r.exit_code == 3 and "above --fail-above" in r.stderr


def test_a_run_without_batchnorm_gets_a_note_and_the_feature_part(small_real_run: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["monitor", str(small_real_run), "--data", str(_slice(tmp_path, "own.csv")), "-o",
                            str(tmp_path / "m")])
    assert r.exit_code == 0, r.stderr
    assert "no BatchNorm" in r.stdout
    df = pd.read_csv(tmp_path / "m" / "monitor.csv")
    assert not any(c.startswith("bn_") for c in df.columns)
    assert np.allclose(df["alarm"], df["psi_mean"], equal_nan=True) and df["alarm"].notna().any()
    # the forecast column is the run's own `predict` on the same file
    from cryptonorm import pipeline

    pred, _ = pipeline.predict(small_real_run, _slice(tmp_path, "own.csv"), tmp_path / "p.csv")
    p = pd.read_csv(pred).dropna(subset=["forecast"])
    assert np.array_equal(p["timestamp"], df["timestamp"])
    assert np.allclose(p["forecast"], df["forecast"], rtol=1e-6, atol=1e-9)


def test_a_tabular_run_gets_the_feature_part(tmp_path: Path) -> None:
    from cryptonorm import pipeline
    from cryptonorm.config import build_config

    raw = small_real_config(model={"kind": "ridge", "norm": "none", "lags": 3, "ridge": {"alpha": 3.0}})
    pipeline.train(build_config(raw), tmp_path / "ridge")
    r = runner.invoke(app, ["monitor", str(tmp_path / "ridge"), "--data", str(_slice(tmp_path, "own.csv")),
                            "-o", str(tmp_path / "m")])
    assert r.exit_code == 0, r.stderr
    df = pd.read_csv(tmp_path / "m" / "monitor.csv")
    assert "no BatchNorm" in r.stdout and df["psi_mean"].notna().sum() > 2000 and df["forecast"].notna().all()


def test_bad_input_is_one_line_and_exit_2(bn_run: Path, tmp_path: Path) -> None:
    four_hour = pd.read_csv(SHARED_DATA / "BTC_USDT-4h.csv.gz").tail(3000).drop(columns=["datetime"])
    four_hour.to_csv(tmp_path / "4h.csv", index=False)
    no_volume = pd.read_csv(_slice(tmp_path, "own.csv")).drop(columns=["volume"])
    no_volume.to_csv(tmp_path / "novol.csv", index=False)
    cases = [
        (["--data", str(tmp_path / "4h.csv")], "1h"),
        (["--data", str(_slice(tmp_path, "own.csv")), "--window", "100000"], "--window"),
        (["--data", str(_slice(tmp_path, "own.csv")), "--window", "1"], "--window"),
        (["--data", str(tmp_path / "novol.csv")], "volume"),
    ]
    for args, names in cases:
        r = runner.invoke(app, ["monitor", str(bn_run), *args, "-o", str(tmp_path / "bad")])
        assert r.exit_code == 2, (args, r.exit_code, r.stderr)
        line = r.stderr.strip()
        assert "\n" not in line and line.startswith("error:") and names in line and "Error" not in line
        assert not (tmp_path / "bad" / "monitor.csv").exists()


def test_a_tampered_model_is_refused_and_nothing_is_written(bn_run: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(bn_run, run)
    blob = bytearray((run / "model.pt").read_bytes())
    blob[-20] ^= 0xFF  # one byte of the weights: it would still load
    (run / "model.pt").write_bytes(bytes(blob))
    r = runner.invoke(app, ["monitor", str(run), "--data", str(_slice(tmp_path, "own.csv")), "-o", str(tmp_path / "m")])
    assert r.exit_code == 1
    line = r.stderr.strip()
    assert "\n" not in line and str(run / "model.pt") in line
    assert not (tmp_path / "m" / "monitor.csv").exists()


def test_a_volatility_run_forecasts_as_predict_does(tmp_path: Path) -> None:
    from cryptonorm import pipeline
    from cryptonorm.config import build_config

    raw = small_real_config(target={"kind": "volatility", "horizon": 6}, **{"model.norm": "batch"})
    pipeline.train(build_config(raw), tmp_path / "vol")
    data = _slice(tmp_path, "own.csv")
    r = runner.invoke(app, ["monitor", str(tmp_path / "vol"), "--data", str(data), "-o", str(tmp_path / "m")])
    assert r.exit_code == 0, r.stderr
    df = pd.read_csv(tmp_path / "m" / "monitor.csv")
    p = pd.read_csv(pipeline.predict(tmp_path / "vol", data, tmp_path / "p.csv")[0]).dropna(subset=["forecast"])
    assert np.array_equal(p["timestamp"], df["timestamp"])
    assert np.allclose(p["forecast"], df["forecast"], rtol=1e-6, atol=1e-12)
