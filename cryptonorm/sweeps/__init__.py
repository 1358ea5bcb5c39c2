"""The generic grid runner: sweep files (spec), one cell, executors (inline, process pool, Ray) behind one
interface, the run, results, the report data (`SweepReport`) and its writers (summary.md, plots, report.html).
"""
