"""`cryptonorm export`: a finished run's model, with its scaler folded in, as one ONNX file; or the store's
candles (and a swap's funding rates) in freqtrade's layout and format."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cryptonorm import __version__
from cryptonorm.config import Config
from cryptonorm.config.tabular import BOOSTER_FILE, MODEL_FILE, TABULAR_KINDS
from cryptonorm.errors import ConfigError, Hint


@dataclass(frozen=True)
class ExportSummary:
    """What `export_onnx` wrote: the file, and the input it expects (window x features, raw values)."""

    path: Path
    window: int
    features: list[str]
    target: str


def export_onnx(run_dir: Path, out: Path) -> ExportSummary:
    """Export RUN_DIR's model as ONNX to `out`: input `features` (B, W, F) float32 raw feature values in
    the order of `features`, output `forecast` (B,). Refuses (ConfigError, nothing written) a path that
    is not a run directory, an unfinished run, or an output that is not a .onnx file."""
    from cryptonorm.learn import checkpoints
    from cryptonorm.learn.export import export_onnx as write_onnx
    from cryptonorm.pipeline.rundir import MODEL, RUN_JSON, SCALER, RunDir, load_run_config

    run_dir, out = Path(run_dir), Path(out)
    if out.suffix.lower() != ".onnx":
        raise ConfigError(f"--onnx {out}: give a file name ending in .onnx")
    if out.is_dir():
        raise ConfigError(f"--onnx {out} is a directory; give a file name ending in .onnx")
    cfg = load_run_config(run_dir)  # ConfigError when it is not a run directory
    if cfg.model.kind in TABULAR_KINDS:
        kept = f"{BOOSTER_FILE} (LightGBM's text model)" if cfg.model.kind == "lightgbm" else \
            f"{MODEL_FILE} (its coefficients)"
        raise ConfigError(f"export --onnx exports a network; {run_dir} is a model.kind {cfg.model.kind} run: its "
                          f"model is {kept}, use that file instead")
    missing = [n for n in (RUN_JSON, MODEL, SCALER) if not (run_dir / n).is_file()]
    if missing:
        raise ConfigError(f"{run_dir} is an unfinished run (no {', '.join(missing)}): its training did not "
                          "complete; train it again with the same {out}, then export", hints=(Hint.OUT,))
    meta = RunDir(run_dir).scaler()
    scaler, names, window = meta["scaler"], [str(n) for n in meta["features"]], int(meta["window"])
    model, _ = checkpoints.load_checkpoint(run_dir / MODEL)
    info = {"cryptonorm": __version__, "run": run_dir.name, "features": json.dumps(names), "window": str(window),
            "target": cfg.target.kind, "horizon": str(cfg.target.horizon), "timeframe": cfg.data.timeframe,
            "symbol": cfg.data.symbols[0], "input": "features: (batch, window, features) float32 raw values",
            "output": "forecast: (batch,) " + ("P(up)" if cfg.target.kind == "direction" else cfg.target.kind),
            "walk_forward": "last fold's model" if cfg.split.walk_forward.enabled else "no"}
    write_onnx(model, scaler["center"], scaler["scale"], scaler.get("clip"), window, out, info)
    return ExportSummary(out, window, names, cfg.target.kind)


def export_freqtrade(cfg: Config, out_dir: Path, fmt: str = "feather") -> list[Path]:
    """Write the candles of every data.symbol (and a swap's funding rates) where and how freqtrade keeps
    them: `out_dir` plays freqtrade's `user_data/data/<exchange>/`. Reads the store (or the config's own
    files: data.file, data.funding_file) exactly as training would; nothing in the store changes. A file
    already there is merged with, never cut (its candles outside the export stay; differing overlaps are
    refused). Returns the files written."""
    from cryptonorm.data import freqtrade
    from cryptonorm.data.funding import interval_ms
    from cryptonorm.data.store import load_candles, load_funding

    if fmt not in freqtrade.FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose one of {', '.join(freqtrade.FORMATS)}")
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ConfigError(f"--freqtrade {out_dir} is a file; give a folder (freqtrade's user_data/data/<exchange>)")
    swap = cfg.data.market == "swap"
    written = []
    for symbol in cfg.data.symbols:
        one = cfg.model_copy(update={"data": cfg.data.model_copy(update={"symbol": symbol})})
        candles = load_candles(one)
        written.append(freqtrade.write(candles, out_dir, symbol, cfg.data.timeframe, fmt=fmt,
                                       candle_type="futures" if swap else ""))
        rates = load_funding(one)  # None for spot
        if rates is not None and len(rates):  # freqtrade's funding_rate candles: the rate in `open`
            hours = interval_ms(rates["timestamp"].to_numpy()) // 3_600_000
            frame = rates.rename(columns={"rate": "open"}).assign(high=rates["rate"], low=rates["rate"],
                                                                   close=rates["rate"], volume=0.0)
            written.append(freqtrade.write(frame, out_dir, symbol, f"{hours}h", fmt=fmt, candle_type="funding_rate"))
    return written
