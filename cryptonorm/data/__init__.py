"""The data layer: the candle frame, THE store (paths, lock, journal, merge, read), exchanges
(ccxt lives only in exchange.py), the synthetic market.
"""
