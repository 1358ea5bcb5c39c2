"""What is neither training nor trading: statistical tests, the comparison engine, the metric registry,
forecast and volatility metrics (cross-sectional IC metrics of a universe: ic.py), forecasting baselines
(HAR, EWMA, GARCH, persistence). Pure numpy/pandas/scipy, below learn, trade and features.
"""
