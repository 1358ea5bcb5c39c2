"""The config is typed and closed: every mistake names the dotted key and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cryptonorm.config import Config, apply_overrides, build_config, dump_yaml, load_config
from cryptonorm.errors import ConfigError

CONFIGS = sorted(Path(__file__).parent.parent.joinpath("configs").rglob("*.yaml"))


def test_defaults_are_complete_and_round_trip() -> None:
    cfg = Config()
    again = build_config(yaml.safe_load(dump_yaml(cfg)))
    assert again == cfg
    assert set(cfg.to_dict()) == {"name", "seed", "data", "features", "target", "split", "model", "train",
                                  "backtest"}


@pytest.mark.parametrize("path", [p for p in CONFIGS if not {"sweeps", "studies"} & set(p.parts)], ids=lambda p: p.name)
def test_shipped_configs_validate(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.name


def test_overrides_are_yaml_parsed_and_validated() -> None:
    cfg = load_config(None, ["model.norm=group", "train.epochs=3", "model.hidden=[32, 16]", "model.groups=8"])
    assert (cfg.model.norm, cfg.train.epochs, cfg.model.hidden, cfg.model.groups) == ("group", 3, [32, 16], 8)
    raw = {"model": {"kind": "lstm"}}
    out = apply_overrides(raw, ["model.norm=batch"])
    assert raw == {"model": {"kind": "lstm"}}  # the input mapping is not mutated
    assert out == {"model": {"kind": "lstm", "norm": "batch"}}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model.nrom=layer"], "unknown key 'model.nrom': did you mean 'model.norm'?"),
        (["modle.norm=layer"], "unknown key 'modle': did you mean 'model'?"),
        (["model.norm=btach"], "model.norm: got 'btach'; allowed: 'none', 'batch'"),
        (["model.norm=group", "model.groups=5"], "model.groups=5 must divide every width"),
        (["model.norm=instance"], "model.norm 'instance' needs a sequence"),
        (["model.norm_placement=cell"], "model.norm_placement 'cell' is for model.kind 'lstm' or 'gru' only"),
        (["model.kind=lstm", "model.norm_placement=cell", "model.norm=group"], "supports model.norm 'layer'"),
        (["features.window=-3"], "features.window"),
        (["split.train=0.9"], "must be at most 1"),
        (["data.since=2024-02-01", "data.until=2024-01-01"], "must be before data.until"),
        (["data.since=yesterday"], "is not an ISO date"),
        (["data.timeframe=1hour"], "data.timeframe: got '1hour'"),
        (["data.symbol=BTCUSDT"], "BASE/QUOTE"),
        (["train.device=gpu"], "allowed: auto, cpu, cuda, cuda:N, mps"),
        (["train.epochs=ten"], "train.epochs"),
        (["target.kind=direction", "target.loss=mse"], "target.loss must be 'bce'"),
        (["data.exchange_options={apiKey: abc}"], "must not be written in a config"),
        (["name=../../etc"], "name: got '../../etc'"),
        (["split.val_start=2024-01-01"], "give both split.val_start and split.test_start"),
    ],
)
def test_bad_values_name_the_key(overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    msg = str(e.value)
    assert expected in msg
    assert "\n" not in msg


def test_malformed_yaml_gives_line_and_column(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("model:\n  norm: [layer\n")
    with pytest.raises(ConfigError, match=r"malformed YAML at line \d+, column \d+"):
        load_config(p)


def test_a_key_given_twice_is_an_error(tmp_path: Path) -> None:
    p = tmp_path / "dup.yaml"
    p.write_text("model:\n  norm: layer\ntrain:\n  epochs: 3\nmodel:\n  kind: lstm\n")
    with pytest.raises(ConfigError, match=r"line 5, column 1: duplicate key 'model'"):
        load_config(p)
    p.write_text("base: &b {epochs: 3}\ntrain:\n  <<: *b\n  epochs: 5\n")  # a merge key may be overridden
    with pytest.raises(ConfigError, match="unknown key 'base'"):
        load_config(p)


@pytest.mark.parametrize("text", ["- a\n- b\n", "42\n", "just a string\n"])
def test_top_level_must_be_mapping(tmp_path: Path, text: str) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(p)


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    p = tmp_path / "evil.yaml"
    p.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_config(p)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    p = tmp_path / "empty.yaml"
    p.write_text("")
    assert load_config(p) == Config()


def test_bad_override_syntax() -> None:
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        load_config(None, ["model.norm"])
    with pytest.raises(ConfigError, match="not a dotted key"):
        load_config(None, ["model..norm=layer"])
