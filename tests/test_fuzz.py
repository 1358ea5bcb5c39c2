"""Fuzzing the two doors user input comes through: the config loader and the candle-file importer.

Whatever goes in, the answer is a valid object that satisfies its invariants, or the project's own
CryptonormError (one line, the CLI's exit code) -- never a KeyError, ValueError or TypeError from deep inside.
Deterministic (derandomize=True) and bounded, so the file runs in about 20 s.
"""

from __future__ import annotations

import copy
import gzip
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from cryptonorm.config import Config, build_config, dump_yaml, load_config, read_yaml
from cryptonorm.data.candles import COLUMNS, PRICE_COLUMNS
from cryptonorm.data.importers import read_user_file
from cryptonorm.errors import CryptonormError
from cryptonorm.timeframes import timeframe_ms

FUZZ = settings(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for every example (hypothesis and function-scoped tmp_path do not mix)."""
    return tmp_path_factory.mktemp("fuzz")


def _counter() -> Iterator[int]:
    n = 0
    while True:
        n += 1
        yield n


_SEQ = _counter()


def _fresh(folder: Path, name: str) -> Path:
    """A new file path per example, so a file from an earlier example is never read by mistake."""
    d = folder / f"ex{next(_SEQ)}"
    d.mkdir()
    return d / name


# ---------------------------------------------------------------- the config: schema-aware generation


def _leaves(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name, f in model.model_fields.items():
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.append((*prefix, name))  # a whole section replaced by a scalar/list is a case too
            out.extend(_leaves(ann, (*prefix, name)))
        else:
            out.append((*prefix, name))
    return out


LEAVES = _leaves(Config)
DEFAULTS = Config().to_dict()
WORDS = ["none", "batch", "layer", "group", "instance", "rms", "weight", "mlp", "lstm", "cell", "return",
         "direction", "volatility", "huber", "bce", "mse", "auto", "standard", "robust", "minmax", "drop", "ffill",
         "stationary", "all", "cosine", "plateau", "fp32", "bf16", "cpu", "cuda:0", "mps", "rolling", "expanding",
         "fixed", "forecast", "synthetic", "binance", "BTC/USDT", "ETH/BTC", "../x", "1m", "1h", "4h", "1d", "0h",
         "2022-01-01", "2022-02-30", "2021-12-31T23:00", "2024-01-01T00:00:00Z", "", " ", "apiKey", "secret"]


def _default_at(path: tuple[str, ...]) -> Any:
    node: Any = DEFAULTS
    for p in path:
        node = node[p]
    return node


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 300), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(-2.0, 2.0), st.sampled_from(WORDS),
    st.text(max_size=8),
)
keys = st.one_of(st.sampled_from(sorted({p for leaf in LEAVES for p in leaf})), st.text(max_size=6),
                 st.integers(-3, 3), st.booleans(), st.none())
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=3),
                      max_leaves=10)


@st.composite
def raw_configs(draw: st.DrawFn) -> dict[Any, Any]:
    """A raw mapping: known dotted keys set to their default, a near value or anything; plus stray keys."""
    raw: dict[Any, Any] = {}
    for path in draw(st.lists(st.sampled_from(LEAVES), max_size=6)):
        # a copy: a whole-section default (a dict of DEFAULTS) put in raw would otherwise be written into by a
        # later path through that section, changing DEFAULTS and so the strategy between examples
        default = copy.deepcopy(_default_at(path))
        near: st.SearchStrategy[Any]
        if isinstance(default, bool):
            near = st.booleans()
        elif isinstance(default, int):
            near = st.integers(-3, 3 * max(1, default))
        elif isinstance(default, float):
            near = st.floats(-1.0, 3 * max(1.0, default))
        elif isinstance(default, list):
            near = st.lists(st.integers(-2, 64), max_size=4) | st.lists(st.lists(st.integers(-2, 40), max_size=4),
                                                                          max_size=3)
        else:
            near = st.sampled_from(WORDS)
        value = draw(st.one_of(st.just(default), near, values))
        node = raw
        for p in path[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[path[-1]] = value
    raw.update(draw(st.dictionaries(keys, values, max_size=2)))
    return raw


def _check_config(cfg: Config, folder: Path) -> None:
    """A config that validates dumps to YAML and reads back to the same config."""
    text = dump_yaml(cfg)
    p = _fresh(folder, "c.yaml")
    p.write_text(text)
    again = load_config(p)
    assert dump_yaml(again) == text  # text, not ==: exchange_options may hold a NaN
    assert math.isfinite(again.train.lr) and again.features.window >= 1


@settings(FUZZ, max_examples=400)
@given(raw=raw_configs())
@example(raw={"data": {"since": "2022-02-30"}})
@example(raw={"model": {"norm": "group", "groups": 3, "hidden": [8]}})
@example(raw={"data": {"exchange_options": {"options": {"apiKey": "x"}}}})
@example(raw={"train": {"lr": math.inf}})
@example(raw={1: 2, None: {"a": [1]}})
def test_config_mappings_validate_or_fail_with_config_error(scratch: Path, raw: dict[Any, Any]) -> None:
    try:
        cfg = build_config(raw)
    except CryptonormError as e:
        assert e.exit_code == 2 and "\n" not in str(e) and str(e)
        return
    _check_config(cfg, scratch)


dotted = st.one_of(st.sampled_from([".".join(p) for p in LEAVES]), st.text(max_size=10),
                   st.lists(st.sampled_from(["data", "model", "", " ", "a", "norm", "..", "0"]), min_size=1,
                            max_size=4).map(".".join))
yamlish = st.one_of(
    st.sampled_from(["[8, 8]", "{a: 1}", "[", "{", "!!python/object/apply:os.system ['true']", "!!int x",
                     "!!timestamp x", "!!binary ***", "2022-13-45", ".inf", "-.nan", "&a [*a]", "*b", "|", ">",
                     "'", '"', "null", "~", "0x1F", "1e999", "9" * 5000, "[" * 400, "- a\n- b", "a: b: c"]),
    st.text(alphabet=st.sampled_from(list("[]{}:,-!&*'\"|>#%@`.=~ \n\t01aZ/\\")), max_size=20),
    st.text(max_size=12),
)


@settings(FUZZ, max_examples=300)
@given(key=dotted, value=yamlish)
@example(key="data.since", value="2022-02-30")
@example(key="train.epochs", value="!!int x")
@example(key="model.hidden", value="[" * 3000)
def test_override_strings_validate_or_fail_with_config_error(scratch: Path, key: str, value: str) -> None:
    for item in (f"{key}={value}", key, f"{key}=={value}"):
        try:
            cfg = load_config(None, [item])
        except CryptonormError as e:
            assert e.exit_code == 2 and "\n" not in str(e)
            continue
        _check_config(cfg, scratch)


lines = st.one_of(
    st.builds(lambda indent, key, value: f"{' ' * indent}{key}: {value}", st.sampled_from([0, 0, 2, 4, 1, 3]),
              st.sampled_from(sorted({p for leaf in LEAVES for p in leaf}) + ["modle", "x y", "? a", "<<"]), yamlish),
    st.sampled_from(["data:", "model:", "train:", "  synthetic:", "- a", "---", "...", "# comment", "%YAML 1.1",
                     "name: &n a", "seed: *n", "<<: *n", "? [a, b]\n: c"]),
)


@settings(FUZZ, max_examples=250)
@given(text=st.one_of(st.lists(lines, max_size=8).map("\n".join), st.text(max_size=80),
                      st.binary(max_size=60).map(lambda b: b.decode("latin-1"))),
       raw_bytes=st.booleans())
@example(text="data:\n  since: 2020-13-45\n", raw_bytes=False)
@example(text="a: " + "[" * 3000, raw_bytes=False)
@example(text="name: !!python/object/apply:os.system ['true']", raw_bytes=False)
@example(text="\xff\xfe", raw_bytes=True)
def test_yaml_files_validate_or_fail_with_config_error(scratch: Path, text: str, raw_bytes: bool) -> None:
    p = _fresh(scratch, "c.yaml")
    if raw_bytes:
        p.write_bytes(text.encode("latin-1", errors="replace"))
    else:
        p.write_text(text, encoding="utf-8")
    try:
        cfg = load_config(p)
    except CryptonormError as e:
        assert e.exit_code == 2 and "\n" not in str(e)
        return
    _check_config(cfg, scratch)
    assert isinstance(read_yaml(p), dict)


# ---------------------------------------------------------------- the candle importer

HOUR = 3_600_000
T0 = 1_640_995_200_000  # 2022-01-01 in ms


def _loaded_invariants(df: pd.DataFrame, timeframe: str) -> None:
    """What every frame read_user_file returns satisfies (the contract of candles.clean, strict)."""
    assert list(df.columns) == COLUMNS and len(df) >= 1
    assert df["timestamp"].dtype == "int64"
    assert all(df[c].dtype == "float64" for c in COLUMNS[1:])
    ts = df["timestamp"].to_numpy()
    assert (np.diff(ts) > 0).all()  # sorted, no duplicates
    vals = df[COLUMNS[1:]].to_numpy()
    assert np.isfinite(vals).all()
    o, h, low, c = (df[k].to_numpy() for k in PRICE_COLUMNS)
    assert (h >= np.maximum(o, c) - 1e-12 * np.abs(h)).all() and (low <= np.minimum(o, c) + 1e-12 * np.abs(low)).all()
    assert (low > 0).all() and (df["volume"].to_numpy() >= 0).all()
    step = timeframe_ms(timeframe)
    if step <= 86_400_000:
        assert (ts % step == 0).all()


def _column(draw: st.DrawFn, kind: str, n: int) -> list[Any]:
    """n values of one kind (a column is homogeneous, as a CSV column or a parquet column is)."""
    nums = st.floats(0.01, 1e6)
    if kind == "float":
        return draw(st.lists(nums, min_size=n, max_size=n))
    if kind == "int":
        return draw(st.lists(st.integers(-5, 10**6), min_size=n, max_size=n))
    if kind == "nan":
        return draw(st.lists(st.one_of(nums, st.just(math.nan), st.just(math.inf)), min_size=n, max_size=n))
    if kind == "str":
        return draw(st.lists(st.sampled_from(["1.5", "abc", "", "1e3", "-1", "NaN", "inf", "0x10", "1,5"]),
                             min_size=n, max_size=n))
    start = T0 + HOUR * draw(st.integers(-200_000, 200_000))
    ms = [start + HOUR * i for i in draw(st.permutations(range(n)))]  # any order
    if draw(st.booleans()) and n > 1:
        ms[-1] = ms[0]  # a duplicate
    if kind == "ms":
        return ms
    if kind == "sec":
        return [t // 1000 for t in ms]
    if kind == "us":
        return [t * 1000 for t in ms]
    if kind == "iso":
        fmt = draw(st.sampled_from(["%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S+00:00"]))
        return [pd.Timestamp(t, unit="ms", tz="UTC").strftime(fmt) for t in ms]
    if kind == "huge":
        return draw(st.lists(st.sampled_from([1e30, -1e15, 2**63 - 1, -(2**62), 1e19, 9.9e18]), min_size=n,
                             max_size=n))
    if kind == "garbage_ts":
        return draw(st.lists(st.sampled_from(["yesterday", "2024-13-01", "99999999999999999999", "", "1.5.2",
                                              "2024-01-01", "0"]), min_size=n, max_size=n))
    if kind == "bool":
        return draw(st.lists(st.booleans(), min_size=n, max_size=n))
    raise AssertionError(kind)


TS_KINDS = ["ms", "sec", "us", "iso", "huge", "garbage_ts", "float", "int", "nan", "str", "bool"]
VAL_KINDS = ["float", "float", "float", "int", "nan", "str", "bool"]
NAMES = ["timestamp", "Timestamp", "date", "DateTime", "time", "open_time", "open", "high", "low", "close",
         "volume", "Close", " open ", "extra"]


@st.composite
def candle_files(draw: st.DrawFn) -> tuple[str, bytes | pd.DataFrame | str]:
    """(file name, content): a frame of random columns and kinds, raw bytes, or a text file."""
    what = draw(st.sampled_from(["frame", "frame", "frame", "frame", "bytes", "text"]))
    ext = draw(st.sampled_from([".csv", ".parquet", ".csv.gz", ".txt", ".pq", ".json"]))
    if what == "bytes":
        return "f" + ext, draw(st.binary(max_size=200))
    if what == "text":
        return "f" + ext, draw(st.text(alphabet=st.sampled_from(list("timestap,ohlcvu0123456789.-:TZ \n\"")),
                                       max_size=200))
    n = draw(st.integers(0, 6))
    names = draw(st.lists(st.sampled_from(NAMES), min_size=0, max_size=9))
    if draw(st.booleans()):  # most examples get the whole set, so the value checks are reached
        names = ["timestamp", "open", "high", "low", "close", "volume", *names]
    data: dict[str, list[Any]] = {}
    for name in names:
        if name in data:
            continue
        is_ts = name.strip().lower() in ("timestamp", "date", "datetime", "time", "open_time")
        kind = draw(st.sampled_from(TS_KINDS if is_ts else VAL_KINDS))
        data[name] = _column(draw, kind, n)
    if draw(st.booleans()) and n and {"open", "high", "low", "close"} <= set(data):
        base = draw(st.lists(st.floats(1.0, 1e5), min_size=n, max_size=n))  # mostly consistent OHLC rows
        data["open"], data["close"] = base, [b * 1.01 for b in base]
        data["high"], data["low"] = [b * 1.02 for b in base], [b * 0.99 for b in base]
    return "f" + ext, pd.DataFrame(data)


def _write(path: Path, content: bytes | pd.DataFrame | str) -> None:
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    elif path.name.endswith((".parquet", ".pq")):
        try:
            content.to_parquet(path, index=False)
        except Exception:  # a column pyarrow cannot type: store it as text instead
            content.astype(str).to_parquet(path, index=False)
    elif path.name.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            content.to_csv(f, index=False)
    else:
        content.to_csv(path, index=False)


@settings(FUZZ, max_examples=350)
@given(file=candle_files(), timeframe=st.sampled_from(["1h", "1h", "1m", "1d", "1w"]))
@example(file=("f.csv", "timestamp,open,high,low,close,volume,Close\n3600000,1,2,0.5,1.5,10,3\n"), timeframe="1h")
@example(file=("f.csv", "timestamp,open,high,low,close,volume\ninf,1,2,0.5,1.5,10\n"), timeframe="1h")
@example(file=("f.csv", "timestamp,open,high,low,close,volume\n1e30,1,2,0.5,1.5,10\n"), timeframe="1h")
@example(file=("f.csv", "timestamp,open,high,low,close,volume\n-99999999999,1,2,.5,1.5,1\n-99999999999,1,2,.5,1.5,1\n"),
         timeframe="1h")
@example(file=("f.csv", "timestamp,open,high,low,close,volume\n1704067200000000,1,2,.5,1.5,1\n"
                        "1704067200000000,1,2,.5,1.5,1\n"), timeframe="1h")
@example(file=("f.csv", "Date,date,open,high,low,close,volume\n2024-01-01,2024-01-01,1,2,0.5,1.5,10\n"),
         timeframe="1h")
@example(file=("f.csv", ""), timeframe="1h")
def test_candle_files_load_valid_or_fail_with_data_error(scratch: Path, file: tuple[str, Any],
                                                         timeframe: str) -> None:
    name, content = file
    path = _fresh(scratch, name)
    _write(path, content)
    try:
        df = read_user_file(path, timeframe)
    except CryptonormError as e:
        assert e.exit_code == 1 and "\n" not in str(e) and str(path.name) in str(e)
        return
    _loaded_invariants(df, timeframe)


@st.composite
def valid_candles(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(1, 40))
    start = T0 + HOUR * draw(st.integers(-30_000, 60_000))  # 2018 .. 2028
    step = HOUR * draw(st.integers(0, 5))  # a few gaps: still valid
    ts = start + np.cumsum(HOUR + np.array(draw(st.lists(st.sampled_from([0, 0, 0, step]), min_size=n, max_size=n))))
    close = np.array(draw(st.lists(st.floats(1e-4, 1e6), min_size=n, max_size=n)))
    open_ = np.array(draw(st.lists(st.floats(1e-4, 1e6), min_size=n, max_size=n)))
    high = np.maximum(open_, close) * draw(st.floats(1.0, 1.1))
    low = np.minimum(open_, close) * draw(st.floats(0.5, 1.0))
    volume = np.array(draw(st.lists(st.floats(0, 1e9), min_size=n, max_size=n)))
    return pd.DataFrame({"timestamp": ts.astype("int64"), "open": open_, "high": high, "low": low, "close": close,
                         "volume": volume})


@settings(FUZZ, max_examples=120)
@given(candles=valid_candles(), unit=st.sampled_from(["ms", "s", "us", "iso", "iso_offset", "datetime64"]),
       order=st.sampled_from(["sorted", "reversed", "shuffled"]), ts_name=st.sampled_from(["timestamp", "Date",
                                                                                           " open_time", "TIME"]),
       ext=st.sampled_from([".csv", ".csv.gz", ".parquet"]), upper=st.booleans(), extra=st.booleans())
def test_valid_candle_files_load_exactly(scratch: Path, candles: pd.DataFrame, unit: str, order: str, ts_name: str,
                                         ext: str, upper: bool, extra: bool) -> None:
    """The positive half: a correct file in any supported layout loads to exactly its candles, sorted."""
    if unit == "datetime64" and ext != ".parquet":
        unit = "iso"
    df = candles.copy()
    ms = df["timestamp"]
    if unit == "s":
        df["timestamp"] = ms // 1000
    elif unit == "us":
        df["timestamp"] = ms * 1000
    elif unit == "iso":
        df["timestamp"] = pd.to_datetime(ms, unit="ms", utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    elif unit == "iso_offset":  # the same instants written in UTC+05:30
        local = pd.to_datetime(ms, unit="ms", utc=True).dt.tz_convert("Asia/Kolkata")
        df["timestamp"] = local.map(lambda t: t.isoformat())
    elif unit == "datetime64":
        df["timestamp"] = pd.to_datetime(ms, unit="ms")
    if order == "reversed":
        df = df.iloc[::-1]
    elif order == "shuffled":
        df = df.sample(frac=1.0, random_state=len(df))
    df = df.rename(columns={"timestamp": ts_name})
    if upper:
        df.columns = [c.upper() for c in df.columns]
    if extra:
        df["trades"] = 7
    path = _fresh(scratch, "c" + ext)
    _write(path, df)
    got = read_user_file(path, "1h")
    _loaded_invariants(got, "1h")
    assert got["timestamp"].tolist() == candles["timestamp"].tolist()
    np.testing.assert_allclose(got[COLUMNS[1:]].to_numpy(), candles[COLUMNS[1:]].to_numpy(), rtol=1e-12, atol=0)

