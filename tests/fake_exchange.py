"""A local HTTP server that speaks Binance's public spot and USD-M futures REST APIs, for real ccxt in tests.

Only what ccxt's `binance` class calls for `load_markets()` and `fetch_ohlcv()` on spot markets, and for
`load_markets()`, `fetch_ohlcv()` and `fetch_funding_rate_history()` on USD-M perpetual swaps:

    GET /api/v3/exchangeInfo   the markets (BTCUSDT, ETHUSDT, BNBUSDT, ETHBTC) with Binance's filters
    GET /api/v3/klines         symbol, interval, startTime, endTime, limit (default 500, at most 1000):
                               candles with startTime <= openTime <= endTime, oldest first, never past the
                               server's clock; the still-forming candle is served with partial values
                               (o = h = l = c = open, half the volume), as a live exchange does
    GET /api/v3/ping, /api/v3/time
    GET /fapi/v1/exchangeInfo  the perpetuals (BTCUSDT, ETHUSDT; contractType PERPETUAL, marginAsset USDT)
    GET /fapi/v1/klines        as /api/v3/klines on the swap's own candles (add_candles(..., market="swap")),
                               limit at most 1500
    GET /fapi/v1/fundingRate   symbol, startTime, endTime (both inclusive), limit (default 100, at most 1000):
                               {"symbol", "fundingTime", "fundingRate", "markPrice"}, oldest first; without
                               startTime the most recent `limit`; never past the server's clock

Errors are answered like Binance: HTTP 400 with {"code": -1121, "msg": "Invalid symbol."} and friends.
Any other path (e.g. a private or futures endpoint ccxt should not call) gets a 404 and is recorded in
`FakeBinance.unexpected`, so a test can assert ccxt made no other calls.

Point ccxt at it with `exchange_options(server)` (the dict goes into `data.exchange_options`).

Candles come from an in-memory data set per (symbol id, interval) (`add_candles`); the server's clock is
`now_ms` (None = the wall clock). Faults for the next requests are scripted with `inject(...)`, or drawn at
random with `chaos(...)`; `counts` holds requests per endpoint.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd

from cryptonorm.data.candles import COLUMNS
from cryptonorm.data.importers import read_user_file
from cryptonorm.timeframes import timeframe_ms

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"  # /work/shared/data next to the repo

MAX_LIMIT = 1000  # Binance spot: klines limit at most 1000 (default 500)
FAPI_MAX_LIMIT = 1500  # USD-M futures: klines limit at most 1500
FUNDING_MAX_LIMIT = 1000  # USD-M futures: fundingRate limit at most 1000 (default 100)
INTERVALS = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w")

# Fault kinds understood by `inject` / `chaos`:
#   "429"        HTTP 429 + Retry-After, {"code": -1003, ...}           ccxt: DDoSProtection (transient)
#   "418"        HTTP 418 (IP auto-banned) + Retry-After                 ccxt: DDoSProtection (transient)
#   "500"        HTTP 500, {"code": -1001, "msg": "Internal error..."}   ccxt: OperationFailed
#   "502"        HTTP 502 with an HTML body from the "load balancer"     ccxt: ExchangeNotAvailable
#   "503"        HTTP 503, text "Service Unavailable."                   ccxt: ExchangeNotAvailable
#   "slow"       the right answer, but only after `delay` seconds        ccxt: RequestTimeout if past timeout
#   "reset"      the connection is closed with no answer                 ccxt: NetworkError
#   "truncated"  Content-Length of the full body, half of it sent, closed ccxt: NetworkError
#   "malformed"  HTTP 200 and a JSON body cut in the middle (consistent Content-Length)
#   "html"       HTTP 200 and an HTML page (a captive portal / CDN error page)
#   "empty"      HTTP 200 and [] although candles exist
#   "duplicate"  the right candles, each sent twice
#   "shuffle"    the right candles in random order
#   "repeat"     the body of the previous klines answer again
FAULTS = ("429", "418", "500", "502", "503", "slow", "reset", "truncated", "malformed", "html", "empty",
          "duplicate", "shuffle", "repeat")


def _filters(tick: str, step: str, min_notional: str) -> list[dict[str, Any]]:
    return [
        {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "1000000.00000000", "tickSize": tick},
        {"filterType": "LOT_SIZE", "minQty": step, "maxQty": "9000.00000000", "stepSize": step},
        {"filterType": "ICEBERG_PARTS", "limit": 10},
        {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000", "maxQty": "100.00000000",
         "stepSize": "0.00000000"},
        {"filterType": "TRAILING_DELTA", "minTrailingAboveDelta": 10, "maxTrailingAboveDelta": 2000,
         "minTrailingBelowDelta": 10, "maxTrailingBelowDelta": 2000},
        {"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": "5", "bidMultiplierDown": "0.2",
         "askMultiplierUp": "5", "askMultiplierDown": "0.2", "avgPriceMins": 5},
        {"filterType": "NOTIONAL", "minNotional": min_notional, "applyMinToMarket": True,
         "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
        {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
        {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
    ]


def _symbol(base: str, quote: str, tick: str, step: str, min_notional: str) -> dict[str, Any]:
    """One entry of exchangeInfo's "symbols", as Binance sends it."""
    return {
        "symbol": base + quote, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8,
        "quoteAsset": quote, "quotePrecision": 8, "quoteAssetPrecision": 8, "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT",
                       "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True, "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True, "cancelReplaceAllowed": True, "amendAllowed": True,
        "pegInstructionsAllowed": True, "isSpotTradingAllowed": True, "isMarginTradingAllowed": True,
        "filters": _filters(tick, step, min_notional), "permissions": [], "permissionSets": [["SPOT", "MARGIN"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH", "DECREMENT"],
    }


def _perpetual(base: str, tick: str, step: str) -> dict[str, Any]:
    """One entry of /fapi/v1/exchangeInfo's "symbols" (a USDT-margined perpetual), as Binance sends it."""
    return {
        "symbol": base + "USDT", "pair": base + "USDT", "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
        "onboardDate": 1569398400000, "status": "TRADING", "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000", "baseAsset": base, "quoteAsset": "USDT", "marginAsset": "USDT",
        "pricePrecision": 2, "quantityPrecision": 3, "baseAssetPrecision": 8, "quotePrecision": 8,
        "underlyingType": "COIN", "underlyingSubType": [], "triggerProtect": "0.0500",
        "liquidationFee": "0.012500", "marketTakeBound": "0.05", "maxMoveOrderLimit": 10000,
        "filters": [
            {"filterType": "PRICE_FILTER", "maxPrice": "4529764", "minPrice": "556.80", "tickSize": tick},
            {"filterType": "LOT_SIZE", "maxQty": "1000", "minQty": step, "stepSize": step},
            {"filterType": "MARKET_LOT_SIZE", "maxQty": "120", "minQty": step, "stepSize": step},
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
            {"filterType": "MIN_NOTIONAL", "notional": "100"},
            {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500",
             "multiplierDecimal": "4"},
        ],
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                       "TRAILING_STOP_MARKET"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
    }


PERPETUALS = [_perpetual("BTC", "0.10", "0.001"), _perpetual("ETH", "0.01", "0.001")]

SYMBOLS = [
    _symbol("BTC", "USDT", "0.01000000", "0.00001000", "5.00000000"),
    _symbol("ETH", "USDT", "0.01000000", "0.00010000", "5.00000000"),
    _symbol("BNB", "USDT", "0.01000000", "0.00100000", "5.00000000"),
    _symbol("ETH", "BTC", "0.00001000", "0.00010000", "0.00010000"),
]


@dataclass
class Fault:
    """One scripted misbehaviour (see FAULTS)."""

    kind: str
    delay: float = 2.0  # seconds, for "slow"
    retry_after: int = 1  # seconds, the Retry-After header of 429/418


@dataclass
class Request:
    """One request as the server saw it."""

    endpoint: str  # "klines", "exchangeInfo", ... or the raw path of an unexpected one
    params: dict[str, str]
    fault: str | None = None


@dataclass
class _Series:
    ts: np.ndarray  # (N,) int64 open times, sorted, unique
    ohlcv: np.ndarray  # (N, 5) float64
    step: int  # ms


def _num(x: float) -> str:
    """Binance's decimal strings ("4261.48000000"), exactly round-tripping to the same float."""
    s = f"{x:.8f}"
    return s if float(s) == x else repr(float(x))


def _kline(t: int, o: float, h: float, low: float, c: float, v: float, step: int) -> str:
    """[openTime, "open", "high", "low", "close", "volume", closeTime, "quoteVolume", trades,
    "takerBuyBase", "takerBuyQuote", "0"], pre-encoded as JSON."""
    return (f'[{t},"{_num(o)}","{_num(h)}","{_num(low)}","{_num(c)}","{_num(v)}",{t + step - 1},'
            f'"{v * c:.8f}",{int(v * 7) + 1},"{v / 2:.8f}","{v * c / 2:.8f}","0"]')


@dataclass
class FakeBinance:
    """The state behind the server: markets, candles, clock, faults, request log."""

    now_ms: int | None = None  # the exchange's clock; None = wall clock
    delay: float = 0.0  # seconds added to every klines answer (a slow exchange)
    max_limit: int = MAX_LIMIT  # candles per klines answer at most (lower it for many small pages)
    counts: Counter[str] = field(default_factory=Counter)
    log: list[Request] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    symbols: list[dict[str, Any]] = field(default_factory=lambda: list(SYMBOLS))
    perpetuals: list[dict[str, Any]] = field(default_factory=lambda: list(PERPETUALS))
    _series: dict[tuple[str, str], _Series] = field(default_factory=dict)  # (symbol id or "fapi:" + id, interval)
    _funding: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # id -> (times, rates)
    _faults: deque[Fault | None] = field(default_factory=deque)  # None: answer this one correctly
    _chaos: tuple[float, tuple[str, ...], random.Random, float] | None = None
    _last_klines: bytes = b"[]"
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # ------------------------------------------------------------ set-up
    def add_candles(self, symbol_id: str, interval: str, candles: pd.DataFrame, market: str = "spot") -> None:
        """Serve `candles` (a candle frame: COLUMNS) for symbol id (e.g. "BTCUSDT") and interval, on the spot
        API or (market="swap") on the USD-M futures API."""
        listed = self.symbols if market == "spot" else self.perpetuals
        if not any(s["symbol"] == symbol_id for s in listed):
            raise ValueError(f"{symbol_id} is not in the {market} exchangeInfo")
        df = candles[COLUMNS].sort_values("timestamp")
        ts = df["timestamp"].to_numpy("int64")
        assert len(np.unique(ts)) == len(ts), "served candles must have unique timestamps"
        key = symbol_id if market == "spot" else f"fapi:{symbol_id}"
        self._series[(key, interval)] = _Series(
            ts, np.ascontiguousarray(df[COLUMNS[1:]].to_numpy("float64")), timeframe_ms(interval))

    def add_funding(self, symbol_id: str, funding: pd.DataFrame) -> None:
        """Serve funding rates (columns timestamp, rate) of a perpetual on /fapi/v1/fundingRate."""
        if not any(s["symbol"] == symbol_id for s in self.perpetuals):
            raise ValueError(f"{symbol_id} is not a perpetual in /fapi/v1/exchangeInfo")
        df = funding.sort_values("timestamp")
        self._funding[symbol_id] = (df["timestamp"].to_numpy("int64"), df["rate"].to_numpy("float64"))

    def served_funding(self, symbol_id: str, until: int | None = None) -> pd.DataFrame:
        """The funding rates a correct download up to `until` (default: the clock) must store, exactly."""
        ts, rates = self._funding[symbol_id]
        keep = ts <= (self.now() if until is None else until)
        return pd.DataFrame({"timestamp": ts[keep], "rate": rates[keep]})

    def now(self) -> int:
        return self.now_ms if self.now_ms is not None else time.time_ns() // 1_000_000

    def served(self, symbol_id: str, interval: str) -> pd.DataFrame:
        """Every candle of the data set (closed or not, past or future), as a candle frame."""
        s = self._series[(symbol_id, interval)]
        df = pd.DataFrame(s.ohlcv, columns=COLUMNS[1:])
        df.insert(0, "timestamp", s.ts)
        return df

    def expected(self, symbol_id: str, interval: str, since: int | None = None, until: int | None = None,
                 now: int | None = None) -> pd.DataFrame:
        """The closed candles a correct download of [since, until) must store, exactly."""
        s = self._series[(symbol_id, interval)]
        now = self.now() if now is None else now
        keep = s.ts + s.step <= now
        if since is not None:
            keep &= s.ts >= since
        if until is not None:
            keep &= s.ts < until
        return self.served(symbol_id, interval)[keep].reset_index(drop=True)

    # ------------------------------------------------------------ faults
    def inject(self, *kinds: str, times: int = 1, after: int = 0, delay: float = 2.0,
               retry_after: int = 1) -> None:
        """Queue faults for the klines requests to come: inject("429", "500"), inject("slow", times=3),
        inject("empty", after=2) (two good answers first)."""
        self._faults.extend([None] * after)
        for _ in range(times):
            for kind in kinds:
                if kind not in FAULTS:
                    raise ValueError(f"unknown fault {kind!r}; choose from {', '.join(FAULTS)}")
                self._faults.append(Fault(kind, delay, retry_after))

    def chaos(self, rate: float, kinds: tuple[str, ...] = ("429", "500", "503", "slow"), seed: int = 0,
              delay: float = 2.0) -> None:
        """Fail a fraction `rate` of klines requests at random (seeded) with one of `kinds`."""
        for kind in kinds:
            if kind not in FAULTS:
                raise ValueError(f"unknown fault {kind!r}")
        self._chaos = (rate, kinds, random.Random(seed), delay) if rate > 0 else None

    def pending_faults(self) -> int:
        return sum(f is not None for f in self._faults)

    def _next_fault(self) -> Fault | None:
        with self._lock:
            if self._faults:
                return self._faults.popleft()
            if self._chaos is not None:
                rate, kinds, rng, delay = self._chaos
                if rng.random() < rate:
                    return Fault(rng.choice(kinds), delay)
        return None

    # ------------------------------------------------------------ endpoints
    def exchange_info(self) -> dict[str, Any]:
        return {
            "timezone": "UTC", "serverTime": self.now(),
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
            ],
            "exchangeFilters": [], "symbols": self.symbols,
        }

    def futures_info(self) -> dict[str, Any]:
        return {"timezone": "UTC", "serverTime": self.now(), "futuresType": "U_MARGINED",
                "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                                "limit": 2400}],
                "exchangeFilters": [], "assets": [{"asset": "USDT", "marginAvailable": True}],
                "symbols": self.perpetuals}

    def funding_rates(self, q: dict[str, str]) -> list[dict[str, Any]]:
        symbol = q.get("symbol", "")
        if not any(s["symbol"] == symbol for s in self.perpetuals):
            raise _ApiError(400, -1121, "Invalid symbol.")
        try:
            limit = int(q.get("limit", "100"))
            start = int(q["startTime"]) if "startTime" in q else None
            end = int(q["endTime"]) if "endTime" in q else None
        except ValueError:
            raise _ApiError(400, -1100, "Illegal characters found in a parameter.") from None
        if not 1 <= limit <= FUNDING_MAX_LIMIT:
            raise _ApiError(400, -1130, "Data sent for parameter 'limit' is not valid.")
        ts, rates = self._funding.get(symbol, (np.zeros(0, "int64"), np.zeros(0)))
        hi = int(np.searchsorted(ts, self.now(), side="right"))
        if end is not None:
            hi = min(hi, int(np.searchsorted(ts, end, side="right")))
        if start is not None:
            lo = int(np.searchsorted(ts, start, side="left"))
            hi = min(hi, lo + limit)
        else:
            lo = max(0, hi - limit)
        return [{"symbol": symbol, "fundingTime": int(ts[i]), "fundingRate": f"{rates[i]:.8f}",
                 "markPrice": "0.00000000"} for i in range(lo, max(lo, hi))]

    def klines(self, q: dict[str, str], futures: bool = False) -> tuple[int, list[str]]:
        """(HTTP status, pre-encoded kline rows) or raises _ApiError."""
        symbol = q.get("symbol")
        if not symbol:
            raise _ApiError(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        if not any(s["symbol"] == symbol for s in (self.perpetuals if futures else self.symbols)):
            raise _ApiError(400, -1121, "Invalid symbol.")
        interval = q.get("interval", "")
        if interval not in INTERVALS:
            raise _ApiError(400, -1120, "Invalid interval.")
        try:
            limit = int(q.get("limit", "500"))
            start = int(q["startTime"]) if "startTime" in q else None
            end = int(q["endTime"]) if "endTime" in q else None
        except ValueError:
            raise _ApiError(400, -1100, "Illegal characters found in a parameter.") from None
        if not 1 <= limit <= (FAPI_MAX_LIMIT if futures else MAX_LIMIT):
            raise _ApiError(400, -1130, "Data sent for parameter 'limit' is not valid.")
        limit = min(limit, self.max_limit)
        series = self._series.get((f"fapi:{symbol}" if futures else symbol, interval))
        if series is None:
            return 200, []
        now = self.now()
        hi = int(np.searchsorted(series.ts, now, side="right"))  # nothing opening after "now" exists yet
        if end is not None:
            hi = min(hi, int(np.searchsorted(series.ts, end, side="right")))
        if start is not None:
            lo = int(np.searchsorted(series.ts, start, side="left"))
            hi = min(hi, lo + limit)
        else:  # no startTime: the most recent `limit` candles up to endTime / now
            lo = max(0, hi - limit)
        rows = []
        for i in range(lo, max(lo, hi)):
            t = int(series.ts[i])
            o, h, low, c, v = series.ohlcv[i].tolist()
            if t + series.step > now:  # the forming candle: only its open is known yet
                h = low = c = o
                v = v / 2
            rows.append(_kline(t, o, h, low, c, v, series.step))
        return 200, rows

    # ------------------------------------------------------------ the server
    def handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        path = parts.path
        if path.startswith("/api/v3/"):
            endpoint = path.removeprefix("/api/v3/")
        elif path.startswith("/fapi/v1/"):
            endpoint = "fapi/" + path.removeprefix("/fapi/v1/")
        else:
            endpoint = path
        known = endpoint in ("klines", "exchangeInfo", "ping", "time", "fapi/klines", "fapi/exchangeInfo",
                             "fapi/fundingRate", "fapi/ping", "fapi/time")
        fault = self._next_fault() if endpoint in ("klines", "fapi/klines", "fapi/fundingRate") else None
        with self._lock:
            self.counts[endpoint if known else "unexpected"] += 1
            self.log.append(Request(endpoint, q, fault.kind if fault else None))
            if not known:
                self.unexpected.append(h.path)
        if not known:
            return _send_json(h, 404, {"code": -1, "msg": f"fake binance: no endpoint {path}"})
        if endpoint in ("ping", "fapi/ping"):
            return _send_json(h, 200, {})
        if endpoint in ("time", "fapi/time"):
            return _send_json(h, 200, {"serverTime": self.now()})
        if endpoint == "exchangeInfo":
            return _send_json(h, 200, self.exchange_info())
        if endpoint == "fapi/exchangeInfo":
            return _send_json(h, 200, self.futures_info())
        if self.delay:
            time.sleep(self.delay)
        if fault is not None and _early_fault(h, fault):
            return
        if endpoint == "fapi/fundingRate":
            try:
                rates = self.funding_rates(q)
            except _ApiError as e:
                return _send_json(h, e.status, {"code": e.code, "msg": e.msg})
            if fault is not None and fault.kind == "slow":
                time.sleep(fault.delay)
            body = json.dumps([] if fault is not None and fault.kind == "empty" else rates).encode()
            if fault is not None and fault.kind in ("malformed", "truncated"):
                return _send_bytes(h, 200, body, cut=max(1, len(body) // 2))
            return _send_bytes(h, 200, body)
        try:
            status, rows = self.klines(q, futures=True) if endpoint == "fapi/klines" else self.klines(q)
        except _ApiError as e:
            return _send_json(h, e.status, {"code": e.code, "msg": e.msg})
        if fault is not None:
            if fault.kind == "slow":
                time.sleep(fault.delay)
            elif fault.kind == "empty":
                rows = []
            elif fault.kind == "duplicate":
                rows = [r for r in rows for _ in (0, 1)]
            elif fault.kind == "shuffle":
                rows = rows[:]
                random.Random(len(rows)).shuffle(rows)
        body = ("[" + ",".join(rows) + "]").encode()
        if fault is not None and fault.kind == "repeat":
            body = self._last_klines
        self._last_klines = body
        if fault is not None and fault.kind == "malformed":
            return _send_bytes(h, status, body[: max(1, len(body) // 2)])
        if fault is not None and fault.kind == "truncated":
            return _send_bytes(h, status, body, cut=max(1, len(body) // 2))
        _send_bytes(h, status, body)


class _ApiError(Exception):
    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


def _early_fault(h: BaseHTTPRequestHandler, f: Fault) -> bool:
    """Faults answered before looking at the request; True when the answer has been sent."""
    if f.kind in ("429", "418"):
        msg = ("Too much request weight used; current limit is 6000 request weight per 1 MINUTE. "
               "Please use WebSocket Streams for live updates to avoid polling the API.")
        if f.kind == "418":
            msg = "Way too much request weight used; IP banned until 1700000000000."
        _send_json(h, int(f.kind), {"code": -1003, "msg": msg}, {"Retry-After": str(f.retry_after)})
    elif f.kind == "500":
        _send_json(h, 500, {"code": -1001, "msg": "Internal error; unable to process your request. Please try again."})
    elif f.kind == "502":
        _send_bytes(h, 502, b"<html><head><title>502 Bad Gateway</title></head><body>Bad Gateway</body></html>",
                    content_type="text/html")
    elif f.kind == "503":
        _send_bytes(h, 503, b"Service Unavailable.", content_type="text/plain")
    elif f.kind == "html":
        _send_bytes(h, 200, b"<!DOCTYPE html><html><body>Checking your browser...</body></html>",
                    content_type="text/html")
    elif f.kind == "reset":
        h.close_connection = True
        with _quiet():
            h.connection.shutdown(socket.SHUT_RDWR)
    else:
        return False
    return True


class _quiet:
    """Swallow the errors of writing to a client that has gone (it timed out, or we cut it off)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, tp: type[BaseException] | None, *_: Any) -> bool:
        return tp is not None and issubclass(tp, OSError)


def _send_json(h: BaseHTTPRequestHandler, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
    _send_bytes(h, status, json.dumps(obj, separators=(",", ":")).encode(), headers=headers)


def _send_bytes(h: BaseHTTPRequestHandler, status: int, body: bytes, *, cut: int | None = None,
                content_type: str = "application/json;charset=UTF-8",
                headers: dict[str, str] | None = None) -> None:
    """Send a whole answer; with `cut`, announce all of it but send only `cut` bytes and hang up."""
    with _quiet():
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body if cut is None else body[:cut])
        h.wfile.flush()
        if cut is not None:
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as ccxt's requests session expects
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms delayed-ACK stall
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
        self.server.state.handle(self)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the access log
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a handler sleeping in a "slow" fault must not block shutdown

    def __init__(self, state: FakeBinance) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


@dataclass
class RunningServer:
    """A started server: `url` is http://127.0.0.1:PORT; `state` the FakeBinance behind it."""

    state: FakeBinance
    url: str
    _server: _Server
    _thread: threading.Thread

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start(state: FakeBinance | None = None) -> RunningServer:
    """Serve `state` on 127.0.0.1 at a free port, in a background thread."""
    state = state or FakeBinance()
    server = _Server(state)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="fake-binance", daemon=True)
    thread.start()
    return RunningServer(state, f"http://127.0.0.1:{server.server_port}", server, thread)


def serving(state: FakeBinance | None = None) -> Iterator[RunningServer]:
    """Generator for a pytest fixture: yields a running server, stops it afterwards."""
    running = start(state)
    try:
        yield running
    finally:
        running.stop()


_API_KEYS: list[str] | None = None


def exchange_options(url: str, *, timeout_ms: int = 2_000, strict: bool = True,
                     market: str = "spot") -> dict[str, Any]:
    """`data.exchange_options` that point ccxt's binance at the fake server.

    Only `urls.api.public` (+ fetchMarkets types = spot), or for market="swap" `urls.api.fapiPublic`
    (+ types = linear), is needed. With `strict`, every other API group of binance (sapi, dapiPublic, ...) is
    pointed at the server too, under its own prefix, so a call ccxt should not make lands in
    `FakeBinance.unexpected` instead of trying the real exchange.
    """
    api: dict[str, str] = ({"public": url + "/api/v3"} if market == "spot" else
                           {"fapiPublic": url + "/fapi/v1"})
    if strict:
        global _API_KEYS
        if _API_KEYS is None:
            import ccxt

            _API_KEYS = list(ccxt.binance().urls["api"])
        api = {k: f"{url}/unexpected/{k}" for k in _API_KEYS} | api
    return {
        "urls": {"api": api},
        "options": {"fetchMarkets": {"types": ["spot"] if market == "spot" else ["linear"]}},
        "enableRateLimit": False,  # nothing to protect on loopback; keeps tests fast
        "timeout": timeout_ms,
    }


# ---------------------------------------------------------------- data sets


def real_candles(name: str = "BTC_USDT-1h", rows: int | None = None, end: str | None = None) -> pd.DataFrame:
    """Real Binance candles from /work/shared/data (`name` without .csv.gz), the last `rows` before `end`."""
    timeframe = name.rsplit("-", 1)[1]
    df = read_user_file(DATA_DIR / f"{name}.csv.gz", timeframe)
    if end is not None:
        from cryptonorm.timeframes import parse_date

        df = df[df["timestamp"] < parse_date(end)]
    if rows is not None:
        df = df.iloc[-rows:]
    return df.reset_index(drop=True)


def synthetic_candles(start_ms: int, n: int, timeframe: str = "1m", seed: int = 0, price: float = 20_000.0,
                      gaps: int = 0) -> pd.DataFrame:
    """A seeded random-walk candle series (cents and 1e-6 volumes, so Binance's strings round-trip)."""
    rng = np.random.default_rng(seed)
    step = timeframe_ms(timeframe)
    ts = start_ms + step * np.arange(n, dtype="int64")
    if gaps:  # outages: drop a few short runs of bars, as the real 1h series has
        drop = np.zeros(n, dtype=bool)
        for s in rng.integers(1, max(2, n - 60), size=gaps):
            drop[s: s + int(rng.integers(1, 60))] = True
        ts = ts[~drop]
        n = len(ts)
    close = np.round(price * np.exp(np.cumsum(rng.normal(0, 0.0008, n))), 2)
    open_ = np.concatenate([[price], close[:-1]])
    wick = np.abs(rng.normal(0, 0.0004, (2, n))) * close
    high = np.round(np.maximum(open_, close) + wick[0], 2)
    low = np.round(np.minimum(open_, close) - wick[1], 2)
    volume = np.round(rng.gamma(2.0, 5.0, n), 6)
    return pd.DataFrame({"timestamp": ts, "open": open_, "high": high, "low": low, "close": close,
                         "volume": volume})
