"""Trading: positions to returns after costs (simulation), performance and forecast metrics (pure),
baselines. No torch.
"""
