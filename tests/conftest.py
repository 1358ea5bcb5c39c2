"""Fixtures shared by the exchange and fetch tests."""

from __future__ import annotations

import pytest

from cryptonorm.data.exchange import Retry


@pytest.fixture
def sleeps() -> list[float]:
    """The backoff waits a test's Retry asked for, in order."""
    return []


@pytest.fixture
def retry(sleeps: list[float]) -> Retry:
    return Retry(sleep=sleeps.append)  # backoff recorded, not slept
