"""Fixtures shared by the exchange and fetch tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cryptonorm.data.exchange import Retry


@pytest.fixture
def sleeps() -> list[float]:
    """The backoff waits a test's Retry asked for, in order."""
    return []


@pytest.fixture
def retry(sleeps: list[float]) -> Retry:
    return Retry(sleep=sleeps.append)  # backoff recorded, not slept


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One visible line when the browser tests skipped for want of a browser (skip reasons are hidden in -q)."""
    for rep in terminalreporter.stats.get("skipped", []):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        if "no headless Chromium" in reason:
            terminalreporter.write_line(f"HTML report browser tests skipped: {reason.removeprefix('Skipped: ')}")
            return


# ---------------------------------------------------------------- one small real run, shared by the tests of the
# notebook API, export, tracking and re-backtests (trained once per session: a few seconds)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def small_real_config(**overrides: object) -> dict[str, object]:
    """A raw config: BTC/USDT 1h from the shared real history, Jan-Apr 2024 (~2,900 bars), a tiny MLP."""
    raw: dict[str, object] = {
        "name": "small-real", "seed": 0,
        "data": {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h",
                 "file": str(SHARED_DATA / "BTC_USDT-1h.csv.gz"), "since": "2024-01-01", "until": "2024-05-01"},
        "features": {"window": 16, "returns": [1, 2, 4, 8]},
        "model": {"kind": "mlp", "norm": "layer", "hidden": [16, 8], "dropout": 0.0},
        "train": {"epochs": 2, "threads": 1, "device": "cpu", "batch_size": 128},
        "backtest": {"fee_bps": 10, "threshold": 0.0},
    }
    for key, value in overrides.items():
        section, _, leaf = key.partition(".")
        if leaf:
            raw[section] = {**raw[section], leaf: value}  # type: ignore[dict-item]
        else:
            raw[key] = value
    return raw


@pytest.fixture
def real_config() -> Any:
    """`small_real_config` itself, for tests that build variants of it."""
    return small_real_config


@pytest.fixture(scope="session")
def small_real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished, backtested run directory on real candles."""
    from cryptonorm import pipeline
    from cryptonorm.config import build_config

    out = tmp_path_factory.mktemp("real") / "run"
    pipeline.train(build_config(small_real_config()), out)
    pipeline.backtest(out)
    return out


# ---------------------------------------------------------------- the slow tier (`make test` skips it)
# Tests in a real browser are slow by nature, and so is fuzzing (test_fuzz.py: thousands of generated inputs).
# The others were measured with `pytest tests/FILE.py --durations=0`, one file at a time, on the shared 2-core
# development machine under a load average of ~10 (docs/guide/reshape-layout.md has the figures): Ray
# clusters, random kills, runs interrupted and resumed, long trainings. A test file marks its own new slow
# tests with @pytest.mark.slow; this list holds the existing ones, so the tiers change no other test file.
SLOW_FIXTURES = frozenset({"browser"})
SLOW_FILES = frozenset({"tests/test_fuzz.py"})
SLOW_TESTS = frozenset({
    # random kills and concurrent writers (test_reliability.py: 130 s, 93 s, 79 s, 36 s measured)
    "tests/test_reliability.py::test_train_killed_at_random_moments_leaves_complete_files_and_reruns",
    "tests/test_reliability.py::test_sweep_killed_at_random_moments_resumes_and_completes",
    "tests/test_reliability.py::test_concurrent_fetches_of_overlapping_ranges_store_the_union_exactly",
    "tests/test_reliability.py::test_fetch_killed_at_random_moments_resumes_to_the_exact_store",
    "tests/test_reliability.py::test_sigterm_exits_like_ctrl_c",  # 8 s
    "tests/test_fetch.py::test_sigkill_mid_download_loses_nothing_and_resumes",  # 9 s
    # interrupted and resumed trainings, concurrent trains (test_run_safety.py: 42 s, 42 s, 41 s, 17 s)
    "tests/test_run_safety.py::test_walk_forward_resumes_by_fold",
    "tests/test_run_safety.py::test_interrupted_train_resumes_to_the_uninterrupted_result",
    "tests/test_run_safety.py::test_a_changed_config_refuses_to_resume_naming_the_keys",
    "tests/test_run_safety.py::test_two_concurrent_trains_one_wins_one_is_refused",
    # a local Ray instance, a SIGKILLed sweep, a crashing worker pool (test_sweep.py: 58 s, 34 s, 39 s)
    "tests/test_sweep.py::test_ray_executor_on_a_local_instance",
    "tests/test_sweep.py::test_sigkill_mid_sweep_then_resume",
    "tests/test_sweep.py::test_runtime_failure_in_a_worker_process",
    # a swap run end to end through the CLI: fetch, train, backtest with funding (test_futures.py: 40 s)
    "tests/test_futures.py::test_swap_run_end_to_end_through_the_cli",
    # long trainings and compilations (test_accel.py: 63 s; test_pipeline.py: 28 s; test_norms_training.py: 18 s)
    "tests/test_accel.py::test_compile_gives_the_eager_losses",
    "tests/test_pipeline.py::test_planted_signal_is_found_and_absent_signal_is_not",
    "tests/test_norms_training.py::test_walk_forward_with_revin_and_recalibrated_batch_norm_then_predict_and_backtest",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        name = item.nodeid.split("[", 1)[0]
        if (name in SLOW_TESTS or name.split("::", 1)[0] in SLOW_FILES
                or SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))):
            item.add_marker(pytest.mark.slow)
