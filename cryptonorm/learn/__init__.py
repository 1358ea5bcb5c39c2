"""Learning: norms, models, recurrent cells, the training loop, checkpoints, the device.
The layer that imports torch.
"""
