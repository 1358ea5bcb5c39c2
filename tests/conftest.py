"""Fixtures shared by the exchange and fetch tests."""

from __future__ import annotations

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
