"""Interactive HTML reports: display downsampling and the numbers behind the charts (against independent
references), then every page opened from file:// in a real headless Chromium that must see no console
error and no network request, and draw every chart with the expected number of traces.

Without a browser the browser tests skip (one line at the end of the run says how to install it); with
CRYPTONORM_REQUIRE_BROWSER=1 (set by .ci/run) a missing browser fails them instead.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cryptonorm.config import BacktestConfig
from cryptonorm.errors import ConfigError
from cryptonorm.pipeline.integrity import sha256
from cryptonorm.render import html as H
from cryptonorm.render.html_backtest import MAX_TRADE_MARKERS, backtest_page, before_costs_equity, rolling_sharpe
from cryptonorm.render.html_sweep import SweepPage, TableData, sweep_page, t_interval
from cryptonorm.render.html_verdicts import verdicts_page
from cryptonorm.timeframes import bars_per_year
from cryptonorm.trade.backtest import simulate

sys.path.insert(0, str(Path(__file__).parent))
from browser import INSTALL, Browser, Seen, find_chromium  # noqa: E402

from tests.cli_run import cli

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "BTC_USDT-1h.csv.gz"
SKIPPED_NO_BROWSER = f"no headless Chromium + chromedriver found; install them: {INSTALL}"


# ---------------------------------------------------------------- display downsampling and numbers


def test_minmax_downsampling_keeps_every_buckets_extremes_and_the_ends() -> None:
    rng = np.random.default_rng(3)
    y = np.cumsum(rng.normal(size=10_007))
    y[500:900] = np.nan  # an outage: NaN is never chosen over a finite point
    buckets = 50
    idx = H.minmax_indices(y, buckets)
    assert np.all(np.diff(idx) > 0) and idx[0] == 0 and idx[-1] == len(y) - 1
    size = math.ceil(len(y) / buckets)
    kept = set(idx.tolist())
    for start in range(0, len(y), size):  # slow reference, bucket by bucket
        seg = y[start:start + size]
        if np.isfinite(seg).any():
            assert start + int(np.nanargmin(seg)) in kept and start + int(np.nanargmax(seg)) in kept
    assert len(idx) <= 2 * math.ceil(len(y) / size) + 2
    assert np.nanmin(y[idx]) == np.nanmin(y) and np.nanmax(y[idx]) == np.nanmax(y)
    assert np.array_equal(H.minmax_indices(y[:100], buckets), np.arange(100))  # short series: every point


def test_position_shading_marks_a_bucket_when_any_bar_in_it_is_held() -> None:
    flag = np.zeros(1000, dtype=bool)
    flag[[5, 517, 999]] = True
    starts, on = H.bucket_any(flag, buckets=100)
    size = starts[1] - starts[0]
    assert [bool(flag[s:s + size].any()) for s in starts] == on.tolist()
    assert on.sum() == 3


@pytest.fixture(scope="module")
def real_backtest() -> Any:
    """3,000 real BTC/USDT 1h bars (2021, one exchange outage inside), a momentum forecast."""
    if not DATA.exists():
        pytest.skip(f"real data not found at {DATA}")
    df = pd.read_csv(DATA)
    df = df[(df["timestamp"] >= 1_609_459_200_000)].iloc[:3000]  # from 2021-01-01
    close = df["close"].to_numpy("float64")
    fc = np.r_[np.nan, np.diff(np.log(close))]  # the last bar's return as the forecast of the next
    out = np.r_[np.diff(np.log(close)), np.nan]
    return simulate(df["timestamp"].to_numpy("int64"), close, fc, BacktestConfig(), "1h", "return", outcome=out)


def test_before_costs_curve_ends_where_the_backtests_before_costs_return_does(real_backtest: Any) -> None:
    eq = real_backtest.equity
    gross = before_costs_equity(eq["close"].to_numpy(), eq["position"].to_numpy())
    want = 1.0 + real_backtest.metrics["strategy_before_costs"]["total_return"]
    assert gross[-1] == pytest.approx(want, rel=1e-9)
    assert gross[-1] > eq["equity"].iloc[-1]  # costs were paid on real trades


def test_rolling_sharpe_against_a_slow_reference() -> None:
    r = np.random.default_rng(0).normal(0.0005, 0.01, 300)
    got = rolling_sharpe(r, 40, "4h")
    for t in (39, 120, 299):
        w = r[t - 39:t + 1]
        assert got[t] == pytest.approx(w.mean() / w.std(ddof=1) * math.sqrt(bars_per_year("4h")), rel=1e-9)
    assert np.isnan(got[:39]).all()
    assert np.isnan(rolling_sharpe(np.zeros(100), 10, "1h")[20:]).all()  # flat: no spread, no Sharpe


def test_confidence_band_is_scipys_t_interval() -> None:
    v = np.array([0.8, 1.1, 0.95, 1.3, 0.7])
    mean, lo, hi = t_interval(v)
    want = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
    assert (lo, hi) == pytest.approx(want, rel=1e-12) and mean == pytest.approx(v.mean())
    assert t_interval(np.array([2.0])) == (2.0, 2.0, 2.0)  # one seed: no band


def test_formats_and_a_missing_plotly_name_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    assert H.formats("png") == ("png",) and H.formats("both") == ("png", "html") and H.formats("html") == ("html",)
    with pytest.raises(ConfigError, match="png, html, both"):
        H.formats("pdf")
    monkeypatch.setitem(sys.modules, "plotly", None)  # import plotly now raises ImportError
    assert H.formats(None) == ("png",)  # the default falls back to the PNGs
    with pytest.raises(ConfigError, match=r"pip install 'cryptonorm\[reports\]'"):
        H.formats("html")


# ---------------------------------------------------------------- in a real browser


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    found = find_chromium()
    if found is None:
        if os.environ.get("CRYPTONORM_REQUIRE_BROWSER") == "1":
            pytest.fail(f"CRYPTONORM_REQUIRE_BROWSER=1 but {SKIPPED_NO_BROWSER}")
        pytest.skip(SKIPPED_NO_BROWSER)
    b = Browser(*found)
    try:
        yield b
    finally:
        b.close()


def clean(seen: Seen) -> None:
    """No console error, no network request, every chart drawn with the traces it should have."""
    assert seen.errors == [], seen.errors
    assert seen.requests == [], seen.requests
    for c in seen.charts:
        assert c["svg"] >= 1 and c["traces"] == c["expected"] == c["drawn"], c


def by_id(seen: Seen) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in seen.charts}


def test_backtest_page_on_real_bars(browser: Browser, real_backtest: Any, tmp_path: Path) -> None:
    bt = real_backtest
    out = backtest_page(tmp_path / "bt" / "report.html", bt.equity, bt.trades, bt.metrics, title="BTC 1h momentum")
    assert (tmp_path / "bt" / H.PLOTLY_JS).stat().st_size > 1_000_000  # plotly.js beside the page, not a CDN
    seen = browser.open_report(out)
    clean(seen)
    chart = by_id(seen)["backtest"]
    # price + long/short shading + long/short entries + exits; 3 equity curves; 2 drawdowns; Sharpe; 2 forecasts
    assert chart["traces"] == 14 and seen.notices == []
    names = chart["names"]
    last = dict(zip(names, chart["last"], strict=True))
    assert last["strategy"] == pytest.approx(bt.equity["equity"].iloc[-1])
    assert last["buy & hold"] == pytest.approx(bt.equity["bh_equity"].iloc[-1])
    assert last["before costs"] == pytest.approx(1 + bt.metrics["strategy_before_costs"]["total_return"])
    # more trades than markers: the MAX_TRADE_MARKERS of largest |return| are marked, and the title says so
    marked = bt.trades.loc[bt.trades["return"].abs().sort_values(ascending=False).index[:MAX_TRADE_MARKERS]]
    assert len(bt.trades) > MAX_TRADE_MARKERS
    assert chart["points"][names.index("long entry")] == int((marked["side"].astype(str) == "long").sum())
    assert chart["points"][names.index("exit")] == MAX_TRADE_MARKERS
    title = browser.driver.execute_script("return document.getElementById('backtest')._fullLayout.title.text")
    assert f"the {MAX_TRADE_MARKERS:,} trades of largest |return| of {len(bt.trades):,} marked" in title
    # linked x-axes: zooming the drawdown row zooms the price row too
    ranges = browser.driver.execute_script("""
        const gd = document.getElementById('backtest');
        return Plotly.relayout(gd, {'xaxis3.range': ['2021-02-01', '2021-02-10']}).then(
            () => [1, 2, 3, 4, 5].map(i => gd._fullLayout['xaxis' + (i > 1 ? i : '')].range));""")
    assert all(r[0].startswith("2021-02-01") and r[1].startswith("2021-02-10") for r in ranges), ranges
    hover = browser.driver.execute_script("return document.getElementById('backtest')._fullData[0].hovertemplate")
    assert "UTC" in hover
    text = out.read_text()
    assert "Sharpe" in text and "Per year" in text and "http://" not in text and "https://" not in text


def test_a_million_bars_render_downsampled_for_display_only(browser: Browser, tmp_path: Path) -> None:
    n = 1_000_000
    rng = np.random.default_rng(1)
    ts = 1_500_000_000_000 + np.arange(n, dtype="int64") * 60_000
    close = 100 * np.exp(np.cumsum(rng.normal(0, 5e-4, n)))
    bt = simulate(ts, close, rng.normal(0, 1e-3, n), BacktestConfig(fee_bps=0, slippage_bps=0), "1m", "return",
                  forecast_stats=False)
    out = backtest_page(tmp_path / "report.html", bt.equity, bt.trades, bt.metrics, title="1M bars")
    seen = browser.open_report(out, timeout=60)
    clean(seen)
    chart = by_id(seen)["backtest"]
    names = chart["names"]
    assert max(chart["points"]) <= 2 * H.DISPLAY_BUCKETS + 2  # what the browser draws is bounded
    assert chart["last"][names.index("strategy")] == pytest.approx(bt.equity["equity"].iloc[-1])
    got = browser.driver.execute_script(
        "const y = document.getElementById('backtest')._fullData[0].y; return [Math.min(...y), Math.max(...y)]")
    assert got == pytest.approx([close.min(), close.max()])  # every extreme survives the downsampling
    title = browser.driver.execute_script("return document.getElementById('backtest')._fullLayout.title.text")
    assert "display: min/max of 2000 buckets of 1,000,000 bars" in title


def test_a_run_without_a_backtest_says_so(browser: Browser, tmp_path: Path) -> None:
    out = backtest_page(tmp_path / "report.html", None, None, {}, title="run x",
                        reason="the test split has 1 bar")
    seen = browser.open_report(out)
    clean(seen)
    assert seen.charts == [] and seen.notices == ["No backtest to show: the test split has 1 bar."]


def sweep_cells(failed_only: bool = False) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    rows, curves = [], {}
    rng = np.random.default_rng(0)
    for kind in ("mlp", "lstm"):
        for norm in ("none", "layer"):
            for batch in (32, 256):
                for seed in (0, 1, 2):
                    cid = f"{kind}-{norm}-{batch}-{seed}"
                    status = "failed" if failed_only or cid == "lstm-none-256-2" else "ok"
                    rows.append({"cell_id": cid, "model.kind": kind, "model.norm": norm, "train.batch_size": str(batch),
                                 "seed": str(seed), "status": status, "run_dir": f"/sw/cells/{cid}/run",
                                 "error": "TrainingError: loss became NaN" if status == "failed" else None,
                                 "test_mse": rng.uniform(1, 2) if status == "ok" else math.nan,
                                 "bt_sharpe": rng.normal() if status == "ok" else math.nan})
                    if status == "ok":
                        curves[cid] = pd.DataFrame({"epoch": [1, 2, 3], "val_loss": rng.uniform(1, 2, 3)})
    return pd.DataFrame(rows), curves


def page_data(cells: pd.DataFrame, curves: dict[str, pd.DataFrame]) -> SweepPage:
    keys = ["model.kind", "model.norm", "train.batch_size", "seed"]
    summary = TableData("Mean ± std over seeds", ["model.norm", "n", "test_mse", "p t-test", "p Holm"],
                        [["none", "12", "1.5 ± 0.2", "ref", "ref"], ["layer", "12", "1.4 ± 0.2", "0.041", "0.082"]])
    return SweepPage(title="sweep norms", info=["grid: model.norm ∈ {none, layer}"], tables=[summary], cells=cells,
                     grid_keys=keys, group_key="model.norm", panel_key="model.kind",
                     metrics=[("test_mse", "test mse"), ("bt_sharpe", "test-split Sharpe")], curves=curves,
                     batch_key="train.batch_size", loss="test_mse", notes=["1 cell(s) failed"])


def test_sweep_page(browser: Browser, tmp_path: Path) -> None:
    cells, curves = sweep_cells()
    out = sweep_page(tmp_path / "report.html", page_data(cells, curves))
    seen = browser.open_report(out)
    clean(seen)
    charts = by_id(seen)
    # 2 kinds (panels) x 2 norms: a box per norm and panel; curves: cells + mean; batch: band + mean line
    assert charts["box-0"]["traces"] == charts["box-1"]["traces"] == 4
    assert charts["curves"]["traces"] == 8 and charts["batch"]["traces"] == 8
    assert sum(charts["box-0"]["points"]) == 23  # every ok seed is a point (one cell failed)
    hover = browser.driver.execute_script("return document.getElementById('box-0')._fullData[0].text[0]")
    assert "cell mlp-none-32-0" in hover and "model.norm = none" in hover and "/sw/cells/mlp-none-32-0/run" in hover
    text = out.read_text()
    assert "p Holm" in text and "0.082" in text and "TrainingError: loss became NaN" in text


def test_a_sweep_with_failed_cells_only_says_so(browser: Browser, tmp_path: Path) -> None:
    cells, curves = sweep_cells(failed_only=True)
    out = sweep_page(tmp_path / "report.html", page_data(cells, curves))
    seen = browser.open_report(out)
    clean(seen)
    assert seen.charts == []
    assert len(seen.notices) == 1 and "No finished cell to plot: 24 cell(s), 24 failed" in seen.notices[0]


def test_verdicts_page_renders_whatever_keys_exist(browser: Browser, tmp_path: Path) -> None:
    verdicts = [
        {"claim": "C1 layer norm lowers test MSE", "data": "real BTC/USDT 1h", "seeds": [0, 1, 2],
         "numbers": {"mean_diff": -0.012, "n": 3}, "p_corrected": 0.004, "verdict": "supported", "rule": "p < 0.05"},
        {"claim": "C2 batch norm hurts small batches", "p_corrected": 0.31, "verdict": "refuted", "extra": "<b>x</b>"},
        {"claim": "C3 no p-value", "verdict": "inconclusive"},
    ]
    out = verdicts_page(verdicts, tmp_path / "verdicts.html")
    seen = browser.open_report(out)
    clean(seen)
    assert by_id(seen)["pvalues"]["points"] == [2]  # the two claims with a p-value
    text = out.read_text()
    assert "mean_diff: -0.012" in text and "&lt;b&gt;x&lt;/b&gt;" in text and "<b>x</b>" not in text
    assert 'class="verdict-supported"' in text and "0.004" in text
    empty = browser.open_report(verdicts_page([], tmp_path / "empty" / "verdicts.html"))
    clean(empty)
    assert empty.charts == [] and "No verdicts" in empty.notices[0]


# ---------------------------------------------------------------- the real CLI: sweep, report, backtest

BASE = """\
name: tiny
seed: 0
data: {{exchange: synthetic, symbol: BTC/USDT, timeframe: 1h, since: "2022-01-01", until: "2022-03-01",
        dir: {data_dir}, synthetic: {{seed: 7, signal: 0.15}}}}
features: {{window: 8, sma: [10], ema: [12], macd: [], bbands: [], returns: [1, 2, 4]}}
model: {{kind: mlp, norm: layer, hidden: [8], dropout: 0.0}}
train: {{epochs: 1, batch_size: 64, device: cpu, threads: 1}}
"""
SWEEP = "name: tiny\nbase: base.yaml\ngrid:\n  model.norm: [none, layer]\n  seed: [0, 1]\n"
ROOT = Path(__file__).resolve().parents[1]




@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 4-cell sweep (2 norms x 2 seeds, 1 epoch each) through `cryptonorm sweep --format html`."""
    root = tmp_path_factory.mktemp("sweep")
    (root / "base.yaml").write_text(BASE.format(data_dir=root / "candles"))
    (root / "sweep.yaml").write_text(SWEEP)
    code, out, err = cli("sweep", str(root / "sweep.yaml"), "--out", str(root / "sw"), "--format", "html")
    assert code == 0, err
    assert out.strip().splitlines()[-1] == str(root / "sw" / "report.html")  # the report's path, printed
    return root / "sw"


def test_sweep_cli_writes_an_offline_report(browser: Browser, swept: Path) -> None:
    assert (swept / H.PLOTLY_JS).exists() and not (swept / "plots").exists()  # --format html: no PNGs
    cells = sorted((swept / "cells").glob("*/run/backtest"))
    assert len(cells) == 4 and all((c / "equity.png").exists() and not (c / "report.html").exists() for c in cells)
    seen = browser.open_report(swept / "report.html")
    clean(seen)
    charts = by_id(seen)
    assert charts["box-0"]["traces"] == charts["box-1"]["traces"] == 2  # one box per norm, every seed a point
    assert sum(charts["box-0"]["points"]) == 4 and charts["curves"]["traces"] == 4 and "batch" not in charts


def test_report_cli_formats_and_open(swept: Path, tmp_path: Path) -> None:
    import subprocess

    code, out, err = cli("report", str(swept), "--format", "png")
    assert code == 0 and out.strip().splitlines()[-1] == str(swept / "summary.md")
    assert (swept / "plots" / "test_loss_by_norm.png").exists()
    code, out, err = cli("report", str(swept), "--format", "pdf")
    assert code == 2 and err.strip() == "error: --format 'pdf' is not valid; use one of png, html, both"
    opened = tmp_path / "opened.txt"  # a stand-in browser: webbrowser runs $BROWSER with the URL
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BROWSER": f"{sys.executable} -c \"import sys; "
           f"open({str(opened)!r}, 'w').write(sys.argv[1])\" %s"}
    r = subprocess.run([sys.executable, "-m", "cryptonorm", "-q", "report", str(swept), "--open"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == str(swept / "report.html")
    assert opened.read_text() == (swept / "report.html").resolve().as_uri()


def test_backtest_cli_prints_the_report_and_a_run_without_a_backtest_says_so(browser: Browser, swept: Path,
                                                                           tmp_path: Path) -> None:
    import shutil

    run = sorted((swept / "cells").glob("*/run"))[0]
    code, out, err = cli("backtest", str(run), "--format", "both")
    assert code == 0, err
    assert out.strip().splitlines()[-2:] == [str(run / "backtest"), str(run / "backtest" / "report.html")]
    seen = browser.open_report(run / "backtest" / "report.html")
    clean(seen)
    assert by_id(seen)["backtest"]["traces"] == 14
    code, out, _ = cli("backtest", str(run), "--format", "png")
    assert code == 0 and out.strip().splitlines()[-1] == str(run / "backtest" / "equity.png")

    bare = tmp_path / "bare"  # the same run with no test bars left: nothing to backtest
    shutil.copytree(run, bare)
    shutil.rmtree(bare / "backtest")
    f = pd.read_csv(bare / "forecasts.csv")
    f[f["split"] != "test"].to_csv(bare / "forecasts.csv", index=False)
    info = json.loads((bare / "run.json").read_text())  # as if training had written it: record its hash
    info["files"]["forecasts.csv"] = sha256(bare / "forecasts.csv")
    (bare / "run.json").write_text(json.dumps(info))
    code, out, err = cli("backtest", str(bare))
    assert code == 1 and len(err.strip().splitlines()) == 1 and "has 0 bar(s)" in err
    assert f"see {bare / 'backtest' / 'report.html'}" in err
    seen = browser.open_report(bare / "backtest" / "report.html")
    clean(seen)
    assert seen.charts == [] and "No backtest to show: the test split" in seen.notices[0]
