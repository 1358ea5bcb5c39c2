"""Evaluation: forecast metrics across a universe (ic.py)."""
