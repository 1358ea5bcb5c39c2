"""Trading: positions to returns after costs (simulation), trades, performance and forecast metrics
(pure), baselines. No torch."""
