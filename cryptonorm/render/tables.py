"""Terminal rendering with rich: progress bars and the tables the commands print.

With cryptonorm/cli/ and the rest of cryptonorm/render/, the only modules that import rich (ruff's banned-api rule).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from cryptonorm.text import fmt
from cryptonorm.timeframes import format_ms

LINE_EVERY_S = 5.0  # off a terminal: a fetch progress line at most this often per symbol


@contextlib.contextmanager
def progress_bar(unit: str, disable: bool = False) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A download bar fed by fetch's progress dicts (symbol, candles, expected, pages; or a retry message).

    Not on a terminal (a log file, a pipe): a line per symbol every few seconds and at the end instead.
    """
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    lines = not disable and not sys.stderr.isatty()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[pages]} pages"), TimeRemainingColumn(),
                  console=err, disable=disable or lines, transient=True) as bar:
        tasks: dict[str, Any] = {}
        last: dict[str, float] = {}

        def update(info: dict[str, Any]) -> None:
            if "retry" in info:  # a slow or failing exchange: say so rather than sit silent
                if not disable:
                    err.print(f"retrying: {info['retry']}")
                return
            key = info["symbol"]
            if lines:
                now, done = time.monotonic(), info["candles"] >= info["expected"]
                if done or now - last.get(key, 0.0) >= LINE_EVERY_S:
                    last[key] = now
                    err.print(f"{key} {unit}: {info['candles']:,} of ~{info['expected']:,} "
                              f"({info['pages']} pages)")
                return
            if key not in tasks:
                tasks[key] = bar.add_task(f"{key} {unit}", total=info["expected"], pages=0)
            bar.update(tasks[key], completed=info["candles"], total=info["expected"], pages=info["pages"])

        yield update


@contextlib.contextmanager
def epoch_bar(epochs: int, disable: bool = False) -> Iterator[Callable[[dict[str, Any]], None]]:
    """An epoch bar showing train/val loss, fed by training's per-epoch dicts.

    Not on a terminal: one line per epoch (fold, epoch, losses, samples/s, ETA of the fold) instead.
    """
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    lines = not disable and not sys.stderr.isatty()
    with Progress(TextColumn("epoch"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), console=err, disable=disable or lines, transient=True) as bar:
        task = bar.add_task("train", total=epochs, info="")
        spent: list[float] = []

        def update(info: dict[str, Any]) -> None:
            text = (f"train {_loss(info.get('train_loss'))}  val {_loss(info.get('val_loss'))}"
                    f"  {info.get('samples_per_s', 0):,.0f} samples/s")
            if lines:
                epoch, total = int(info.get("epoch", 0)), int(info.get("epochs", epochs))
                spent.append(float(info.get("seconds", 0.0)))
                eta = sum(spent[-5:]) / len(spent[-5:]) * max(total - epoch, 0)
                fold = f"fold {info['fold']} " if "fold" in info else ""
                err.print(f"{fold}epoch {epoch}/{total}  {text}  ETA {_duration(eta)}")
                return
            bar.update(task, total=info.get("epochs", epochs), completed=info.get("epoch", 0), info=text)

        yield update


def _loss(v: Any) -> str:
    return "-" if v is None else f"{float(v):.4g}"


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def fetch_table(summaries: list[Any]) -> Table:
    t = Table(title="candle store")
    for col in ("exchange", "symbol", "tf", "rows", "new", "first", "last", "gaps", "missing bars", "file"):
        t.add_column(col, justify="right" if col in ("rows", "new", "gaps", "missing bars") else "left")
    for s in summaries:
        t.add_row(s.exchange, s.symbol, s.timeframe, f"{s.rows:,}", f"{s.new_rows:,}", format_ms(s.first),
                  format_ms(s.last), str(len(s.gaps)), f"{s.missing_bars:,}", str(s.path))
    return t


def gaps_table(summaries: list[Any]) -> Table:
    t = Table(title="gaps (missing bars, never filled in the store)")
    for col in ("symbol", "last bar before the gap", "missing bars"):
        t.add_column(col)
    for s in summaries:
        for g in s.gaps:
            t.add_row(s.symbol, format_ms(g.after), f"{g.missing:,}")
    return t


def train_table(summary: Any) -> Table:
    m = summary.metrics
    t = Table(title=f"forecast metrics ({m.get('target')}, horizon {m.get('horizon')}; "
                    f"stopped: {summary.stopped}, best epoch {summary.best_epoch}, {summary.seconds:.1f}s on "
                    f"{summary.device})")
    if m.get("target") == "volatility":
        return _vol_table(t, m)
    keys = [k for k in ("mse", "mae", "directional_accuracy", "ic_pearson", "ic_spearman", "accuracy",
                        "log_loss", "auc") if k in m.get("test", m.get("val", {}))]
    t.add_column("split")
    for k in keys:
        t.add_column(k, justify="right")
    for split in ("val", "test"):
        if split not in m:
            continue
        t.add_row(split, *[_cell(m[split].get(k)) for k in keys])
        p = m[split].get("persistence", {})
        t.add_row(f"{split} (persistence)", *[_cell(p.get(k)) for k in keys], style="dim")
    t.caption = f"{m.get('message', '')}\nsamples: {m.get('samples')}; dropped: {m.get('dropped')}"
    return t


VOL_COLUMNS = (("qlike", "g4"), ("mse_var", "g3"), ("mse_vol", "g3"), ("mz_slope", "num"), ("mz_r2", "num3"),
               ("rank_ic", "num3"))


def _vol_table(t: Table, m: dict[str, Any]) -> Table:
    """Variance metrics of the model and every baseline, with Diebold-Mariano p-values against HAR."""
    t.add_column("split")
    for k, _ in VOL_COLUMNS:
        t.add_column(k, justify="right")
    t.add_column("p vs HAR (qlike / mse_var)", justify="right")
    for split in ("val", "test"):
        if split not in m:
            continue
        rows = [(split, m[split], "")] + [(f"{split} ({name})", b, "dim")
                                           for name, b in m[split].get("baselines", {}).items()]
        for label, r, style in rows:
            if "skipped" in r:
                t.add_row(label, r["skipped"], *[""] * len(VOL_COLUMNS), style=style)
                continue
            dm = r.get("dm_vs_har") or {}
            p = (f"{fmt(dm.get('qlike', {}).get('p'), 'p')} / {fmt(dm.get('mse_var', {}).get('p'), 'p')}"
                 if dm else "-")
            t.add_row(label, *[fmt(r.get(k), f) for k, f in VOL_COLUMNS], p, style=style)
    best = m.get("best_baseline") or {}
    strongest = (f"\nstrongest baseline on {best.get('chosen_on')} QLIKE: {best['name']} (DM against it: "
                 "dm_vs_best_baseline in metrics.json)" if best.get("name") else "")
    t.caption = (f"{m.get('message', '')}\nvariances per bar; DM = Diebold-Mariano, HAC (Newey-West) variance, "
                 f"two-sided{strongest}\nsamples: {m.get('samples')}; dropped: {m.get('dropped')}")
    return t


def render_audit(console: Console, result: Any, quiet: bool = False) -> bool:
    """Print the look-ahead audit; True when nothing peeks."""
    leaks = list(getattr(result, "leaks", result) or [])
    if not leaks:
        if not quiet:
            checked = getattr(result, "checked", None)
            console.print(f"look-ahead audit: no feature, scaled input or label changes when the future is cut"
                          f"{f' ({checked})' if checked else ''}")
        return True
    t = Table(title="look-ahead audit: these peek at the future")
    t.add_column("column")
    t.add_column("first affected bar")
    for leak in leaks:
        name = getattr(leak, "name", None) or (leak[0] if isinstance(leak, (tuple, list)) else str(leak))
        first = getattr(leak, "first", None) or (leak[1] if isinstance(leak, (tuple, list)) and len(leak) > 1 else None)
        t.add_row(str(name), format_ms(first) if isinstance(first, (int, float)) else str(first or "-"))
    console.print(t)
    return False


@contextlib.contextmanager
def sweep_bar(disable: bool = False) -> Iterator[Callable[[dict[str, Any]], None]]:
    """Overall progress: cells done / failed, ETA; failures printed as they happen.

    Not on a terminal: one line per finished cell (done/total, failed, its label, ETA) instead of the bar.
    """
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    lines = not disable and not sys.stderr.isatty()
    t0 = time.monotonic()
    with Progress(TextColumn("cells"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[failed]} failed"),
                  TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=err,
                  disable=disable or lines, transient=True) as bar:
        task: list[Any] = []
        todo: list[int] = []

        def update(ev: dict[str, Any]) -> None:
            if ev["event"] == "fetch":
                if not disable:
                    err.print(f"fetching {', '.join(ev['symbols'])} from {ev['exchange']} (once, for every cell)")
            elif ev["event"] == "start":
                if not disable:
                    stale = f", {ev['stale']} stale (other data)" if ev["stale"] else ""
                    err.print(f"{ev['todo']} to run, {ev['skipped']} finished earlier{stale}; data {ev['data_hash']}; "
                              f"{ev['sweep_dir']}")
                task.append(bar.add_task("cells", total=ev["todo"], failed=0))
                todo.append(int(ev["todo"]))
            elif ev["event"] == "cell":
                if ev["status"] != "ok":
                    err.print(f"[red]failed[/red] {ev['label']}: {ev['error']}")
                if lines and todo and ev["done"]:
                    eta = (time.monotonic() - t0) / ev["done"] * max(todo[0] - ev["done"], 0)
                    err.print(f"cell {ev['done']}/{todo[0]} {ev['status']} {ev['label']} ({ev['failed']} failed)  "
                              f"ETA {_duration(eta)}")
                if task:
                    bar.update(task[0], completed=ev["done"], failed=ev["failed"])

        yield update


def simple_table(title: str, header: list[str], rows: list[list[str]]) -> Table:
    t = Table(title=title)
    for i, h in enumerate(header):
        t.add_column(h, justify="left" if i == 0 or h.startswith(("model.", "note")) else "right")
    for r in rows:
        t.add_row(*r)
    return t


def _cell(v: Any, pct: bool = False) -> str:
    """A train-table cell: a signed percentage, or 4 significant digits."""
    return fmt(v, "spct" if pct else "g4")


def grid_tables(result: Any) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of a backtest grid (pipeline.rebacktest.GridResult): Sharpe after costs on the
    validation split (chosen cells starred), then the test split backtested once with each choice."""
    from cryptonorm.render.heatmap import grid_matrix, label

    keys = result.keys
    rows, cols, z = grid_matrix(result.table, keys, "val_sharpe")
    _, _, chosen = grid_matrix(result.table.assign(_c=result.table["chosen"].astype(float)), keys, "_c")
    corner = f"{keys[0]} / {keys[1]}" if len(keys) > 1 else keys[0]
    body = [[r, *(fmt(z[i, j], "num") + (" *" if chosen[i, j] == 1.0 else "") for j in range(len(cols)))]
            for i, r in enumerate(rows)]
    grid = (f"Sharpe after costs, validation split ({result.val['bars']} bars; * = chosen)",
            [corner, *(cols if len(keys) > 1 else ["val Sharpe"])], body)
    sel_header = [*keys, "val Sharpe", "test Sharpe", "test return", "test max DD", "test trades", "test B&H Sharpe"]
    sel_rows = [[*(label(r[k]) for k in keys), fmt(r["val_sharpe"], "num"), fmt(r["test_sharpe"], "num"),
                 fmt(r["test_total_return"], "spct"), fmt(r["test_max_drawdown"], "pct"), fmt(r["test_trades"], "int"),
                 fmt(r["test_bh_sharpe"], "num")] for _, r in result.selected.iterrows()]
    sel = (f"test split ({result.test['bars']} bars), backtested once with the choice made on validation",
           sel_header, sel_rows)
    return [grid, sel]
