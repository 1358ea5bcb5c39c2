"""Dates and timeframes, the ground floor every layer shares: '1h' -> ms, ISO dates -> ms, ms -> text.

Bars are counted in milliseconds since the epoch (UTC), as ccxt does.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone

from cryptonorm.errors import DataError

TIMEFRAME_RE = re.compile(r"^(\d+)([smhdwMy])$")
_TF_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000,
               "M": 2_592_000_000, "y": 31_536_000_000}


def timeframe_ms(timeframe: str) -> int:
    """Length of one bar in milliseconds ('1h' -> 3_600_000), as ccxt's parse_timeframe."""
    m = TIMEFRAME_RE.match(timeframe)
    if not m or int(m.group(1)) < 1:
        raise DataError(f"timeframe {timeframe!r} is not valid; use e.g. 1m, 15m, 1h, 4h, 1d")
    return int(m.group(1)) * _TF_UNIT_MS[m.group(2)]


def bars_per_year(timeframe: str) -> float:
    """Crypto trades every day: 365 days a year (8,760 bars for 1h)."""
    return 365 * 86_400_000 / timeframe_ms(timeframe)


def parse_date(text: str) -> int:
    """ISO date or datetime (UTC unless it says otherwise) -> ms since the epoch."""
    s = str(text).strip()
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{s!r} is not an ISO date; write e.g. 2024-01-31 or 2024-01-31T12:00") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def format_ms(ms: int | float | None) -> str:
    """ms since the epoch -> 'YYYY-MM-DD HH:MM' (UTC)."""
    if ms is None or (isinstance(ms, float) and math.isnan(ms)):
        return "-"
    try:
        return datetime.fromtimestamp(int(ms) / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")
    except (ValueError, OverflowError, OSError):  # outside years 1..9999: still name it in an error message
        return f"{int(ms)} ms"
