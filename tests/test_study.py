"""`cryptonorm study`: the command end to end on a tiny claim (seconds), resume, the shipped claim files,
and bad claim files refused before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cryptonorm.claims import run as cl
from cryptonorm.claims import spec as claim_spec
from cryptonorm.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]

BASE = """\
name: tiny
seed: 0
data:
  exchange: synthetic
  symbol: BTC/USDT
  timeframe: 1h
  since: "2022-01-01"
  until: "2022-02-01"
  dir: {data_dir}
  synthetic: {{seed: 7, signal: 0.5}}
features:
  window: 8
  sma: [10]
  ema: [12]
  macd: []
  bbands: []
  returns: [1, 2, 4]
model:
  kind: mlp
  norm: none
  hidden: [8]
  dropout: 0.0
train:
  epochs: 2
  batch_size: 64
  device: cpu
  threads: 1
"""

CLAIM = """\
claim:
  id: {id}
  title: BatchNorm lowers the test loss (tiny)
  data: synthetic
rule:
  text: Supported if batch beats none by 2% with Holm p < 0.05.
  metric: {metric}
  claimed: lower
  margin: 0.02
  show: [gap_at_best]
  comparisons:
    - {{key: model.norm, treatment: batch, control: none}}
sweep:
  name: {name}
  base: ../base.yaml
  grid:
    model.norm: [none, batch]
    seed: [0, 1, 2]
quick:
  grid: {{seed: [0, 1]}}
  set: {{train.epochs: 1}}
"""


def write_study(tmp_path: Path, **kw: str) -> Path:
    folder = tmp_path / "studies"
    folder.mkdir(exist_ok=True)
    (tmp_path / "base.yaml").write_text(BASE.format(data_dir=tmp_path / "data"))  # beside: not a claim file
    args = {"id": "1", "metric": "test_mse", "name": "tiny_claim"}
    args.update(kw)
    (folder / "claim.yaml").write_text(CLAIM.format(**args))
    return folder


def test_study_end_to_end_then_resume(tmp_path: Path) -> None:
    folder = write_study(tmp_path)
    out = tmp_path / "out"
    res = runner.invoke(app, ["study", str(folder), "--quick", "--out", str(out)])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / cl.VERDICTS_JSON).read_text())
    assert meta["profile"] == "quick"
    (rec,) = meta["claims"]
    assert rec["id"] == 1 and rec["verdict"] in ("supported", "contradicted", "inconclusive")
    assert rec["data"]["kind"] == "synthetic" and rec["data"]["signal"] == 0.5
    assert rec["seeds"] == ["0", "1"] and rec["cells"]["ok"] == 4
    (comp,) = rec["comparisons"]
    assert comp["n"] == 2 and 0 <= comp["p_holm"] <= 1 and comp["ci_low"] <= comp["effect"] <= comp["ci_high"]
    assert comp["min_p_wilcoxon"] == pytest.approx(0.5)
    assert [g["model.norm"] for g in rec["groups"]] == ["none", "batch"]
    assert all(g["show"]["gap_at_best"] is not None for g in rec["groups"])
    md = (out / cl.VERDICTS_MD).read_text()
    assert "Claim 1: BatchNorm lowers the test loss (tiny)" in md and f"**Verdict: {rec['verdict']}**" in md
    assert "synthetic market, planted signal 0.5" in md and "Holm" in md
    # the verdict sentence names its evidence: the planted-signal market (not real prices) and the seeds
    assert rec["verdict_line"].startswith(f"{rec['verdict']} on the planted-signal synthetic market")
    assert "(not real prices), 2 seeds (0, 1):" in rec["verdict_line"] and "2 seeds (0, 1):" in md
    page = (out / cl.VERDICTS_HTML).read_text()
    assert page.rstrip().endswith("</html>") and "BatchNorm lowers the test loss (tiny)" in page
    assert (out / "plotly.min.js").is_file()
    # one plotly.js for the whole study: the claim's sweep report loads the study's copy, relatively
    assert [p.relative_to(out).as_posix() for p in out.rglob("plotly.min.js")] == ["plotly.min.js"]
    assert '<script src="../plotly.min.js">' in (out / "tiny_claim" / "report.html").read_text()
    assert '<script src="plotly.min.js">' in page
    for p in rec["plots"]:
        assert Path(p).stat().st_size > 0
    assert (out / "tiny_claim" / "summary.md").exists()  # the claim's sweep, rendered like any sweep
    assert not list((out / "tiny_claim" / "cells").glob("*/run/backtest/equity.png"))  # no per-cell plots
    assert list((out / "tiny_claim" / "cells").glob("*/run/backtest/metrics.json"))
    # 1 epoch in the quick profile
    hist = next((out / "tiny_claim" / "cells").glob("*/run/history.csv")).read_text().strip().splitlines()
    assert len(hist) == 2

    # resume: nothing trains again, the verdict is rebuilt from the cells on disk
    stamps = {p: p.stat().st_mtime_ns for p in (out / "tiny_claim" / "cells").glob("*/result.json")}
    res2 = runner.invoke(app, ["study", str(folder), "--quick", "--out", str(out)])
    assert res2.exit_code == 0, res2.output
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert json.loads((out / cl.VERDICTS_JSON).read_text())["claims"][0]["comparisons"][0]["p"] == comp["p"]

    # a killed cell (result.json gone) is the only one that runs again
    victim = next(iter(stamps))
    victim.unlink()
    res3 = runner.invoke(app, ["study", str(folder), "--quick", "--out", str(out)])
    assert res3.exit_code == 0, res3.output
    assert victim.exists()
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items() if p != victim)


def _refused(tmp_path: Path, folder: Path, *needles: str) -> None:
    out = tmp_path / "out"
    res = runner.invoke(app, ["study", str(folder), "--out", str(out)])
    assert res.exit_code == 2, res.output
    for n in needles:
        assert n in res.output, res.output
    assert "Traceback" not in res.output
    assert not (out / "tiny_claim" / "cells").exists()  # nothing ran


def test_metric_the_target_lacks(tmp_path: Path) -> None:
    _refused(tmp_path, write_study(tmp_path, metric="test_auc"), "rule.metric 'test_auc'", "target.kind 'return'")


def test_claim_comparing_different_data(tmp_path: Path) -> None:
    folder = write_study(tmp_path)
    text = (folder / "claim.yaml").read_text().replace("    seed: [0, 1, 2]",
                                                       "    seed: [0, 1, 2]\n    data.synthetic.signal: [0.1, 0.5]")
    (folder / "claim.yaml").write_text(text)
    _refused(tmp_path, folder, "data.synthetic.signal", "same candles")


def test_data_label_must_match_the_data(tmp_path: Path) -> None:
    folder = write_study(tmp_path)
    (folder / "claim.yaml").write_text((folder / "claim.yaml").read_text().replace("data: synthetic", "data: real"))
    _refused(tmp_path, folder, "claim.data says 'real'", "synthetic market")


def test_rule_value_not_in_the_grid(tmp_path: Path) -> None:
    folder = write_study(tmp_path)
    text = (folder / "claim.yaml").read_text().replace("treatment: batch", "treatment: group")
    (folder / "claim.yaml").write_text(text)
    _refused(tmp_path, folder, "rule.comparisons[0].treatment", "'group' is not among model.norm's values")


def test_unknown_key_and_duplicate_ids(tmp_path: Path) -> None:
    folder = write_study(tmp_path)
    (folder / "claim.yaml").write_text((folder / "claim.yaml").read_text().replace("  margin:", "  margn:"))
    _refused(tmp_path, folder, "unknown key 'rule.margn'", "did you mean 'margin'")
    folder = write_study(tmp_path)
    (folder / "claim2.yaml").write_text(CLAIM.format(id="1", metric="test_mse", name="other"))
    _refused(tmp_path, folder, "claim.id 1 is also the id of")


def test_seed_grid_required(tmp_path: Path) -> None:
    """A sweep that names no seeds gets the sweep default (0..4); a single seed is refused."""
    folder = write_study(tmp_path)
    text = (folder / "claim.yaml").read_text().replace("    seed: [0, 1, 2]\n", "")
    text = text.replace("  grid: {seed: [0, 1]}\n", "")
    (folder / "claim.yaml").write_text(text)
    (claim,) = cl.load_study(folder, tmp_path / "out", quick=False)
    assert claim.sweep is not None and sorted({c.config.seed for c in claim.sweep.cells}) == [0, 1, 2, 3, 4]
    (folder / "claim.yaml").write_text(text.replace("  grid:\n", "  seeds: 1\n  grid:\n", 1))
    _refused(tmp_path, folder, "`seed` with at least 2 values")


@pytest.mark.parametrize("quick", [True, False])
def test_shipped_claims_load(tmp_path: Path, quick: bool) -> None:
    """configs/studies/: eight claims, every cell valid, labels true to their data, real data where claimed."""
    claims = cl.load_study(ROOT / "configs" / "studies", tmp_path, quick=quick)
    assert [c.spec.claim.id for c in claims] == list(range(1, 9))
    for c in claims:
        assert c.sweep is not None
        cfg = c.sweep.cells[0].config
        if c.spec.claim.data == "real":
            assert cfg.data.file and Path(cfg.data.file).name.endswith("-4h.csv.gz")
            assert Path(cfg.data.file).exists(), f"{cfg.data.file}: ../shared/data is missing"
        assert len({cell.config.seed for cell in c.sweep.cells}) >= 5
    # claim 5: the remedies ride in one zip block (norm, input norm, BN inference, walk-forward move together)
    five = {tuple(cell.params[k] for k in ("model.norm", "model.input_norm", "model.bn_eval",
                                           "backtest.walk_forward.enabled")) for cell in claims[4].sweep.cells}
    assert {("batch", "none", "running", False), ("none", "revin", "running", False),
            ("none", "dain", "running", False), ("batch", "none", "recalibrate", False),
            ("none", "none", "running", True)} <= five
    # claim 6: the design in both profiles: batch 2 vs 128, every norm, the same samples for every
    # batch size, lr 1e-3 unscaled
    six = claims[5]
    assert six.spec.rule.change is not None and (six.spec.rule.change.start, six.spec.rule.change.to) == (128, 2)
    cfgs = [cell.config for cell in six.sweep.cells]
    assert {c.model.norm for c in cfgs} == {"none", "batch", "layer", "group"}
    assert {2, 128} <= {c.train.batch_size for c in cfgs}
    assert {(c.train.budget, c.train.samples, c.train.scaled_lr) for c in cfgs} == {("samples", 58200, 0.001)}
    if quick:  # the laptop profile: fewer cells; comparisons marked `quick: false` are left out, and named
        assert sum(len(c.sweep.cells) for c in claims if c.sweep) <= 250
        assert claims[4].left_out == ("model.norm=layer vs none",)


def test_data_dir_moves_the_real_candle_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--data-dir / CRYPTONORM_DATA_DIR: the claims' data.file names are looked up in that folder instead."""
    folder = ROOT / "configs" / "studies"
    data = tmp_path / "elsewhere"
    data.mkdir()
    (data / "ETH_USDT-4h.csv.gz").write_bytes(b"")
    five = cl.load_claim(folder / "claim5_nonstationary.yaml", quick=True, data_dir=data)
    assert five.sweep_raw["set"]["data.file"] == str((data / "ETH_USDT-4h.csv.gz").resolve())
    monkeypatch.setenv(claim_spec.DATA_DIR_ENV, str(data))
    assert cl.load_claim(folder / "claim5_nonstationary.yaml").sweep_raw["set"]["data.file"].startswith(str(data))
    assert "data.file" not in (cl.load_claim(folder / "claim6_small_batches.yaml").sweep_raw.get("set") or {})
    res = runner.invoke(app, ["study", str(folder), "--quick", "--out", str(tmp_path / "o"), "--data-dir",
                              str(data)])  # BTC_USDT-4h.csv.gz (claim 8) is not there: refused up front
    assert res.exit_code == 2 and "'BTC_USDT-4h.csv.gz' is not in the data folder" in res.output, res.output
    assert "Traceback" not in res.output and not (tmp_path / "o" / "claim1_training_speed").exists()


def test_study_passes_the_executor_options_to_every_sweep(tmp_path: Path) -> None:
    """--gpus-per-cell reaches the sweep machinery: without a visible GPU it is a usage error, before any cell."""
    folder = write_study(tmp_path)
    res = runner.invoke(app, ["study", str(folder), "--quick", "--out", str(tmp_path / "o"), "--gpus-per-cell", "0.5"],
                        env={"CUDA_VISIBLE_DEVICES": ""})
    assert res.exit_code == 2 and "GPU" in res.output and "Traceback" not in res.output, res.output
    assert not list((tmp_path / "o").glob("tiny_claim/cells/*/result.json"))
