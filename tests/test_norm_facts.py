"""The one table of norm and kind facts (config/norm_facts.py): the torch side is keyed by the same names and
agrees with each fact, and `config validate` refuses exactly what training and the builders refuse
(issue 23 item 4: `batchrenorm` with batch size 1 used to validate and then fail in fit)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cryptonorm.cli import app
from cryptonorm.config import Config, ModelConfig, TrainConfig, build_config
from cryptonorm.config.model import DEPRECATED_KEYS
from cryptonorm.config.norm_facts import BATCH_NORMS, KINDS, NORMS
from cryptonorm.errors import ConfigError
from cryptonorm.learn.models import BUILDERS, build_model
from cryptonorm.learn.norms import NORM_FACTORIES, uses_batch_statistics
from cryptonorm.learn.training import fit

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "configs" / "quickstart.yaml")


def small(kind: str, norm: str, **extra: object) -> dict[str, object]:
    """A tiny model of `kind` with `norm` (sizes small enough to build fast)."""
    sizes: dict[str, object] = {"mlp": {"hidden": [8]}, "lstm": {"hidden": [8]}, "gru": {"hidden": [8]},
                                "tcn": {"hidden": [8, 8, 8, 8]}, "transformer": {"transformer": {"d_model": 8}},
                                "patchtst": {"patchtst": {"d_model": 8}}}.get(kind, {})  # type: ignore[assignment]
    return {"kind": kind, "norm": norm, "groups": 2, **sizes, **extra}  # type: ignore[dict-item]


def every_combination() -> list[tuple[str, str, str]]:
    out = []
    for kind, facts in KINDS.items():
        if not facts.network:  # ridge, lightgbm: no builder (learn/tabular.py); their norm rule: test_tabular.py
            continue
        for norm in NORMS:
            out.append((kind, norm, "layer"))
            if facts.cell:
                out.append((kind, norm, "cell"))
    return out


def test_the_torch_side_is_keyed_by_the_table_names() -> None:
    assert set(NORM_FACTORIES) == set(NORMS)
    assert set(BUILDERS) == {k for k, f in KINDS.items() if f.network}  # ridge, lightgbm: learn/tabular.py


@pytest.mark.parametrize("norm", list(NORMS))
def test_the_batch_statistics_fact_matches_the_built_modules(norm: str) -> None:
    """NORMS[norm].batch_stats is what the torch modules do: an independent look at the built model."""
    model = build_model(ModelConfig.model_validate(small("lstm", norm)), 3, 8)
    assert uses_batch_statistics(model) == NORMS[norm].batch_stats
    if norm in ("layer", "batch"):
        cell = build_model(ModelConfig.model_validate(small("lstm", norm, norm_placement="cell")), 3, 8)
        assert uses_batch_statistics(cell) == NORMS[norm].batch_stats


@pytest.mark.parametrize(("kind", "norm", "placement"), every_combination())
def test_config_and_builder_refuse_the_same_kind_norm_placement(kind: str, norm: str, placement: str) -> None:
    """The config accepts a combination exactly when the builder builds it; a refusal is the same line."""
    raw = small(kind, norm, norm_placement=placement)
    allowed = norm in KINDS[kind].norms and (placement == "layer" or norm in KINDS[kind].cell_norms)
    if allowed:
        build_model(ModelConfig.model_validate(raw), 3, 32)
        return
    with pytest.raises(ConfigError) as config_err:
        build_config({"model": raw})
    unchecked = ModelConfig.model_construct(**{**ModelConfig().model_dump(), **raw,  # no validation
                                               "tcn": ModelConfig().tcn, "transformer": ModelConfig().transformer,
                                               "patchtst": ModelConfig().patchtst})
    with pytest.raises(ValueError) as build_err:
        build_model(unchecked, 3, 32)
    assert str(build_err.value) in str(config_err.value)
    assert f"model.norm{'_placement' if placement == 'cell' and norm in KINDS[kind].norms else ''}" in str(
        config_err.value)


class Toy:
    """The Dataset fields fit reads."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.X = rng.standard_normal((120, 3)).astype(np.float32)
        self.y = rng.standard_normal(120).astype(np.float32)
        self.window = 4
        ends = np.arange(3, 119)
        self.train_idx, self.val_idx, self.test_idx = ends[:80], ends[85:100], ends[105:]


@pytest.mark.parametrize(("norm", "placement"), [(n, "layer") for n in BATCH_NORMS] + [("batch", "cell")])
def test_validate_refuses_batch_size_one_exactly_as_fit_does(norm: str, placement: str) -> None:
    """Every norm with batch statistics (batchrenorm too, and the BN-LSTM cell) with train.batch_size 1:
    `config validate` exits 2 with the line that fit raises for the same (hand-built) config."""
    model = {"kind": "lstm", "norm": norm, "norm_placement": placement, "hidden": [4]}
    res = CliRunner().invoke(app, ["config", "validate", QUICK, "--set", f"model={model}", "--set",
                                   "train.batch_size=1"])
    assert res.exit_code == 2, res.output
    assert "train.batch_size must be >= 2" in res.output and f"model.norm={norm}" in res.output
    assert "Traceback" not in res.output
    good = build_config({"model": model, "train": {"batch_size": 2, "epochs": 1, "device": "cpu"}})
    bad = good.model_copy(update={"train": TrainConfig.model_construct(**{**good.train.model_dump(),
                                                                          "batch_size": 1})})
    with pytest.raises(ConfigError) as fit_err:
        fit(Toy(), bad)  # type: ignore[arg-type]
    assert str(fit_err.value) in res.output.replace("\n", " ")
    fit(Toy(), good)  # batch size 2 trains


@pytest.mark.parametrize("norm", [n for n in NORMS if not NORMS[n].batch_stats])
def test_batch_size_one_is_fine_without_batch_statistics(norm: str) -> None:
    kind = "lstm"
    cfg = build_config({"model": small(kind, norm), "train": {"batch_size": 1}})
    assert cfg.train.batch_size == 1


def test_window_rules_are_the_same_in_validate_and_fit() -> None:
    with pytest.raises(ConfigError, match="features.window >= 2"):
        build_config({"model": {"kind": "lstm", "norm": "instance"}, "features": {"window": 1}})
    with pytest.raises(ConfigError, match="receptive field"):
        build_config({"model": {"kind": "tcn", "hidden": [8]}, "features": {"window": 32}})
    with pytest.raises(ConfigError, match="model.patchtst.patch_len=40 is longer than features.window=32"):
        build_config({"model": {"kind": "patchtst", "patchtst": {"patch_len": 40}}})
    good = build_config({"model": {"kind": "tcn", "hidden": [4]}, "features": {"window": 5}})  # RF 1+2*2*1 = 5
    toy = Toy()
    toy.window = 6  # the dataset's window wins in fit: the same rule refuses it there
    with pytest.raises(ConfigError, match="receptive field"):
        fit(toy, good)  # type: ignore[arg-type]


def test_each_kind_fills_its_own_defaults_and_keeps_given_values() -> None:
    for kind, facts in KINDS.items():
        m = build_config({"model": {"kind": kind}}).model
        assert m.norm == facts.default_norm
        for key, value in facts.defaults.items():
            assert getattr(m, key) == value
    given = build_config({"model": {"kind": "patchtst", "norm": "layer", "input_norm": "none"}}).model
    assert (given.norm, given.input_norm) == ("layer", "none")
    assert build_config({"model": {"kind": "mlp"}}).model == ModelConfig()  # the old defaults are unchanged


def test_old_flat_keys_resolve_to_the_grouped_config_with_a_note() -> None:
    flat = {"norm": "batchrenorm", "norm_momentum": 0.2, "bn_eval": "recalibrate", "bn_recalibrate_bars": 500,
            "renorm_r_max": 2.0, "renorm_d_max": 1.0, "renorm_warmup_steps": 10, "renorm_r_max_steps": 30,
            "renorm_d_max_steps": 20}
    grouped = {"norm": "batchrenorm", "batch_norm": {"momentum": 0.2, "eval": "recalibrate", "recalibrate_bars": 500},
               "renorm": {"r_max": 2.0, "d_max": 1.0, "warmup_steps": 10, "r_max_steps": 30, "d_max_steps": 20}}
    assert set(flat) - {"norm"} == set(DEPRECATED_KEYS)  # every old key is tried
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = build_config({"model": flat})
    notes = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    assert "model.bn_eval is deprecated: write model.batch_norm.eval (same meaning)" in notes
    assert len(notes) == len(DEPRECATED_KEYS)
    new = build_config({"model": grouped})
    assert old.to_dict() == new.to_dict()
    assert new.model.renorm.r_max == 2.0 and new.model.batch_norm.eval == "recalibrate"
    with pytest.raises(ConfigError, match="model.bn_eval and model.batch_norm.eval are the same setting"):
        build_config({"model": {"norm": "batch", "bn_eval": "batch", "batch_norm": {"eval": "running"}}})


def test_a_config_without_old_keys_gives_no_note() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_config({"model": {"norm": "batch", "batch_norm": {"eval": "batch"}}})


def test_bn_eval_without_batch_statistics_is_refused_naming_the_new_key() -> None:
    with pytest.raises(ConfigError, match="model.batch_norm.eval 'recalibrate' .* model.norm 'layer'"):
        build_config({"model": {"norm": "layer", "batch_norm": {"eval": "recalibrate"}}})


def test_config_layer_stays_free_of_torch() -> None:
    """norm_facts.py and model.py are read by the config, below learn: importing them loads no torch."""
    import subprocess
    import sys

    code = ("import sys; import cryptonorm.config.norm_facts, cryptonorm.config.model; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    assert Config().model.kind == "mlp"
