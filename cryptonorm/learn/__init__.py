"""Learning: norms, models, recurrent cells, the training loop, checkpoints, the device.
The only layer that imports torch for training."""
