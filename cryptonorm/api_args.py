"""Argument checks at the notebook API's edge (`cryptonorm.api`): a wrong type is one ConfigError naming the
argument, what it got (in words, never a Python class name) and what it takes, like the CLI's errors,
instead of an AttributeError or TypeError from deep inside."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptonorm.errors import ConfigError


def described(value: Any) -> str:
    """A value in words for a message: 'the number 3', 'a list', 'the text 'x'', ... (no class names)."""
    if value is None:
        return "None"
    if isinstance(value, bool):
        return f"the boolean {value}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the text {value[:60]!r}"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} item(s)"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (set, frozenset)):
        return "a set"
    return "an object of another kind"


def path_arg(value: Any, name: str) -> Path:
    """A file or folder path: str or Path (not empty)."""
    if isinstance(value, Path) or (isinstance(value, str) and value.strip()):
        return Path(value)
    raise ConfigError(f"{name} must be a path (a str or pathlib.Path), got {described(value)}")


def optional_path(value: Any, name: str) -> Path | None:
    return None if value is None else path_arg(value, name)


def config_arg(value: Any, name: str = "cfg", *, optional: bool = False) -> Any:
    """A Config, or the path of a config file (or None when `optional`)."""
    from cryptonorm.config import Config

    if isinstance(value, Config) or (optional and value is None):
        return value
    if isinstance(value, Mapping):
        raise ConfigError(f"{name} must be a Config or the path of a config file, got a mapping; build one with "
                          "cn.load_config(path, overrides={...}) (cn.fetch takes data keys as keywords: "
                          "cn.fetch(exchange='binance', symbol='BTC/USDT'))")
    if isinstance(value, (str, Path)):
        return path_arg(value, name)
    raise ConfigError(f"{name} must be a Config or the path of a config file, got {described(value)}")


def overrides_arg(value: Any, name: str = "overrides") -> Mapping[str, Any]:
    """Dotted-key overrides: a mapping {'train.epochs': 3} (or None)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        hint = " (the CLI's 'key=value' strings become {'key': value} here)" if isinstance(value, (list, tuple)) \
            else ""
        raise ConfigError(f"{name} must be a mapping of dotted keys to values, e.g. {{'train.epochs': 3}}, got "
                          f"{described(value)}{hint}")
    bad = [k for k in value if not isinstance(k, str) or not k.strip()]
    if bad:
        raise ConfigError(f"{name}: keys are dotted names such as 'train.epochs', got {described(bad[0])}")
    return value


def int_arg(value: Any, name: str, minimum: int = 1) -> int:
    """A whole number >= minimum (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be a whole number >= {minimum}, got {described(value)}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def bool_arg(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {described(value)}")
    return value


def choice_arg(value: Any, name: str, allowed: tuple[str, ...], *, optional: bool = False) -> Any:
    if optional and value is None:
        return None
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {described(value)}")
    return value


def frame_arg(value: Any, name: str) -> Any:
    """A pandas DataFrame (or None)."""
    if value is None:
        return None
    import pandas as pd

    if not isinstance(value, pd.DataFrame):
        raise ConfigError(f"{name} must be a pandas DataFrame of candles (timestamp, open, high, low, close, "
                          f"volume), got {described(value)}")
    return value


def run_arg(value: Any, name: str = "run") -> Path:
    """A Run (from cn.train / cn.load_run) or a run directory path."""
    from cryptonorm.api import Run

    if isinstance(value, Run):
        return value.path
    if isinstance(value, (str, Path)):
        return path_arg(value, name)
    raise ConfigError(f"{name} must be a Run (from cn.train or cn.load_run) or a run directory, got "
                      f"{described(value)}")
