"""The model families (issue 27) against independent code: torch's own modules, slow reference loops, the
papers' formulas and published patch counts. Training, inference and export of every kind: test_zoo_training.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from cryptonorm.config import ModelConfig, build_config
from cryptonorm.config.norm_facts import KINDS
from cryptonorm.learn.models import build_model
from cryptonorm.learn.models.dlinear import decompose
from cryptonorm.learn.models.patchtst import n_patches, patchify
from cryptonorm.learn.models.tcn import TCN
from cryptonorm.learn.models.transformer import Encoder, sinusoids

torch.set_num_threads(1)

TINY: dict[str, dict[str, Any]] = {  # sizes that train in well under a second on a few hundred windows
    "mlp": {"hidden": [16]}, "lstm": {"hidden": [8]}, "gru": {"hidden": [8]},
    "tcn": {"hidden": [8, 8, 8]},  # kernel 3: receptive field 1 + 2*2*(1+2+4) = 29 >= window 16
    "transformer": {"transformer": {"d_model": 8, "heads": 2, "layers": 1, "ff": 16}},
    "patchtst": {"patchtst": {"d_model": 8, "heads": 2, "layers": 1, "ff": 16, "patch_len": 4, "stride": 4}},
    "tsmixer": {"tsmixer": {"blocks": 1, "ff": 8}}, "dlinear": {"dlinear": {"kernel": 5}},
}

NETWORKS = {kind: facts for kind, facts in KINDS.items() if facts.network}  # ridge/LightGBM: tests/test_tabular.py


def tiny(kind: str, norm: str | None = None, **extra: Any) -> ModelConfig:
    raw: dict[str, Any] = {"kind": kind, "groups": 2, "dropout": 0.0, **TINY[kind], **extra}
    if norm is not None:
        raw["norm"] = norm
    return ModelConfig.model_validate(raw)


def kind_norms() -> list[tuple[str, str]]:
    return [(kind, norm) for kind, facts in NETWORKS.items() for norm in facts.norms]


def kind_norm_placements() -> list[tuple[str, str, str]]:
    """Every (kind, norm, placement) the table allows."""
    return [(kind, norm, "layer") for kind, norm in kind_norms()] + [
        (kind, norm, "cell") for kind, facts in NETWORKS.items() for norm in facts.cell_norms]


# ---------------------------------------------------------------- transformer == torch.nn.TransformerEncoder


@pytest.mark.parametrize("position", ["pre", "post"])
@pytest.mark.parametrize("train", [False, True])
def test_transformer_equals_torch_transformer_encoder(position: str, train: bool) -> None:
    """Same weights, LayerNorm, pre and post norm: our Encoder is torch.nn.TransformerEncoder to 1e-6."""
    torch.manual_seed(0)
    m = ModelConfig.model_validate({"kind": "transformer", "norm": "layer", "norm_position": position, "dropout": 0.0,
                                    "transformer": {"d_model": 16, "heads": 4, "layers": 3, "ff": 32}})
    ours = Encoder(m, 16, 4, 32, 3).double()
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, activation="gelu", batch_first=True,
                                       norm_first=position == "pre")
    ref = nn.TransformerEncoder(layer, 3, norm=nn.LayerNorm(16) if position == "pre" else None,
                                enable_nested_tensor=False).double()
    with torch.no_grad():  # different random weights everywhere, norms included, then copied across
        for p in ref.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    # our norms sit one level deeper (SeqNorm wraps the module): norm1.norm.weight <- norm1.weight
    state = {k.replace("norm1.", "norm1.norm.").replace("norm2.", "norm2.norm.") for k in ref.state_dict()}
    mapped = {}
    for k, v in ref.state_dict().items():
        key = k.replace("norm1.", "norm1.norm.").replace("norm2.", "norm2.norm.")
        mapped["norm.norm." + key[len("norm."):] if key.startswith("norm.") else key] = v
    assert len(state) == len(mapped)
    ours.load_state_dict(mapped, strict=True)
    ours.train(train)
    ref.train(train)
    x = torch.randn(5, 12, 16, dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-6)


def test_transformer_sinusoids_are_the_papers_formula() -> None:
    pe = sinusoids(10, 6).double()
    for t in range(10):
        for i in range(3):
            assert abs(pe[t, 2 * i] - np.sin(t / 10000 ** (2 * i / 6))) < 1e-6
            assert abs(pe[t, 2 * i + 1] - np.cos(t / 10000 ** (2 * i / 6))) < 1e-6


# ---------------------------------------------------------------- gru == torch.nn.GRU


def test_gru_with_norm_none_is_torch_gru() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig.model_validate({"kind": "gru", "norm": "none", "hidden": [6, 6],
                                                    "dropout": 0.0}), 3, 10).double().eval()
    ref = nn.GRU(3, 6, num_layers=2, batch_first=True).double()
    with torch.no_grad():
        for layer, rnn in enumerate(model.rnns):
            assert isinstance(rnn, nn.GRU)
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(ref, f"{name}_l{layer}").copy_(getattr(rnn, f"{name}_l0"))
    x = torch.randn(4, 10, 3, dtype=torch.float64)
    want = model.head(ref(x)[0][:, -1]).squeeze(-1)
    torch.testing.assert_close(model(x), want, rtol=0, atol=1e-12)


def test_gru_cell_without_its_norms_is_torch_gru() -> None:
    """The layer-normalized GRU cell's recurrence, its two LayerNorms replaced by identities, is torch's GRU
    (bias on the input side only); and with them, scaling W_x or W_h changes nothing (LN is scale-free)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig.model_validate({"kind": "gru", "norm": "layer", "norm_placement": "cell",
                                                    "hidden": [6], "dropout": 0.0, "norm_eps": 1e-12}), 3, 10)
    cell = model.double().eval().rnns[0]
    x = torch.randn(4, 10, 3, dtype=torch.float64)
    with torch.no_grad():
        before = cell(x)
        cell.w_x.weight.mul_(7.0)
        cell.w_h.weight.mul_(0.2)
        torch.testing.assert_close(cell(x), before, rtol=0, atol=1e-7)  # eps 1e-12 of variances ~1e-3
        cell.ln_x, cell.ln_h = nn.Identity(), nn.Identity()
        ref = nn.GRU(3, 6, batch_first=True).double()
        ref.weight_ih_l0.copy_(cell.w_x.weight)
        ref.weight_hh_l0.copy_(cell.w_h.weight)
        ref.bias_ih_l0.copy_(cell.bias)
        ref.bias_hh_l0.zero_()
        torch.testing.assert_close(cell(x), ref(x)[0], rtol=0, atol=1e-12)


# ---------------------------------------------------------------- tcn: causality, receptive field, weight norm


@pytest.mark.parametrize("norm", ["weight", "none", "layer", "rms", "batch", "batchrenorm"])
def test_tcn_is_causal(norm: str) -> None:
    """Changing bars after t never changes the representation at t (in eval mode: BatchNorm's running stats;
    group/instance normalize over the window and are left out on purpose, see tcn.py)."""
    torch.manual_seed(0)
    model = build_model(tiny("tcn", norm), 3, 20).eval()
    assert isinstance(model, TCN)
    x = torch.randn(4, 20, 3)
    base = model.represent(x)  # (B, C, T)
    for t in (0, 7, 18):
        y = x.clone()
        y[:, t + 1 :] = torch.randn_like(y[:, t + 1 :]) * 10
        torch.testing.assert_close(model.represent(y)[:, :, : t + 1], base[:, :, : t + 1], rtol=0, atol=0)
        assert not torch.equal(model.represent(y)[:, :, t + 1 :], base[:, :, t + 1 :])


@pytest.mark.parametrize(("kernel", "dilations"), [(3, [1, 2, 4]), (2, [1, 1]), (4, [1, 3]), (5, [2, 2, 2])])
def test_tcn_receptive_field_equals_the_formula(kernel: int, dilations: list[int]) -> None:
    """The bars whose gradient reaches the last step's output span exactly 1 + 2 (k - 1) sum(d)."""
    m = ModelConfig.model_validate({"kind": "tcn", "norm": "weight", "hidden": [4] * len(dilations), "dropout": 0,
                                    "tcn": {"kernel_size": kernel, "dilations": dilations}})
    formula = 1 + 2 * (kernel - 1) * sum(dilations)
    assert m.tcn_receptive_field == formula
    torch.manual_seed(0)
    model = TCN(m, 2, 80).double()  # the class itself: build_model refuses a window past the receptive field
    x = torch.randn(3, 80, 2, dtype=torch.float64, requires_grad=True)
    model.represent(x)[:, :, -1].sum().backward()
    assert x.grad is not None
    seen = (x.grad.abs().sum(dim=(0, 2)) > 0).nonzero().flatten()
    assert seen.min().item() == 80 - formula and seen.max().item() == 79  # the span: the oldest bar seen
    if 1 in dilations:  # no holes (with every dilation even only every other bar is seen)
        assert len(seen) == formula
    with pytest.raises(Exception, match="receptive field"):
        build_config({"model": m.model_dump(), "features": {"window": formula + 1}})
    build_config({"model": m.model_dump(), "features": {"window": formula}})


def test_tcn_weight_norm_is_g_v_over_norm_v_per_output_channel() -> None:
    torch.manual_seed(0)
    model = build_model(tiny("tcn", "weight"), 3, 16)
    conv = model.blocks[0].conv1.conv
    assert nn.utils.parametrize.is_parametrized(conv, "weight")
    wn = conv.parametrizations.weight
    g, v = wn.original0, wn.original1  # (C_out, 1, 1), (C_out, C_in, k)
    with torch.no_grad():
        g.mul_(torch.linspace(0.5, 2.0, g.numel()).view_as(g))  # make g differ from ||v||
    want = g * v / v.norm(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(conv.weight, want, rtol=1e-6, atol=1e-7)
    assert "blocks.0.conv1.conv.parametrizations.weight.original0" in dict(model.named_parameters())
    plain = build_model(tiny("tcn", "layer"), 3, 16)
    assert not nn.utils.parametrize.is_parametrized(plain.blocks[0].conv1.conv, "weight")


# ---------------------------------------------------------------- patchtst: patching, the paper's patch counts


@pytest.mark.parametrize(("window", "patch_len", "stride"), [(32, 8, 4), (16, 4, 4), (17, 5, 3), (12, 12, 1)])
def test_patchtst_patching_equals_a_slow_loop(window: int, patch_len: int, stride: int) -> None:
    series = torch.randn(3, window)
    padded = [list(map(float, row)) + [float(row[-1])] * stride for row in series]  # end padding
    loop = [[row[s : s + patch_len] for s in range(0, len(row) - patch_len + 1, stride)] for row in padded]
    got = patchify(series, patch_len, stride)
    assert got.shape == (3, len(loop[0]), patch_len) == (3, n_patches(window, patch_len, stride), patch_len)
    torch.testing.assert_close(got, torch.tensor(loop), rtol=0, atol=0)


def test_patchtst_patch_counts_of_the_papers_reference_configurations() -> None:
    """Nie et al. (2023) name the models by their patch count: PatchTST/42 (L=336) and PatchTST/64 (L=512),
    patch length 16, stride 8, end padding."""
    assert n_patches(336, 16, 8) == 42
    assert n_patches(512, 16, 8) == 64


def test_patchtst_encoder_has_the_parameters_of_torchs_encoder() -> None:
    """The paper's encoder (BatchNorm has LayerNorm's 2 d parameters) at its reference size: d 128, 16
    heads, 3 layers, ff 256; the count is torch.nn.TransformerEncoder's."""
    m = ModelConfig.model_validate({"kind": "patchtst", "norm": "batch", "norm_position": "post",
                                    "patchtst": {"d_model": 128, "heads": 16, "layers": 3, "ff": 256,
                                                 "patch_len": 16, "stride": 8}})
    ours = sum(p.numel() for p in Encoder(m, 128, 16, 256, 3).parameters())
    ref = nn.TransformerEncoder(nn.TransformerEncoderLayer(128, 16, 256, batch_first=True), 3,
                                enable_nested_tensor=False)
    assert ours == sum(p.numel() for p in ref.parameters())
    model = build_model(m, 7, 336)  # 7 features, as ETTh1
    head = 42 * 128 + 1 + 7 + 1  # the flatten head (P*d -> 1) and the join over features
    assert sum(p.numel() for p in model.parameters()) == ours + 16 * 128 + 128 + 42 * 128 + head + 2 * 7  # + RevIN


def test_patchtst_is_channel_independent() -> None:
    """Each feature's series goes through the encoder alone: permuting features permutes the per-feature
    outputs and changing one feature leaves the others' representations alone."""
    torch.manual_seed(0)
    model = build_model(tiny("patchtst", "layer", input_norm="none"), 4, 16).eval()
    captured: list[torch.Tensor] = []
    hook = model.flatten_head.register_forward_hook(lambda mod, i, o: captured.append(o.detach().clone()))
    x = torch.randn(2, 16, 4)
    model(x)
    y = x.clone()
    y[:, :, 2] += 5.0
    model(y)
    hook.remove()
    a, b = captured[0].view(2, 4), captured[1].view(2, 4)
    torch.testing.assert_close(a[:, [0, 1, 3]], b[:, [0, 1, 3]], rtol=0, atol=0)
    assert not torch.allclose(a[:, 2], b[:, 2])


# ---------------------------------------------------------------- dlinear: the decomposition


@pytest.mark.parametrize("kernel", [1, 3, 5, 25])
def test_dlinear_decomposition_equals_an_edge_padded_moving_average(kernel: int) -> None:
    x = np.random.default_rng(0).normal(size=(2, 16, 3))
    half = (kernel - 1) // 2
    want = np.empty_like(x)
    for t in range(16):  # the mean over t-half..t+half, bars outside the window replaced by the nearest end
        rows = [min(max(t + j, 0), 15) for j in range(-half, half + 1)]
        want[:, t] = x[:, rows].mean(axis=1)
    remainder, trend = decompose(torch.as_tensor(x), kernel)
    np.testing.assert_allclose(trend.numpy(), want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(remainder.numpy(), x - want, rtol=0, atol=1e-12)


def test_dlinear_is_two_linear_maps() -> None:
    model = build_model(tiny("dlinear"), 3, 16).double()
    x = torch.randn(4, 16, 3, dtype=torch.float64)
    # linear in its input: f(a x + b y) = a f(x) + b f(y) - (a + b - 1) f(0)
    f = model.core
    zero = f(torch.zeros_like(x))
    torch.testing.assert_close(f(2 * x + 3 * x.flip(0)), 2 * f(x) + 3 * f(x.flip(0)) - 4 * zero)
    assert sum(p.numel() for p in model.parameters()) == 2 * (16 * 3 + 1)
