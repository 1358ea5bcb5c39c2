"""kind gru: stacked GRU layers (Cho et al. 2014) with `model.norm` between them, like the LSTM.

Everything but the recurrent layer is the LSTM's (lstm.py): the norm on each layer's (B, T, H) output
(SeqNorm: batch norms over batch x time, layer/rms per step, group/instance over time), weight norm on both
weight matrices for norm weight, dropout, and a Linear head on the last step. With norm none one layer is
exactly torch.nn.GRU (tests/test_zoo.py).
"""

from __future__ import annotations

from torch import nn

from cryptonorm.learn.models.lstm import LSTM, _RecomputedWeights


class _RecomputedWeightsGRU(_RecomputedWeights, nn.GRU):
    pass


class GRU(LSTM):
    """Stacked GRU layers (one per width in `hidden`), the norm between layers, a Linear head."""

    rnn_cls = nn.GRU
    recomputed_cls = _RecomputedWeightsGRU
