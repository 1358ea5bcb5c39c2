"""Rendering below the steps: matplotlib plots and rich tables (rich is imported only here and in
cli/).
"""
