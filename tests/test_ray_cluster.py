"""Ray as the engine beyond one machine: a real two-node Ray cluster started here (`ray start --head` on a free
port plus a second node with `ray start --address 127.0.0.1:PORT`, token authentication on, one CPU and one
logical GPU each: Ray schedules GPUs as resources, so num_gpus placement is tested without a GPU), a sweep
driven through the real CLI with `--executor ray --address --gpus-per-cell 0.5`, one cell's worker SIGKILLed
mid-run and retried, and every cell's metrics equal to an inline run of the same cells (the cells train on
the CPU: train.device cpu). A sweep asking more GPUs per cell than any node has is refused in one line.
`cryptonorm study` takes the same executor options (checked here before anything loads).

The cluster test is marked slow: starting two Ray nodes is half of its 45-85 s on this loaded 2-core machine.
Its finalizer ends only the processes it started (every process in the sessions of its `ray start` commands):
`ray stop` would stop every Ray process of this user on the machine, other test runs' included.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from ray_kill.sitecustomize import KILL_ENV
from typer.testing import CliRunner

from cryptonorm.cli import app
from cryptonorm.sweeps.spec import load_sweep

ROOT = Path(__file__).resolve().parents[1]
KILL_DIR = Path(__file__).resolve().parent / "ray_kill"  # the test's kill switch (sitecustomize.py)
RAY = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")

BASE = """\
name: tiny
seed: 0
data: {{exchange: synthetic, symbol: BTC/USDT, timeframe: 1h, since: "2022-01-01", until: "2022-03-01",
        dir: {data_dir}, synthetic: {{seed: 7, signal: 0.15}}}}
features: {{window: 8, sma: [10], ema: [], macd: [], bbands: [], returns: [1, 2, 4]}}
model: {{kind: mlp, norm: layer, hidden: [8], dropout: 0.0}}
train: {{epochs: 1, batch_size: 64, device: cpu, threads: 1}}
"""
SWEEP = "name: tiny-cluster\nbase: base.yaml\ngrid:\n  model.norm: [none, layer]\n  seed: [0, 1]\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def session_pids(sids: set[int]) -> list[int]:
    """Every live process whose session id is one of `sids` (field 6 of /proc/PID/stat)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) in sids and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def end_sessions(sids: set[int]) -> None:
    """SIGTERM the processes of these sessions, then SIGKILL what is left after 2 s."""
    for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
        for pid in session_pids(sids):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + wait
        while session_pids(sids) and time.time() < deadline:
            time.sleep(0.1)


@contextmanager
def started(args: list[str], env: dict[str, str], sids: set[int]) -> Iterator[subprocess.Popen[str]]:
    """`ray start ARGS` in a session of its own (recorded in `sids` for the finalizer)."""
    proc = subprocess.Popen([str(RAY), "start", *args, "--num-cpus", "1", "--num-gpus", "1", "--disable-usage-stats"],
                            env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    sids.add(proc.pid)
    yield proc


def finish(proc: subprocess.Popen[str], what: str) -> None:
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, f"{what} failed:\n{out[-3000:]}"


def flat(d: Any, prefix: str = "") -> dict[str, Any]:
    """{'test.mse': 0.1, ...}: the numbers (and strings) of a nested result section, for pytest.approx."""
    if not isinstance(d, dict):
        return {prefix: d}
    return {k: v for key, val in d.items() for k, v in flat(val, f"{prefix}.{key}" if prefix else key).items()}


def cell_results(sweep_dir: Path) -> dict[str, dict[str, Any]]:
    return {p.parent.name: json.loads(p.read_text()) for p in (sweep_dir / "cells").glob("*/result.json")}


@pytest.mark.slow
@pytest.mark.skipif(RAY is None, reason="the `ray` command is not on PATH (pip install cryptonorm[ray])")
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to end the cluster's processes")
def test_two_node_cluster_sweep_survives_a_killed_cell(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="Ray is not installed (pip install cryptonorm[ray])")
    t0 = time.time()
    (tmp_path / "base.yaml").write_text(BASE.format(data_dir=tmp_path / "candles"))
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    cells = [c.id for c in load_sweep(tmp_path / "sweep.yaml").cells]
    victim = cells[0]
    root = Path(tempfile.mkdtemp(prefix="crn-ray-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    marker = root / "killed.pid"
    (root / "token").write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(root / "token"),
           "RAY_USAGE_STATS_ENABLED": "0", KILL_ENV: f"{victim}:{marker}",
           # ray_kill/sitecustomize.py: the kill switch, loaded by every process of the cluster and the driver
           "PYTHONPATH": os.pathsep.join([str(KILL_DIR), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    port = free_port()
    sids: set[int] = set()
    try:
        with started(["--head", "--port", str(port), "--include-dashboard", "false", "--temp-dir",
                      str(root / "head")], env, sids) as head:
            # the inline reference run (which also makes the candles) while the head node starts
            inline = CliRunner().invoke(app, ["-q", "sweep", str(tmp_path / "sweep.yaml"), "--out",
                                              str(tmp_path / "inline")])
            assert inline.exit_code == 0, inline.output
            finish(head, "ray start --head")
        with started(["--address", f"127.0.0.1:{port}", "--temp-dir", str(root / "worker")], env, sids) as worker:
            finish(worker, "ray start --address (the second node)")
        t_cluster = time.time() - t0
        driver = subprocess.Popen([sys.executable, "-m", "cryptonorm", "-q", "sweep", str(tmp_path / "sweep.yaml"),
                                   "--out", str(tmp_path / "ray"), "--executor", "ray", "--address",
                                   f"127.0.0.1:{port}", "--gpus-per-cell", "0.5"], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        sids.add(driver.pid)
        out, err = driver.communicate(timeout=300)
        assert driver.returncode == 0, err[-3000:]
        killed = marker.read_text() if marker.exists() else None
        # more GPUs per cell than any node has: one line and exit 2 at once, not tasks that wait forever
        greedy = subprocess.run([sys.executable, "-m", "cryptonorm", "-q", "sweep", str(tmp_path / "sweep.yaml"),
                                 "--out", str(tmp_path / "greedy"), "--executor", "ray", "--address",
                                 f"127.0.0.1:{port}", "--gpus-per-cell", "2"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=120)
        print(f"\ncluster up in {t_cluster:.1f} s, whole test {time.time() - t0:.1f} s")
    finally:
        end_sessions(sids)
        shutil.rmtree(root, ignore_errors=True)
    assert not session_pids(sids), "processes of the test's Ray cluster outlived it"

    ray_res, ref = cell_results(tmp_path / "ray"), cell_results(tmp_path / "inline")
    assert sorted(ray_res) == sorted(ref) == sorted(cells)
    assert all(r["status"] == "ok" for r in ray_res.values())
    # the victim's first attempt was SIGKILLed mid-run (its process is gone), the second one finished
    assert killed is not None, "the kill hook never ran"
    assert not Path(f"/proc/{killed}").exists()
    assert ray_res[victim]["attempt"] == 2
    assert "died" in ray_res[victim]["retried_after"].lower() or "crash" in ray_res[victim]["retried_after"].lower()
    assert all(r["attempt"] == 1 and "retried_after" not in r for c, r in ray_res.items() if c != victim)
    # both nodes trained cells
    assert len({r["node"] for r in ray_res.values()}) == 2
    assert {r["host"] for r in ray_res.values()} == {socket.gethostname()}  # two nodes, one machine
    table = pd.read_csv(tmp_path / "ray" / "sweep_results.csv").set_index("cell_id")  # ... and in the table
    assert table.loc[victim, "attempt"] == 2 and (table.drop(index=victim)["attempt"] == 1).all()
    assert table["node"].nunique() == 2 and set(table["host"]) == {socket.gethostname()}
    # every cell was placed on its node's (logical) GPU 0, half a GPU each, and the table says so
    assert {r.get("gpus") for r in ray_res.values()} == {"0"}
    assert table["gpus"].astype(str).tolist() == ["0"] * len(cells)
    assert greedy.returncode == 2, greedy.stderr[-2000:]
    assert greedy.stderr.strip().splitlines() == [
        "error: --gpus-per-cell 2 needs a Ray node with 2 GPU(s), and the largest has 1; start the nodes with "
        "`ray start --num-gpus N`, or leave it at 0 to train on the CPU"], greedy.stderr[-2000:]
    # the same cells, the same numbers as the inline run (same seeds, one torch thread each)
    for c in cells:
        for key in ("metrics", "backtest"):
            got, want = flat(ray_res[c][key]), flat(ref[c][key])
            assert got.keys() == want.keys() and len(got) > 10, (c, key)
            nums = [k for k, v in want.items() if isinstance(v, float)]
            assert {k: got[k] for k in nums} == pytest.approx({k: want[k] for k in nums}, rel=1e-9, nan_ok=True)
            assert {k: got[k] for k in want if k not in nums} == {k: want[k] for k in want if k not in nums}
        ray_fc = (tmp_path / "ray" / "cells" / c / "run" / "forecasts.csv").read_text()
        assert ray_fc == (tmp_path / "inline" / "cells" / c / "run" / "forecasts.csv").read_text(), c


# ---------------------------------------------------------------- `cryptonorm study` takes the sweep's executor options


CLAIM = """\
claim: {id: 1, title: tiny, data: synthetic}
rule: {text: t, metric: test_mse, claimed: lower, margin: 0.02, comparisons: [{key: model.norm, treatment: layer,
       control: none}]}
sweep: {name: tiny_claim, base: ../base.yaml, grid: {model.norm: [none, layer], seed: [0, 1]}}
"""


def write_study(tmp_path: Path) -> Path:
    (tmp_path / "base.yaml").write_text(BASE.format(data_dir=tmp_path / "candles"))
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "claim.yaml").write_text(CLAIM)
    return tmp_path / "studies"


@pytest.mark.parametrize(("args", "line"), [
    (["--address", "127.0.0.1:6379"], "error: --address is for --executor ray"),
    (["--executor", "dask"], "error: --executor must be local or ray, got 'dask'"),
])
def test_study_refuses_bad_executor_options_first(tmp_path: Path, args: list[str], line: str) -> None:
    res = CliRunner().invoke(app, ["study", str(write_study(tmp_path)), "--out", str(tmp_path / "out"), *args])
    assert res.exit_code == 2
    assert res.stderr.strip() == line and res.stdout == ""  # before the claims load: no "study: ..." line
    assert not (tmp_path / "out").exists()


def test_study_with_ray_missing_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    res = CliRunner().invoke(app, ["-q", "study", str(write_study(tmp_path)), "--out", str(tmp_path / "out"),
                                   "--executor", "ray", "--address", "127.0.0.1:6379"])
    assert res.exit_code == 2
    assert res.stderr.strip() == "error: --executor ray needs Ray, which is not installed: pip install cryptonorm[ray]"
    assert not list((tmp_path / "out").glob("*/cells/*/result.json"))  # nothing trained


class _NoCluster:
    """Stands in for the ray module where nothing listens at the address."""

    def is_initialized(self) -> bool:
        return False

    def init(self, **kw: Any) -> None:
        raise ConnectionError(f"Failed to connect to Ray cluster at {kw['address']}")


@pytest.mark.parametrize("mode", [None, "token"])
def test_a_cluster_refusing_the_session_is_one_line_with_a_token_hint(monkeypatch: pytest.MonkeyPatch,
                                                                       mode: str | None) -> None:
    from cryptonorm.errors import CryptonormError
    from cryptonorm.sweeps.executors import ray_session

    if mode is None:
        monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    else:
        monkeypatch.setenv("RAY_AUTH_MODE", mode)
    with socket.socket() as head:  # something listens (a head that then refuses the session, e.g. its token)
        head.bind(("127.0.0.1", 0))
        head.listen()
        address = f"127.0.0.1:{head.getsockname()[1]}"
        with pytest.raises(CryptonormError) as e, ray_session(_NoCluster(), address, 1):
            pass
    msg = str(e.value)
    assert msg.startswith(f"cannot start or reach Ray at {address}: Failed to connect")
    assert "\n" not in msg
    assert ("set RAY_AUTH_MODE=token here" in msg) == (mode is None)  # no hint when token mode is on already


def test_an_address_where_nothing_listens_fails_at_once_in_one_line(tmp_path: Path) -> None:
    """Issue 24: `sweep --executor ray --address 127.0.0.1:1` retried for minutes; now the TCP connection is
    tried first (refused here at once; an address that drops packets gives up after CONNECT_TIMEOUT_S)."""
    from typer.testing import CliRunner

    from cryptonorm.cli import app

    r = CliRunner().invoke(app, ["sweep", str(ROOT / "configs" / "sweeps" / "norms.yaml"), "--executor", "ray",
                                 "--address", "127.0.0.1:1", "--out", str(tmp_path / "sw")])
    assert r.exit_code == 1, r.output
    line, = r.stderr.strip().splitlines()
    assert line.startswith("error: cannot reach Ray at 127.0.0.1:1: connection refused (tried for up to 10 s)"), line
    assert "ray start --head" in line
    assert not (tmp_path / "sw").exists()  # refused before any work
