"""CrossSectionNorm against torch's batch_norm applied to each timestamp group alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cryptonorm.learn.cross_section_norm import CrossSectionNorm


def _reference(x: torch.Tensor, groups: torch.Tensor, norm: CrossSectionNorm) -> torch.Tensor:
    parts = []
    for g in groups.unique():
        rows = torch.nonzero(groups == g).flatten()
        if len(rows) * (1 if x.dim() == 2 else x.shape[2]) > 1:
            y = F.batch_norm(x[rows], None, None, norm.weight, norm.bias, training=True, eps=norm.eps)
        else:  # one value per channel: centred to 0, so the output is the bias
            y = norm.bias.view((1, -1) + (1,) * (x.dim() - 2)).expand_as(x[rows]) + 0 * x[rows]
        parts.append((rows, y))
    out = torch.zeros_like(x)
    for rows, y in parts:
        out = out.index_copy(0, rows, y)
    return out


@pytest.mark.parametrize("shape", [(40, 6), (40, 6, 5)])
def test_matches_batch_norm_per_group_values_and_gradients(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    groups = torch.randint(0, 7, (shape[0],))
    groups[0] = 7  # a group of one sample
    norm = CrossSectionNorm(shape[1]).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    got = norm(x, groups)
    want = _reference(x, groups, norm)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    g1, = torch.autograd.grad(got.square().sum(), x)
    g2, = torch.autograd.grad(want.square().sum(), x)
    torch.testing.assert_close(g1, g2, rtol=1e-8, atol=1e-10)


def test_one_group_is_batch_norm_and_coins_of_another_time_do_not_matter() -> None:
    torch.manual_seed(1)
    x = torch.randn(12, 4, dtype=torch.float64)
    norm = CrossSectionNorm(4).double()
    torch.testing.assert_close(norm(x, torch.zeros(12, dtype=torch.long)),
                               F.batch_norm(x, None, None, norm.weight, norm.bias, training=True, eps=norm.eps))
    groups = torch.tensor([0] * 6 + [1] * 6)
    y = x.clone()
    y[6:] += 100.0  # another timestamp's coins change: the first timestamp's output does not
    torch.testing.assert_close(norm(x, groups)[:6], norm(y, groups)[:6])
