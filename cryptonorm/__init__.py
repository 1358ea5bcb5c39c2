"""cryptonorm: deep-learning forecasters on crypto markets with a switchable normalization layer."""

__version__ = "0.1.0"
