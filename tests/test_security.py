"""Security: safe YAML, safe checkpoints, secrets only from the environment and never written or shown, and
no config value that makes a command write outside the data and run directories.

Every refusal is checked by its side effect (a marker file that must not exist, bytes that must not appear),
and every payload is first shown to be live: the unsafe loader really does run it.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import yaml
from fake_exchange import FakeBinance, RunningServer, _ApiError, exchange_options, real_candles, serving
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cryptonorm.config import DataConfig, build_config
from cryptonorm.data import store
from cryptonorm.data.exchange import Retry, call, open_source, pages, redact
from cryptonorm.data.store import store_path
from cryptonorm.errors import ConfigError, CryptonormError, ExchangeError, TransientExchangeError
from tests.cli_run import cli

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "configs" / "quickstart.yaml")
runner = CliRunner()

SECRETS = {
    "CRYPTONORM_BINANCE_API_KEY": "AKtestKEY7f3a9cQ2xLm",
    "CRYPTONORM_BINANCE_SECRET": "s3cr3t/with+special=chars&more",
    "CRYPTONORM_BINANCE_PASSWORD": "pass phrase 9!",
    "CRYPTONORM_SYNTHETIC_API_KEY": "synthKEYqq81",
}


def secret_forms() -> list[str]:
    """Every way a secret could be spelled in a file or message: as is, URL-encoded, JSON-escaped, base64."""
    out = set()
    for v in SECRETS.values():
        out |= {v, quote(v, safe=""), quote_plus(v), json.dumps(v)[1:-1], base64.b64encode(v.encode()).decode()}
    return sorted(out)




def one_line_error(err: str, out: str = "") -> str:
    assert "Traceback" not in err + out and "internal error" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- a binance store and a run, with secrets in the env


def binance_options(url: str) -> dict[str, Any]:
    """The fake server's options; with credentials set, ccxt's binance would also ask private endpoints
    (capital/config/getall, margin/allPairs) while loading markets: switched off, candles are public."""
    opts = exchange_options(url)
    opts["options"] = {**opts["options"], "fetchCurrencies": False, "fetchMargins": False}
    return opts


def write_config(path: Path, url: str, data_dir: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "name": "secrets",
        "data": {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h", "dir": str(data_dir),
                 "since": "2021-08-01", "exchange_options": binance_options(url)},
        "features": {"window": 12, "sma": [10], "ema": [12], "returns": [1, 2, 4]},
        "model": {"hidden": [8]},
        "train": {"epochs": 1, "threads": 1, "device": "cpu"},
    }))
    return path


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    state = FakeBinance()
    state.add_candles("BTCUSDT", "1h", real_candles("BTC_USDT-1h", rows=2_000, end="2021-10-15"))
    yield from serving(state)


@pytest.fixture(scope="module")
def secret_run(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """fetch, train, backtest, predict, features and config show, all with credentials in the environment."""
    root = tmp_path_factory.mktemp("secret-run")
    cfg = write_config(root / "exp.yaml", server.url, root / "store")
    run_dir = root / "run"
    outputs = []
    for args in (["fetch", "-c", str(cfg)], ["train", str(cfg), "--out", str(run_dir)],
                 ["backtest", str(run_dir), "--json"], ["predict", str(run_dir), "-o", str(root / "pred.csv")],
                 ["features", str(cfg), "-o", str(root / "features.parquet")], ["config", "show", str(cfg)]):
        code, out, err = cli(*args, env=SECRETS)
        assert code == 0, (args, err)
        outputs.append(out + err)
    return {"root": root, "config": cfg, "run_dir": run_dir, "outputs": outputs}


def test_secrets_come_from_the_env_and_are_never_written_or_printed(secret_run: dict[str, Any],
                                                                    server: RunningServer,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    cfg = build_config(yaml.safe_load(Path(secret_run["config"]).read_text()))
    exchange: Any = open_source(cfg.data)  # the credentials did reach ccxt: the check below is not vacuous
    assert (exchange.apiKey, exchange.secret, exchange.password) == (
        SECRETS["CRYPTONORM_BINANCE_API_KEY"], SECRETS["CRYPTONORM_BINANCE_SECRET"],
        SECRETS["CRYPTONORM_BINANCE_PASSWORD"])
    files = tree(secret_run["root"])
    assert any(name.endswith("model.pt") for name in files) and any(".parquet" in n for n in files)
    forms = secret_forms()
    for name, data in files.items():
        for s in forms:
            assert s.encode() not in data, f"a secret is written in {name}"
    for text in secret_run["outputs"]:
        assert not any(s in text for s in forms)
    sent = json.dumps([r.params for r in server.state.log])
    assert not any(s in sent for s in forms)  # public candles: the key never travels in a query


class EchoingBinance(FakeBinance):
    """An exchange whose error answers echo the caller's credentials (some do, in 'invalid key' messages)."""

    def klines(self, q: dict[str, str]) -> tuple[int, list[str]]:
        key, secret = SECRETS["CRYPTONORM_BINANCE_API_KEY"], SECRETS["CRYPTONORM_BINANCE_SECRET"]
        raise _ApiError(400, -1100, f"Illegal characters found in parameter 'apiKey' ({key}); "
                                    f"signature base {quote_plus(secret)}")


def test_credentials_echoed_by_the_exchange_are_redacted(tmp_path: Path) -> None:
    state = EchoingBinance()
    state.add_candles("BTCUSDT", "1h", real_candles("BTC_USDT-1h", rows=200, end="2021-10-15"))
    for srv in serving(state):
        cfg = write_config(tmp_path / "exp.yaml", srv.url, tmp_path / "store")
        code, out, err = cli("fetch", "-c", str(cfg), env=SECRETS)
    assert code == 1
    line = one_line_error(err, out)
    assert "BadRequest" in line and "***" in line
    assert not any(s in out + err for s in secret_forms())


class Stub:
    """The Source protocol, failing the way we tell it to."""

    id = "binance"

    def __init__(self, last_http_response: str | None = None) -> None:
        self.last_http_response = last_http_response

    def load_markets(self) -> dict[str, Any]:
        return {"BTC/USDT": {}}

    def fetch_ohlcv(self, symbol: str, timeframe: str = "1h", since: int | None = None, limit: int | None = None,
                    params: dict[str, Any] | None = None) -> list[list[float]]:
        return []

    def milliseconds(self) -> int:
        return 1_700_000_000_000


def _ccxt_errors() -> list[tuple[str, Exception, type[CryptonormError]]]:
    import ccxt

    key, secret, password = (SECRETS[f"CRYPTONORM_BINANCE_{k}"] for k in ("API_KEY", "SECRET", "PASSWORD"))
    return [
        ("auth", ccxt.AuthenticationError(f'binance {{"code":-2015,"msg":"Invalid API-key {key}"}}'), ExchangeError),
        ("url", ccxt.BadRequest(f"binance GET https://api.binance.com/api/v3/klines?apiKey={quote_plus(key)}&"
                                f"secret={quote(secret, safe='')} 400 Bad Request"), ExchangeError),
        ("network", ccxt.NetworkError(f"binance GET https://x/?k={key} Connection reset"), TransientExchangeError),
        ("json", ccxt.ExchangeError(json.dumps({"msg": f"bad passphrase {password}"})), ExchangeError),
        ("not-ccxt", RuntimeError(f"proxy said: {secret}"), ExchangeError),
    ]


@pytest.mark.parametrize("case", range(5), ids=["auth", "url", "network", "json", "not-ccxt"])
def test_exchange_errors_never_carry_env_secrets(case: int, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    _, exc, expected = _ccxt_errors()[case]
    raised: list[float] = []

    def fail() -> None:
        raise exc

    with pytest.raises(expected) as e:
        call(Stub(), "fetch BTC/USDT 1h candles", fail, Retry(attempts=2, sleep=raised.append))
    msg = str(e.value)
    assert not any(s in msg for s in secret_forms()), msg
    assert msg.startswith("binance: fetch BTC/USDT 1h candles") and "\n" not in msg


def test_a_non_json_body_quoted_in_an_error_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    body = f"<html>denied for key {SECRETS['CRYPTONORM_BINANCE_API_KEY']}</html>"
    with pytest.raises(TransientExchangeError) as e:
        list(pages(Stub(last_http_response=body), "BTC/USDT", "1h", 0, None, Retry(attempts=1, sleep=lambda s: None)))
    assert "not JSON" in str(e.value) and "***" in str(e.value)
    assert not any(s in str(e.value) for s in secret_forms())


def test_redaction_leaves_other_text_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRYPTONORM_KRAKEN_SECRET", "abc/def")
    monkeypatch.setenv("CRYPTONORM_KRAKEN_TIMEOUT", "30000")  # not a credential: left as is
    assert redact("x abc/def y abc%2Fdef 30000") == "x *** y *** 30000"
    monkeypatch.delenv("CRYPTONORM_KRAKEN_SECRET")
    assert redact("x abc/def y") == "x abc/def y"


@pytest.mark.parametrize("options", [
    "{apiKey: k-123}", "{secret: s-123}", "{password: p-123}", "{api_key: k-123}", "{privateKey: k-123}",
    "{uid: u-123}", "{twofa: t-123}", "{options: {apiKey: k-123}}", "{headers: {X-MBX-APIKEY: k-123}}",
    "{urls: {api: {public: 'http://h'}}, Secret: s-123}",
])
def test_credentials_in_a_config_are_refused(tmp_path: Path, options: str) -> None:
    code, out, err = cli("config", "validate", QUICK, "--set", f"data.exchange_options={options}")
    assert code == 2
    line = one_line_error(err, out)
    assert "must not be written in a config" in line and "CRYPTONORM_<EXCHANGE>_API_KEY" in line
    assert "-123" not in line  # the value itself is not repeated
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  exchange_options: {options}\n")
    code, _, err = cli("train", str(cfg))
    assert code == 2 and "must not be written in a config" in err


def test_harmless_exchange_options_still_pass() -> None:
    code, _, err = cli("config", "validate", QUICK, "--set",
                       "data.exchange_options={timeout: 5000, enableRateLimit: true, options: {defaultType: spot}}")
    assert code == 0, err


# ---------------------------------------------------------------- YAML is data, never code


def _payload(marker: Path) -> str:
    return f"!!python/object/apply:builtins.open [{str(marker)!r}, 'w']"


def test_the_yaml_payload_is_live_under_an_unsafe_loader(tmp_path: Path) -> None:
    marker = tmp_path / "control"
    yaml.unsafe_load(f"name: {_payload(marker)}\n")  # what a yaml.load(..., Loader=Loader) would do
    assert marker.exists()


@pytest.mark.parametrize("where", ["config", "nested", "set", "set-options", "sweep", "run-config"])
def test_yaml_tags_never_execute(where: str, tmp_path: Path, secret_run: dict[str, Any]) -> None:
    marker = tmp_path / "pwned"
    payload = _payload(marker)
    cfg = tmp_path / "c.yaml"
    if where == "config":
        cfg.write_text(f"name: {payload}\n")
        args = ["train", str(cfg)]
    elif where == "nested":
        cfg.write_text(f"data:\n  exchange_options:\n    timeout: {payload}\n")
        args = ["fetch", "-c", str(cfg)]
    elif where == "set":
        args = ["config", "show", QUICK, "--set", f"name={payload}"]
    elif where == "set-options":
        args = ["config", "show", QUICK, "--set", f"data.exchange_options={{timeout: {payload}}}"]
    elif where == "sweep":
        cfg.write_text(f"name: s\nbase: {QUICK}\ngrid:\n  seed: [{payload}]\n")
        args = ["sweep", str(cfg), "--out", str(tmp_path / "sw")]
    else:  # a run directory someone sent you: its config.yaml is read by predict and backtest
        run = tmp_path / "run"
        shutil.copytree(secret_run["run_dir"], run)
        (run / "config.yaml").write_text(f"name: {payload}\n")
        args = ["predict", str(run)]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        code, out, err = cli(*args)
    assert not marker.exists(), "a YAML tag ran code"
    assert code == 2, err
    one_line_error(err, out)


def _laughs(levels: int = 9) -> str:
    """"Billion laughs": nine anchors, each a list of nine aliases of the one before: 9^9 values."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nname: *a{levels - 1}\n"


@pytest.mark.parametrize("doc", ["laughs", "loop"])
@pytest.mark.parametrize("where", ["config", "sweep"])
def test_yaml_alias_bombs_are_refused_at_once(doc: str, where: str, tmp_path: Path) -> None:
    """A config or sweep file whose aliases expand it a billion-fold (or into itself) is one line and exit 2,
    before anything walks it (it used to run until killed: `_deepcopy` and validation walk every alias)."""
    text = _laughs() if doc == "laughs" else "a: &a [1, *a]\nname: x\n"
    path = tmp_path / "c.yaml"
    if where == "config":
        path.write_text(text)
        args = ["config", "show", str(path)]
    else:
        path.write_text(f"name: s\nbase: {QUICK}\ngrid:\n  seed: [0, 1]\n" + text.replace("name: ", "x: "))
        args = ["sweep", str(path), "--out", str(tmp_path / "sw")]
    code, out, err = cli(*args)
    assert code == 2, err
    line = one_line_error(err, out)
    assert "aliases (*name) expand it to more than 100,000 values or refer to themselves" in line, line
    assert not (tmp_path / "sw").exists()


def test_yaml_anchors_of_ordinary_size_still_load(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("features: {sma: &w [10, 20], ema: *w}\n")
    code, out, err = cli("config", "show", str(path))
    assert code == 0, err
    assert yaml.safe_load(out)["features"]["ema"] == [10, 20]


# ---------------------------------------------------------------- checkpoints are weights, never code


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def _malicious(kind: str, path: Path, marker: Path) -> None:
    import torch

    if kind == "pickle":
        path.write_bytes(pickle.dumps({"state_dict": _Evil(marker), "meta": "{}"}, protocol=2))
    else:  # the zip format torch.save writes, with the object inside the payload
        torch.save({"state_dict": {}, "meta": _Evil(marker)}, path)


@pytest.mark.parametrize("kind", ["pickle", "torch-zip"])
def test_a_malicious_checkpoint_is_refused_not_run(kind: str, tmp_path: Path, secret_run: dict[str, Any]) -> None:
    import torch

    from cryptonorm.learn.checkpoints import load_checkpoint

    control = tmp_path / "control"
    _malicious(kind, tmp_path / "control.pt", control)
    try:  # the payload is live: an unsafe load runs it (a bare pickle runs while torch looks for its header)
        torch.load(tmp_path / "control.pt", weights_only=False)
    except RuntimeError:
        assert kind == "pickle"
    assert control.exists()

    run = tmp_path / "run"
    shutil.copytree(secret_run["run_dir"], run)
    marker = tmp_path / "pwned"
    _malicious(kind, run / "model.pt", marker)
    code, out, err = cli("predict", str(run), "-o", str(tmp_path / "p.csv"))
    assert not marker.exists(), "loading a checkpoint ran code"
    assert code == 1
    assert "SHA-256" in one_line_error(err, out)  # refused before loading: not the model this run trained
    info = json.loads((run / "run.json").read_text())
    del info["files"]  # a run without recorded hashes (an older version): the safe loader itself refuses
    (run / "run.json").write_text(json.dumps(info))
    code, out, err = cli("predict", str(run), "-o", str(tmp_path / "p.csv"))
    assert not marker.exists(), "loading a checkpoint ran code"
    assert code == 1
    assert "cannot load checkpoint" in one_line_error(err, out)
    assert not (tmp_path / "p.csv").exists()
    with pytest.raises(CryptonormError):
        load_checkpoint(run / "model.pt")
    assert not marker.exists()


def test_the_real_checkpoint_loads_with_weights_only(secret_run: dict[str, Any]) -> None:
    import torch

    payload = torch.load(Path(secret_run["run_dir"]) / "model.pt", weights_only=True)
    assert set(payload) == {"state_dict", "meta"} and isinstance(payload["meta"], str)


# ---------------------------------------------------------------- nothing is written outside data.dir and the run dir


@pytest.mark.parametrize("args", [
    ["train", QUICK, "--set", "name=../../escaped"],
    ["train", QUICK, "--set", "name=/tmp/escaped"],
    ["train", QUICK, "--set", "name=.."],
    ["fetch", "-c", QUICK, "--exchange", "../escaped"],
    ["fetch", "-c", QUICK, "--exchange", "a/b"],
    ["fetch", "-c", QUICK, "--symbol", "../../escaped"],
    ["fetch", "-c", QUICK, "--symbol", "BTC/../../USDT"],
    ["fetch", "-c", QUICK, "--timeframe", "../1h"],
    ["sweep", "SWEEP", "--out", "sweeps/s"],
], ids=["name-up", "name-abs", "name-dotdot", "exchange-up", "exchange-slash", "symbol-up", "symbol-mid",
        "timeframe", "sweep-name"])
def test_path_tricks_in_names_are_refused(args: list[str], tmp_path: Path) -> None:
    work = tmp_path / "a" / "b" / "work"
    work.mkdir(parents=True)
    sweep = work / "s.yaml"
    sweep.write_text(f"name: ../../escaped\nbase: {QUICK}\ngrid:\n  seed: [0, 1]\n")
    args = [str(sweep) if a == "SWEEP" else a for a in args]
    before = tree(tmp_path)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        code, out, err = cli(*args, "--set", f"data.dir={work / 'data'}")
    assert code == 2, err
    one_line_error(err, out)
    assert tree(tmp_path) == before
    assert not any(p.name == "escaped" or p.name.startswith("escaped-") for p in Path("/tmp").iterdir())


def test_a_dotted_symbol_stays_inside_data_dir(tmp_path: Path) -> None:
    """'../..' passes the symbol syntax (BASE/QUOTE of letters, digits, '.' and '-'): the store file is
    still a single name inside data.dir, and the synthetic market refuses the market before any write."""
    data = tmp_path / "work" / "data"
    cfg = build_config({"data": {"symbol": "../..", "dir": str(data)}})
    path = store.candle_path(cfg).resolve()
    assert path.is_relative_to(data.resolve()) and path.name == ".._..-1h.parquet"
    code, out, err = cli("fetch", "-c", QUICK, "--symbol", "../..", "--data-dir", str(data))
    assert code == 1 and "no market '../..'" in one_line_error(err, out)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


symbol_part = st.text(alphabet=st.sampled_from(list("AB.-9/:\\~ \x00")), min_size=1, max_size=6)


@settings(derandomize=True, deadline=None, database=None, max_examples=300)
@given(symbol=st.builds(lambda a, b, c: f"{a}/{b}{c}", symbol_part, symbol_part,
                        st.one_of(st.just(""), symbol_part.map(lambda s: ":" + s))),
       exchange=st.one_of(st.just("synthetic"), st.just("binance"), st.text(max_size=8)),
       timeframe=st.one_of(st.just("1h"), st.text(max_size=4)))
def test_every_accepted_market_is_stored_inside_data_dir(symbol: str, exchange: str, timeframe: str) -> None:
    data_dir = Path("/srv/cn/data")
    try:
        data = DataConfig(symbol=symbol, exchange=exchange, timeframe=timeframe, dir=str(data_dir))
    except (ValueError, ConfigError):
        return
    for sym in data.symbols:
        path = store_path(data.dir, store.store_folder(data), sym, data.timeframe)
        assert os.path.normpath(path) == str(path)  # no '..' or '.' component anywhere
        assert path.parent.parent in (data_dir, data_dir / "synthetic")
        assert "/" not in path.name and path.name not in (".", "..") and "\x00" not in str(path)


@settings(derandomize=True, deadline=None, database=None, max_examples=200)
@given(values=st.lists(st.one_of(st.text(max_size=10), st.integers(), st.lists(st.text(max_size=4), max_size=2)),
                       min_size=1, max_size=3, unique_by=lambda v: json.dumps(v)))
def test_sweep_cell_directories_stay_inside_the_sweep(values: list[Any]) -> None:
    from cryptonorm.sweeps.results import cell_dir
    from cryptonorm.sweeps.spec import cell_id

    sweep_dir = Path("/srv/cn/sweeps/s")
    for v in values:
        cid = cell_id({"model.norm": v, "seed": v}, "0123456789")
        d = cell_dir(sweep_dir, cid)
        assert d.parent == sweep_dir / "cells" and os.path.normpath(d) == str(d) and cid not in (".", "..")
