"""The one table of normalization facts and the one table of model kinds (torch-free).

Everything that decides whether a `model.norm` / `model.kind` / `model.norm_placement` combination is
allowed reads these two tables: the config's allowed values (the `NormName` and `KindName` literals), its
validators (`check_model`), the model builders in learn/models/ (which call `check_model` again for a
hand-built config) and every error text. The torch factories live in learn/norms.py (`NORM_FACTORIES`)
and learn/models/ (`BUILDERS`), keyed by the same names; tests/test_norm_facts.py checks the key sets.

Like neuralforecast's scaler dict, one entry per name:

  norm          batch statistics  needs a sequence  what it normalizes (x: (B, C) or (B, T, C))
  none          no                no                nothing
  batch         yes               no                each channel over the batch (and time)      Ioffe 2015
  batchrenorm   yes               no                as batch, with r/d corrections              Ioffe 2017
  layer         no                no                each sample's channels (per step)           Ba 2016
  group         no                no                groups of channels (and time) per sample    Wu 2018
  instance      no                yes               each channel over time, per sample          Ulyanov 2016
  rms           no                no                each sample's channels by their RMS         Zhang 2019
  weight        no                no                the weights, w = g v / ||v|| (no activation norm)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

NormName = Literal["none", "batch", "batchrenorm", "layer", "group", "instance", "rms", "weight"]
KindName = Literal["mlp", "lstm", "gru", "tcn", "transformer", "patchtst", "tsmixer", "dlinear", "ridge", "lightgbm"]
PlacementName = Literal["layer", "cell"]
InputNormName = Literal["none", "revin", "dain"]


@dataclass(frozen=True)
class NormFacts:
    """What the config must know about one `model.norm`."""

    batch_stats: bool  # normalizes with statistics of the training batch: needs train.batch_size >= 2
    needs_sequence: bool  # normalizes over time: needs features.window >= 2
    placements: tuple[str, ...]  # where it can sit: between layers ("layer"), inside an RNN cell ("cell")
    what: str  # one line for error texts and docs


NORMS: dict[str, NormFacts] = {
    "none": NormFacts(False, False, ("layer",), "no normalization"),
    "batch": NormFacts(True, False, ("layer", "cell"), "BatchNorm: each channel over the batch (and time)"),
    "batchrenorm": NormFacts(True, False, ("layer",), "batch renormalization (Ioffe 2017)"),
    "layer": NormFacts(False, False, ("layer", "cell"), "LayerNorm: each sample's channels"),
    "group": NormFacts(False, False, ("layer",), "GroupNorm: groups of channels per sample"),
    "instance": NormFacts(False, True, ("layer",), "InstanceNorm: each channel over time, per sample"),
    "rms": NormFacts(False, False, ("layer",), "RMSNorm: each sample's channels by their RMS"),
    "weight": NormFacts(False, False, ("layer",), "weight normalization of the weights"),
}

# model.input_norm: normalizes each (B, W, F) window over time before the network
INPUT_NEEDS_SEQUENCE: dict[str, bool] = {"none": False, "revin": True, "dain": True}


@dataclass(frozen=True)
class KindFacts:
    """What the config must know about one `model.kind`."""

    sequential: bool  # reads the window as a sequence (False: the MLP flattens it)
    norms: tuple[str, ...]  # allowed model.norm values, the default first
    cell: bool = False  # has recurrent-normalized cells (norm_placement: cell, with the norms placed there)
    norm_position: bool = False  # model.norm_position (pre/post) applies
    defaults: dict[str, Any] = field(default_factory=dict)  # model.* defaults when the config leaves them out
    paper: str = ""
    network: bool = True  # False: fitted by learn/tabular.py (ridge, LightGBM), not built by learn/models

    @property
    def default_norm(self) -> str:
        return self.norms[0]

    @property
    def cell_norms(self) -> tuple[str, ...]:
        """model.norm values allowed with norm_placement: cell."""
        return tuple(n for n in self.norms if self.cell and "cell" in NORMS[n].placements)


_ALL = ("layer", "none", "batch", "batchrenorm", "group", "instance", "rms", "weight")
KINDS: dict[str, KindFacts] = {
    "mlp": KindFacts(False, tuple(n for n in _ALL if n != "instance"), paper="-"),
    "lstm": KindFacts(True, _ALL, cell=True, paper="Hochreiter & Schmidhuber 1997"),
    "gru": KindFacts(True, _ALL, cell=True, defaults={"hidden": [64]}, paper="Cho et al. 2014"),
    "tcn": KindFacts(True, ("weight", "none", "batch", "batchrenorm", "layer", "group", "instance", "rms"),
                     defaults={"hidden": [32, 32, 32, 32], "dropout": 0.05},
                     paper="Bai, Kolter & Koltun 2018"),
    "transformer": KindFacts(True, ("layer", "none", "batch", "batchrenorm", "rms", "group"), norm_position=True,
                             paper="Vaswani et al. 2017; BatchNorm as in Zerveas et al. 2021"),
    "patchtst": KindFacts(True, ("batch", "batchrenorm", "layer", "rms", "none"), norm_position=True,
                          defaults={"input_norm": "revin"}, paper="Nie et al. 2023"),
    "tsmixer": KindFacts(True, ("batch", "batchrenorm", "layer", "none"), paper="Chen et al. 2023"),
    "dlinear": KindFacts(False, ("none",), defaults={"dropout": 0.0}, paper="Zeng et al. 2023"),
    # not networks: the flattened window through learn/tabular.py (config/tabular.py), no norm layer to set
    "ridge": KindFacts(False, ("none",), paper="Hoerl & Kennard 1970", network=False),
    "lightgbm": KindFacts(False, ("none",), paper="Ke et al. 2017", network=False),
}

NORM_NAMES: tuple[str, ...] = get_args(NormName)
KIND_NAMES: tuple[str, ...] = get_args(KindName)
# the literals (what pydantic checks and lists) and the tables (what the rules read) name the same things
assert set(NORMS) == set(NORM_NAMES) and set(KINDS) == set(KIND_NAMES) and set(INPUT_NEEDS_SEQUENCE) == set(
    get_args(InputNormName))
BATCH_NORMS: tuple[str, ...] = tuple(n for n, f in NORMS.items() if f.batch_stats)


def _names(values: tuple[str, ...]) -> str:
    return ", ".join(values)


def norm_problem(kind: str, norm: str, placement: str) -> str | None:
    """Why `model.norm` / `model.norm_placement` cannot be used with `model.kind`, or None."""
    facts = KINDS[kind]
    if norm not in facts.norms:
        why = (f"needs a sequence to normalize over and model.kind {kind!r} has none" if
               NORMS[norm].needs_sequence and not facts.sequential else f"is not available for model.kind {kind!r}")
        return f"model.norm {norm!r} {why} ({NORMS[norm].what}); allowed for {kind}: {_names(facts.norms)}"
    if placement == "cell":
        if not facts.cell_norms:
            cell_kinds = [k for k, f in KINDS.items() if f.cell]
            return (f"model.norm_placement 'cell' is for model.kind {' or '.join(map(repr, cell_kinds))} only, "
                    f"not {kind!r}; use model.norm_placement 'layer'")
        if norm not in facts.cell_norms:
            return (f"model.norm_placement 'cell' supports model.norm {' or '.join(map(repr, facts.cell_norms))} "
                    f"for {kind}, not "
                    f"{norm!r}; use model.norm_placement 'layer' or one of those norms")
    return None


def data_problem(norm: str, input_norm: str, batch_size: int | None, window: int | None) -> str | None:
    """Why the norms cannot train with this batch size or window (None: fine, or not known yet)."""
    if batch_size is not None and NORMS[norm].batch_stats and batch_size < 2:
        return (f"train.batch_size must be >= 2 for model.norm={norm}; it normalizes with the statistics of each "
                f"training batch and needs at least two samples (got {batch_size})")
    if window is not None and window < 2:
        if NORMS[norm].needs_sequence:
            return (f"model.norm={norm} normalizes over time and needs features.window >= 2 (got {window}); "
                    "lengthen the window or pick another model.norm")
        if INPUT_NEEDS_SEQUENCE[input_norm]:
            return (f"model.input_norm {input_norm!r} normalizes each window over time and needs "
                    f"features.window >= 2 (got {window})")
    return None


def bn_eval_problem(norm: str, bn_eval: str) -> str | None:
    """`model.batch_norm.eval` other than running needs a norm with batch statistics."""
    if bn_eval != "running" and not NORMS[norm].batch_stats:
        return (f"model.batch_norm.eval {bn_eval!r} changes how BatchNorm's statistics are used at inference, but "
                f"model.norm {norm!r} has no batch statistics; use model.norm {' or '.join(BATCH_NORMS)}, or "
                "model.batch_norm.eval running")
    return None
