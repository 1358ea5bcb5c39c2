"""The article study (`cryptonorm study`): claim files (spec), the per-cell frame, verdicts, the run and the
markdown/HTML write-up. Runs its sweeps through cryptonorm.sweeps; every statistic is cryptonorm.evaluate's.
"""
