"""The grid keys a comparison pairs and groups on: dotted config paths as they appear in a sweep's results
frame (one column per grid key). One home: sweep, claims and the comparison engine import them from here."""

from __future__ import annotations

NORM_KEY = "model.norm"
KIND_KEY = "model.kind"
SEED_KEY = "seed"
BATCH_KEY = "train.batch_size"
