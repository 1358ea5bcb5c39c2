"""Text for people: "did you mean" hints and number formatting, one home for every layer's messages and tables."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import Any


def close_matches(given: str, choices: Iterable[str], n: int = 1, cutoff: float = 0.6) -> list[str]:
    """The choices closest to `given` (difflib's ratio >= cutoff), best first."""
    return difflib.get_close_matches(str(given), list(choices), n=n, cutoff=cutoff)


def did_you_mean(given: str, choices: Iterable[str], *, n: int = 1, cutoff: float = 0.6, prefix: str = "",
                 quote: bool = True) -> str:
    """"did you mean 'x'?" for the closest choices (each written as prefix + choice), or "" when none is close."""
    close = close_matches(given, choices, n=n, cutoff=cutoff)
    if not close:
        return ""
    shown = [repr(prefix + c) if quote else prefix + c for c in close]
    return f"did you mean {', '.join(shown)}?"


def fmt(value: Any, kind: str = "g4") -> str:
    """One table cell. Missing and NaN -> '-', inf -> 'inf'/'-inf'; otherwise by `kind`:
    pct (12.34%), spct (signed, +12.34%), int (1,234), num (1,234.57), num1 (1,234.6), num3 (0.123),
    g<d> (d significant digits, e.g. g4), p (a p-value: 0.012, or <0.001)."""
    if value is None or isinstance(value, str):
        return "-" if value is None else value
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v):
        return "-"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if kind == "pct":
        return f"{v * 100:,.2f}%"
    if kind == "spct":
        return f"{v:+.2%}"
    if kind == "int":
        return f"{int(v):,d}"
    if kind in ("num1", "days"):
        return f"{v:,.1f}"
    if kind == "num3":
        return f"{v:.3f}"
    if kind == "p":
        return "<0.001" if v < 0.001 else f"{v:.3f}"
    if kind.startswith("g") and kind[1:].isdigit():
        return f"{v:.{int(kind[1:])}g}"
    return f"{v:,.2f}"
