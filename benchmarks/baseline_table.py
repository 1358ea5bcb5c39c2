"""The baselines table (docs/results/baselines.md): ridge vs LightGBM vs MLP vs LSTM on real BTC/USDT and
ETH/USDT candles (../shared/data), 1h returns and 4h volatility, beside the forecasting baselines.

Every cell is `cryptonorm run` of a shipped config with `--set` overrides (the command of each is printed in
the table's notes): single chronological split, few epochs (the shared 2-core CPU), networks over several
seeds, LightGBM over the same seeds, ridge once (it is deterministic). Finished cells are kept and reused:
run it again to resume. Prints the markdown and writes it to --md.

    .venv/bin/python benchmarks/baseline_table.py [--out runs/baseline_table] [--seeds 3] [--epochs 3]
        [--md docs/results/baselines.md]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
COINS = ("BTC", "ETH")


@dataclass(frozen=True)
class Cell:
    task: str  # returns_1h | vol_4h
    coin: str
    model: str  # ridge | lightgbm | mlp | lstm
    seed: int
    config: str
    sets: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.task}-{self.coin}-{self.model}-s{self.seed}"

    def command(self, out: Path) -> str:
        sets = " ".join(f"--set {s}" for s in self.sets).replace(str(DATA), "../shared/data")
        return f"cryptonorm run {self.config} {sets} --out {out / self.name}"


def cells(seeds: int, epochs: int, since: str) -> list[Cell]:
    out = []
    for coin in COINS:
        common = (f"data.file={DATA / f'{coin}_USDT-1h.csv.gz'}", f"data.symbol={coin}/USDT", f"data.since={since}",
                  "backtest.walk_forward.enabled=false", f"train.epochs={epochs}", "train.threads=1",
                  "train.device=cpu")
        tab = ("model.norm=none", "model.lags=8", "model.lightgbm.threads=2")
        for model, config, extra in (("ridge", "btc_1h_mlp.yaml", ("model.kind=ridge", *tab)),
                                     ("lightgbm", "btc_1h_mlp.yaml", ("model.kind=lightgbm", *tab)),
                                     ("mlp", "btc_1h_mlp.yaml", ()), ("lstm", "btc_1h_lstm.yaml", ())):
            for seed in range(1 if model == "ridge" else seeds):
                out.append(Cell("returns_1h", coin, model, seed, f"configs/{config}",
                                (*common, *extra, f"seed={seed}")))
        vcommon = (f"data.file={DATA / f'{coin}_USDT-4h.csv.gz'}", f"data.symbol={coin}/USDT",
                   f"train.epochs={max(epochs, 5)}", "train.threads=1", "train.device=cpu")
        vtab = ("model.norm=none", "model.lags=6", "model.lightgbm.threads=2")
        for model, extra in (("ridge", ("model.kind=ridge", *vtab)), ("lightgbm", ("model.kind=lightgbm", *vtab)),
                             ("mlp", ()), ("lstm", ("model.kind=lstm", "model.hidden=[32]"))):
            for seed in range(1 if model == "ridge" else seeds):
                out.append(Cell("vol_4h", coin, model, seed, "configs/btc_4h_vol.yaml",
                                (*vcommon, *extra, f"seed={seed}")))
    return out


def run_cell(cell: Cell, out: Path) -> float:
    """Train and backtest one cell unless it finished before; its wall seconds (0 when reused)."""
    from cryptonorm import pipeline
    from cryptonorm.config import load_config

    run_dir = out / cell.name
    if (run_dir / "run.json").exists() and (run_dir / "backtest" / "metrics.json").exists():
        return 0.0
    t0 = time.time()
    cfg = load_config(ROOT / cell.config, list(cell.sets))
    pipeline.train(cfg, run_dir, force=True)
    pipeline.backtest(run_dir, plot=False)
    return time.time() - t0


def icir(run_dir: Path) -> float:
    """Mean / std of the monthly rank IC of the test forecasts (the information-coefficient ratio)."""
    df = pd.read_csv(run_dir / "forecasts.csv")
    t = df[(df["split"] == "test") & df["forecast"].notna() & df["y"].notna()].copy()
    t["month"] = pd.to_datetime(t["timestamp"], unit="ms").dt.to_period("M")
    ics = [stats.spearmanr(g["forecast"], g["y"])[0] for _, g in t.groupby("month") if len(g) > 20]
    ics = [v for v in ics if np.isfinite(v)]
    return float(np.mean(ics) / np.std(ics, ddof=1)) if len(ics) > 2 else math.nan


def read_cell(cell: Cell, out: Path) -> dict[str, Any]:
    run_dir = out / cell.name
    m = json.loads((run_dir / "metrics.json").read_text())
    bt = json.loads((run_dir / "backtest" / "metrics.json").read_text())
    t = m["test"]
    row: dict[str, Any] = {"task": cell.task, "coin": cell.coin, "model": cell.model, "seed": cell.seed,
                           "sharpe": bt["strategy"]["sharpe"], "bh_sharpe": bt["buy_and_hold"]["sharpe"]}
    if cell.task == "returns_1h":
        row.update(ic=t["ic_pearson"], rank_ic=t["ic_spearman"], icir=icir(run_dir),
                   dir_acc=t["directional_accuracy"], persistence=t.get("persistence", {}),
                   last_sign_sharpe=(bt.get("baselines", {}).get("last_sign") or {}).get("sharpe"))
    else:
        best = m.get("best_baseline") or {}
        row.update(qlike=t["qlike"], rank_ic=t["rank_ic"], mz_r2=t["mz_r2"], best=best.get("name"),
                   dm_best_p=(t.get("dm_vs_best_baseline") or {}).get("qlike", {}).get("p"),
                   dm_best_stat=(t.get("dm_vs_best_baseline") or {}).get("qlike", {}).get("stat"),
                   baselines={k: v for k, v in t["baselines"].items() if "qlike" in v})
    return row


def mean_ci(values: list[float]) -> str:
    """'mean ± half-width of the 95% t-interval over seeds' (just the value for one seed)."""
    v = np.array([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return "-"
    if len(v) == 1:
        return f"{v[0]:.4f}"
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return f"{v.mean():.4f} ± {half:.4f}"


def tables(rows: list[dict[str, Any]]) -> str:
    df = pd.DataFrame(rows)
    parts = []
    for coin in COINS:
        r = df[(df["task"] == "returns_1h") & (df["coin"] == coin)]
        if len(r):
            parts.append(f"\n### {coin}/USDT 1h, next-bar log return (test split)\n")
            parts.append("| model | seeds | IC | rank IC | ICIR (monthly rank IC) | directional accuracy | "
                         "Sharpe after 10 bps |\n|---|---|---|---|---|---|---|")
            for model in ("ridge", "lightgbm", "mlp", "lstm"):
                g = r[r["model"] == model]
                if len(g):
                    parts.append(f"| {model} | {len(g)} | {mean_ci(list(g['ic']))} | {mean_ci(list(g['rank_ic']))} | "
                                 f"{mean_ci(list(g['icir']))} | {mean_ci(list(g['dir_acc']))} | "
                                 f"{mean_ci(list(g['sharpe']))} |")
            first = r.iloc[0]
            p = first["persistence"] or {}
            last = first["last_sign_sharpe"]
            parts.append(f"| persistence (last return; Sharpe: trading its sign) | - | "
                         f"{p.get('ic_pearson', math.nan):.4f} | {p.get('ic_spearman', math.nan):.4f} | - | "
                         f"{p.get('directional_accuracy', math.nan):.4f} | "
                         f"{'-' if last is None else f'{last:.4f}'} |")
            parts.append(f"| buy and hold | - | - | - | - | - | {first['bh_sharpe']:.4f} |")
        v = df[(df["task"] == "vol_4h") & (df["coin"] == coin)]
        if len(v):
            parts.append(f"\n### {coin}/USDT 4h, next-day realized variance (test split)\n")
            parts.append("| model | seeds | QLIKE | rank IC | MZ R² | DM vs best baseline (stat, p) | "
                         "vol-target Sharpe after 10 bps |\n|---|---|---|---|---|---|---|")
            for model in ("ridge", "lightgbm", "mlp", "lstm"):
                g = v[v["model"] == model]
                if len(g):
                    dm = ", ".join(f"{s:+.2f} (p {p:.3f})" for s, p in zip(g["dm_best_stat"], g["dm_best_p"],
                                                                            strict=True) if s is not None)
                    parts.append(f"| {model} | {len(g)} | {mean_ci(list(g['qlike']))} | {mean_ci(list(g['rank_ic']))} "
                                 f"| {mean_ci(list(g['mz_r2']))} | {dm} | {mean_ci(list(g['sharpe']))} |")
            first = v.iloc[0]
            for name, b in first["baselines"].items():
                mark = " **(best on validation)**" if name == first["best"] else ""
                parts.append(f"| baseline {name}{mark} | - | {b['qlike']:.4f} | {b['rank_ic']:.4f} | {b['mz_r2']:.4f} "
                             "| - | - |")
    return "\n".join(parts)


NOTES = "\n<!-- notes below: kept when baseline_table.py rewrites the tables -->\n"
HEADER = """# Baselines on real data: ridge and LightGBM vs the MLP and LSTM vs the forecasting baselines

Made by `benchmarks/baseline_table.py` (commands at the end). This is a small, honest table and not a
leaderboard. Each cell trains once on a single chronological split. The networks get a few epochs and the
configs' own norm (LayerNorm); no norm search was run. Everything ran on a 2-core CPU that seven other jobs
shared at the same time.

- **1h returns**: `configs/btc_1h_mlp.yaml` / `btc_1h_lstm.yaml` on Binance BTC/USDT and ETH/USDT 1h
  candles from 2022-01-01 (`../shared/data`), split 70/15/15 % (test: 5,131 bars, 2025-05-02 to 2025-12-02).
  Walk-forward is off, networks train {epochs} epochs, and ridge and LightGBM see the last 8 bars of
  the 48-bar window. Each trades the sign of its forecast with the config's threshold of 5 bps and 10 bps
  fees per side. Sharpe is annualized and after costs.
- **4h volatility**: `configs/btc_4h_vol.yaml` (next-day mean realized variance, log_var form, QLIKE loss,
  validation 2024, test 2025). Networks train {vol_epochs} epochs; the LSTM has one layer of 32. Ridge and
  LightGBM see the last 6 bars and are fitted on log variance with the log-normal correction. The baselines
  (HAR on logs and on levels, EWMA at 0.94 and fitted, GARCH(1,1)-t, naive) are fitted on the training rows;
  `best` is the strongest on validation QLIKE. DM is Diebold-Mariano on QLIKE against that baseline:
  negative means the model's loss is lower.
- Networks and LightGBM run over {seeds} seeds each; cells show mean ± half-width of the 95% t-interval over
  seeds. Ridge is deterministic and runs once. ICIR is the mean of the monthly rank IC over its standard
  deviation, on the test split.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "baseline_table")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--since", default="2022-01-01")
    ap.add_argument("--md", type=Path, default=None, help="write the tables here too")
    ap.add_argument("--only", default="", help="run only cells whose name contains this")
    a = ap.parse_args()
    order = {"ridge": 0, "lightgbm": 1, "mlp": 2, "lstm": 3}  # the cheap cells first: a cut-short run has them
    todo = sorted((c for c in cells(a.seeds, a.epochs, a.since) if a.only in c.name),
                  key=lambda c: (order[c.model], c.seed, c.task, c.coin))
    rows, secs = [], {}
    for i, c in enumerate(todo, 1):
        secs[c.name] = run_cell(c, a.out)
        print(f"[{i}/{len(todo)}] {c.name}: {secs[c.name]:.0f} s", flush=True)
        rows.append(read_cell(c, a.out))
    md = tables(rows)
    machine = (f"{platform.machine()}, {os.cpu_count()} CPUs visible, Python {platform.python_version()}, "
               f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}")
    cmds = sorted({f"    {c.command(Path('runs/baseline_table'))}" for c in todo if c.seed == 0})
    head = HEADER.format(epochs=a.epochs, vol_epochs=max(a.epochs, 5), seeds=a.seeds)
    text = (head + f"{md}\n\nMachine: {machine}. Wall seconds of the cells run now: {sum(secs.values()):.0f}.\n\n"
            "Commands (seed 0 of each cell; the other seeds change only `--set seed=`):\n\n" + "\n".join(cmds) + "\n")
    print(text)
    if a.md:  # what follows the NOTES marker in an existing file is the reader's commentary: kept
        old = a.md.read_text() if a.md.exists() else ""
        a.md.parent.mkdir(parents=True, exist_ok=True)
        a.md.write_text(text + (NOTES + old.split(NOTES, 1)[1] if NOTES in old else ""))


if __name__ == "__main__":
    main()
