"""The only module that talks to ccxt: opening an exchange, paged download, retry, error translation.

`open_source` returns either a ccxt exchange or the offline `SyntheticExchange`; both answer
`load_markets()` and `fetch_ohlcv(symbol, timeframe, since, limit)`, so `download` serves both.
ccxt's exceptions are translated where they arrive: network errors, time-outs and rate limits become
`TransientExchangeError` (retried with bounded exponential backoff, or after the wait a rate-limit answer's
Retry-After header asks for), everything else `ExchangeError`.
"""

from __future__ import annotations

import datetime
import email.utils
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol
from urllib.parse import quote, quote_plus

from cryptonorm.config import DataConfig
from cryptonorm.errors import ConfigError, ExchangeError, TransientExchangeError
from cryptonorm.text import close_matches, did_you_mean
from cryptonorm.timeframes import timeframe_ms


class Source(Protocol):
    id: str

    def load_markets(self) -> dict[str, Any]: ...

    def fetch_ohlcv(self, symbol: str, timeframe: str = ..., since: int | None = ...,
                    limit: int | None = ..., params: dict[str, Any] = ...) -> list[list[float]]: ...

    def milliseconds(self) -> int: ...


@dataclass(frozen=True)
class Retry:
    """Bounded exponential backoff for transient faults."""

    attempts: int = 6  # tries per request, the first included
    base: float = 0.5  # seconds before the 2nd try; doubles each time
    cap: float = 30.0  # longest single wait of the backoff schedule
    # A rate-limit answer (HTTP 429, 418) with a Retry-After header is waited out as asked, up to this long;
    # a longer ask (an IP ban: Binance's 418 bans last minutes to days, longer for clients that keep asking)
    # ends the fetch with a line saying when to come back, rather than more requests.
    longest_asked: float = 300.0
    sleep: Callable[[float], None] = time.sleep
    notify: Callable[[str], None] | None = None  # told of every retry ("attempt n of m failed, waiting s")


def _secrets_from_env(exchange_id: str) -> dict[str, str]:
    """API credentials only from the environment: CRYPTONORM_<EXCHANGE>_API_KEY / _SECRET / _PASSWORD."""
    prefix = f"CRYPTONORM_{exchange_id.upper()}_"
    out = {}
    for env, key in (("API_KEY", "apiKey"), ("SECRET", "secret"), ("PASSWORD", "password")):
        if os.environ.get(prefix + env):
            out[key] = os.environ[prefix + env]
    return out


_SECRET_ENV = re.compile(r"^CRYPTONORM_[A-Z0-9_]+_(API_KEY|SECRET|PASSWORD)$")


def redact(text: str) -> str:
    """`text` with every credential from the environment replaced by '***' (as is, URL-encoded or JSON-escaped).

    Exchanges echo keys in error bodies and ccxt puts request URLs in its messages; what we show or store
    must never carry them.
    """
    values = {v for k, v in os.environ.items() if v and _SECRET_ENV.match(k)}
    forms = {f for v in values for f in (v, quote(v, safe=""), quote_plus(v, safe=""), json.dumps(v)[1:-1])}
    for form in sorted(forms, key=len, reverse=True):  # longest first: a secret that contains another one
        text = text.replace(form, "***")
    return text


def check_exchange_id(exchange: str) -> None:
    """ConfigError unless `exchange` is 'synthetic' or a ccxt exchange id (imports ccxt, no network)."""
    if exchange == "synthetic":
        return
    import ccxt

    if exchange not in ccxt.exchanges:
        hint = did_you_mean(exchange, ccxt.exchanges, n=3, quote=False)
        hint += " " if hint else ""
        raise ConfigError(f"data.exchange: unknown exchange {exchange!r}; {hint}"
                          "use a ccxt exchange id (see ccxt.exchanges) or 'synthetic'")


def open_source(data: DataConfig) -> Source:
    """The exchange named by `data.exchange`, configured by `data.exchange_options` (+ env secrets)."""
    if data.exchange == "synthetic":
        from cryptonorm.data.synthetic import SyntheticExchange

        return SyntheticExchange(data.synthetic)
    import ccxt

    check_exchange_id(data.exchange)
    options: dict[str, Any] = {"enableRateLimit": True, "timeout": 30_000}
    options.update(data.exchange_options)
    options.update(_secrets_from_env(data.exchange))
    try:
        exchange = getattr(ccxt, data.exchange)(options)
    except Exception as e:  # ccxt validates options in the constructor
        raise ConfigError(f"data.exchange_options rejected by {data.exchange}: {_short(e)}") from e
    if not exchange.has.get("fetchOHLCV"):
        raise ExchangeError(f"{data.exchange} does not offer OHLCV candles through ccxt; choose another exchange")
    if data.market == "swap" and not (exchange.has.get("swap") and exchange.has.get("fetchFundingRateHistory")):
        raise ExchangeError(f"{data.exchange} offers no perpetual swaps with funding history through ccxt; use "
                            "data.market: spot, or an exchange with swaps (binance, bybit, okx, ...)")
    return exchange  # type: ignore[no-any-return]


def _translate(e: Exception, what: str, source_id: str) -> Exception:
    """ccxt exception -> ours (transient or not); other exceptions pass through unchanged."""
    try:
        import ccxt
    except ImportError:  # pragma: no cover - ccxt is a dependency
        return e
    # OperationFailed is ccxt's parent of NetworkError and BadResponse: "failed, may succeed if retried"
    # (binance maps -1001 "Internal error ... Please try again" and -1008 "server busy" to it)
    if isinstance(e, (ccxt.RateLimitExceeded, ccxt.DDoSProtection, ccxt.RequestTimeout,
                      ccxt.ExchangeNotAvailable, ccxt.NetworkError, ccxt.OperationFailed)):
        return TransientExchangeError(f"{source_id}: {what}: {type(e).__name__}: {_short(e)}")
    if isinstance(e, ccxt.BadSymbol):
        return ExchangeError(f"{source_id}: {what}: bad symbol: {_short(e)}")
    if isinstance(e, ccxt.AuthenticationError):
        return ExchangeError(f"{source_id}: {what}: authentication failed; check "
                             f"CRYPTONORM_{source_id.upper()}_API_KEY / _SECRET in the environment")
    if isinstance(e, ccxt.BaseError):
        return ExchangeError(f"{source_id}: {what}: {type(e).__name__}: {_short(e)}")
    return e


def _short(e: Exception, limit: int = 200) -> str:
    text = redact(" ".join(str(e).split()))
    return text if len(text) <= limit else text[:limit] + "..."


def call(source: Source, what: str, fn: Callable[[], Any], retry: Retry = Retry()) -> Any:
    """Run one exchange request, retrying transient faults with bounded exponential backoff."""
    for attempt in range(1, retry.attempts + 1):
        try:
            return fn()
        except Exception as raw:
            e = _translate(raw, what, source.id)
            if not isinstance(e, TransientExchangeError):
                if e is raw:
                    if redact(str(raw)) != str(raw):  # not ccxt's, and it carries a credential: not shown
                        raise ExchangeError(f"{source.id}: {what}: {type(raw).__name__}: {_short(raw)}") from raw
                    raise
                raise e from raw
            if attempt == retry.attempts:
                raise TransientExchangeError(f"{e} (gave up after {retry.attempts} tries; check the network "
                                             "or raise data.exchange_options.timeout)") from raw
            wait = min(retry.cap, retry.base * 2 ** (attempt - 1))
            asked = _retry_after(source, raw)
            if asked is not None and asked > retry.longest_asked:
                raise TransientExchangeError(f"{e}; the exchange asks for no request in the next {asked:g} s "
                                             "(Retry-After): run the fetch again after that; what was fetched "
                                             "is kept") from raw
            if asked is not None and asked > wait:
                wait = asked
            if retry.notify is not None:
                retry.notify(f"{e}; attempt {attempt} of {retry.attempts} failed, retrying in {wait:g} s")
            retry.sleep(wait)
    raise AssertionError("unreachable")


def _retry_after(source: Source, raw: Exception) -> float | None:
    """Seconds the exchange asked to wait (the Retry-After header, seconds or an HTTP date) when `raw` is a
    rate-limit answer; None otherwise. Only then: after a network fault the last headers are an older
    response's."""
    import ccxt

    if not isinstance(raw, (ccxt.RateLimitExceeded, ccxt.DDoSProtection)):
        return None
    headers = getattr(source, "last_response_headers", None) or {}
    value = next((str(v).strip() for k, v in headers.items() if str(k).lower() == "retry-after"), None)
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # unreadable: the backoff schedule applies
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())


def check_symbol(source: Source, symbol: str, timeframe: str, retry: Retry = Retry()) -> None:
    """Fail at once, naming close matches, if the exchange lacks the market or the timeframe."""
    markets = call(source, "load markets", source.load_markets, retry)
    if ":" in symbol and symbol not in markets and not any(":" in m for m in markets):
        raise ExchangeError(f"{source.id} lists no perpetual swap markets (no BASE/QUOTE:SETTLE symbol); "
                            f"{symbol!r} needs an exchange with swaps, or data.market: spot")
    if symbol not in markets:
        close = close_matches(symbol, markets, n=3, cutoff=0.5)
        if close:
            hint = f"close matches: {', '.join(close)}"
        elif len(markets) <= 20:  # a short list (the synthetic market): name them all
            hint = f"choose one of {', '.join(markets)}"
        else:
            hint = f"it lists {len(markets)} markets; check the spelling (BASE/QUOTE, e.g. BTC/USDT)"
        raise ExchangeError(f"{source.id} has no market {symbol!r}; {hint}")
    timeframes = getattr(source, "timeframes", None)
    if timeframes and timeframe not in timeframes:
        raise ExchangeError(f"{source.id} has no timeframe {timeframe!r}; it offers {', '.join(timeframes)}")


def page_limit(source: Source, market: str = "spot") -> int:
    """Candles per request: the exchange's own maximum for the market type where ccxt knows it, else 1000."""
    limit = getattr(source, "page_limit", None)
    if isinstance(limit, int) and limit > 0:
        return limit
    features = getattr(source, "features", None) or {}
    try:
        spot = features.get(market) or {}
        if market == "swap":
            spot = spot.get("linear") or {}
        n = (spot.get("fetchOHLCV") or {}).get("limit")
        if isinstance(n, int) and n > 0:
            return n
    except AttributeError:
        pass
    return 1000


def pages(source: Source, symbol: str, timeframe: str, since: int, until: int | None,
          retry: Retry = Retry()) -> Iterator[list[list[float]]]:
    """Yield pages of closed candles in [since, until), advancing by the last timestamp received.

    Stops at `until`, at the last closed candle, on an empty page, or on a page that brings nothing
    newer than the one before (so a misbehaving exchange can never make it loop forever).
    """
    step = timeframe_ms(timeframe)
    limit = page_limit(source, "swap" if ":" in symbol else "spot")
    cursor = since
    while True:
        now = source.milliseconds()
        closed_end = (now // step) * step  # candles opening at or after this are still forming
        end = closed_end if until is None else min(until, closed_end)
        if cursor >= end:
            return
        raw = call(source, f"fetch {symbol} {timeframe} candles",
                   partial(_fetch_page, source, symbol, timeframe, cursor, limit), retry)
        rows = [r for r in raw or [] if _valid_row(r) and cursor <= r[0] < end]
        if not rows:  # empty, or only candles we already have: the exchange has nothing newer
            return
        yield rows
        cursor = max(int(r[0]) for r in rows) + step  # strictly increases: rows are all >= cursor


def _fetch_page(source: Source, symbol: str, timeframe: str, since: int, limit: int) -> list[list[float]]:
    """One fetch_ohlcv call; an empty result parsed from a body that is not JSON is a transient fault.

    ccxt does not raise on an HTTP 200 whose body is cut short or is an HTML page (a proxy, a captive
    portal): it parses it to [], which would look like "no newer candles" and end the download early.
    """
    rows = source.fetch_ohlcv(symbol, timeframe, since, limit)
    if not rows:
        text = getattr(source, "last_http_response", None)  # ccxt keeps the last body (enableLastHttpResponse)
        if isinstance(text, str):
            try:
                json.loads(text)
            except ValueError:
                head = redact(" ".join(text.split()))[:80]
                raise TransientExchangeError(f"{source.id}: fetch {symbol} {timeframe} candles: the answer is "
                                             f"not JSON: {head!r}") from None
    return rows


def _valid_row(r: Any) -> bool:
    return isinstance(r, (list, tuple)) and len(r) >= 6 and isinstance(r[0], (int, float)) and r[0] == r[0]


FUNDING_PAGE = 1000  # funding rates per request (Binance USD-M: at most 1000)


def funding_pages(source: Source, symbol: str, since: int, until: int | None,
                  retry: Retry = Retry()) -> Iterator[list[tuple[int, float]]]:
    """Yield pages of (funding time ms, rate) in [since, until), advancing past the last time received.

    Stops at `until`, at the exchange's clock, on an empty page, or on a page with nothing newer (never loops).
    """
    cursor = since
    while True:
        end = source.milliseconds() if until is None else min(until, source.milliseconds())
        if cursor >= end:
            return
        fetch = getattr(source, "fetch_funding_rate_history", None)
        if fetch is None:
            raise ExchangeError(f"{source.id} offers no funding rate history; set data.funding_file")
        raw = call(source, f"fetch {symbol} funding rates",
                   partial(fetch, symbol, cursor, FUNDING_PAGE, {"until": end - 1}), retry)
        rows = []
        for r in raw or []:
            ts, rate = r.get("timestamp"), r.get("fundingRate")
            if isinstance(ts, (int, float)) and isinstance(rate, (int, float)) and cursor <= ts < end:
                rows.append((int(ts), float(rate)))
        if not rows:
            return
        yield sorted(rows)
        cursor = max(ts for ts, _ in rows) + 1
