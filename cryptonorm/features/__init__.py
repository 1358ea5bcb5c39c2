"""Features and samples: indicators (pure), labels, splits with an embargo, scaling, the look-ahead
audit. No torch.
"""
