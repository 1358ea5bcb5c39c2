"""The experiment config: typed, closed, with every default visible.

One YAML file per experiment. Unknown keys are errors with a "did you mean"; a wrong value names the
dotted key, what was given and what is allowed. `--set dotted.key=value` overrides are applied to the raw
mapping before validation, so they are checked exactly like the file.

Sections: `data.py` (where candles come from), `model.py` (the forecaster; its rules read the norm and
kind tables of `norm_facts.py`), `experiment.py` (the rest and the root `Config`); reading
YAML, `--set` overrides and one-line errors: `loader.py`.
"""

from cryptonorm.config.data import SECRET_KEYS, SECRET_PARTS, DataConfig, SyntheticConfig
from cryptonorm.config.experiment import (
    BacktestConfig,
    Config,
    FeaturesConfig,
    SplitConfig,
    TargetConfig,
    TrainConfig,
    WalkForwardConfig,
)
from cryptonorm.config.loader import (
    apply_overrides,
    build_config,
    dump_yaml,
    format_validation_error,
    load_config,
    moved_keys,
    parse_override,
    read_yaml,
    set_dotted,
)
from cryptonorm.config.model import ModelConfig, check_model
from cryptonorm.config.tabular import TABULAR_FILES, TABULAR_KINDS

__all__ = [
    "SyntheticConfig",
    "DataConfig",
    "SECRET_KEYS",
    "SECRET_PARTS",
    "FeaturesConfig",
    "TargetConfig",
    "SplitConfig",
    "ModelConfig",
    "check_model",
    "TABULAR_FILES",
    "TABULAR_KINDS",
    "TrainConfig",
    "WalkForwardConfig",
    "BacktestConfig",
    "Config",
    "parse_override",
    "apply_overrides",
    "set_dotted",
    "read_yaml",
    "load_config",
    "moved_keys",
    "build_config",
    "format_validation_error",
    "dump_yaml",
]
