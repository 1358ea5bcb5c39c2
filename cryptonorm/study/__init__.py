"""The normalization study: sweep files, executors (process pool, Ray), results, statistics (pure),
summaries and plots.
"""
