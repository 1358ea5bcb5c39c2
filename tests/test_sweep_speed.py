"""Sweeps that fill a machine: GPU slots for --gpus-per-cell, a clear error without a GPU, and the summary's
throughput (cells/hour) and per-cell device. Tiny cells, CPU only (the GPU packing itself needs GPUs)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from test_sweep import cli, write_sweep

from cryptonorm.errors import UsageError
from cryptonorm.sweeps.executors import gpu_slots, ray_gpus


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("candles")


def test_gpu_slots_pack_cells_per_gpu() -> None:
    assert gpu_slots(0.25, ["0", "1"]) == ["0"] * 4 + ["1"] * 4
    assert gpu_slots(0.3, ["3"]) == ["3"] * 3  # floor(1 / 0.3) cells fit on one GPU
    assert gpu_slots(1, ["0", "1"]) == ["0", "1"]
    assert gpu_slots(2, ["0", "1", "2", "3", "4"]) == ["0,1", "2,3"]
    with pytest.raises(UsageError, match="more GPUs than the 1 visible"):
        gpu_slots(2, ["0"])
    with pytest.raises(UsageError, match="needs a CUDA GPU, and none is visible"):
        gpu_slots(0.5, [])


def test_gpus_per_cell_without_a_gpu_is_one_clear_line(tmp_path: Path, data_dir: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU visible, whatever the machine has
    path = write_sweep(tmp_path, data_dir)
    code, _, err = cli("sweep", str(path), "--out", str(tmp_path / "out"), "--gpus-per-cell", "0.25")
    assert code == 2
    assert err.strip() == ("error: --gpus-per-cell 0.25 needs a CUDA GPU, and none is visible; leave it at 0 to "
                           "train on the CPU")


def test_summary_records_cells_per_hour_and_each_cells_device(tmp_path: Path, data_dir: Path) -> None:
    sweep = "name: tiny-tp\nbase: base.yaml\nset: {train.epochs: 1}\nseeds: 1\ngrid:\n  model.norm: [none, layer]\n"
    path = write_sweep(tmp_path, data_dir, sweep=sweep)
    out = tmp_path / "out"
    code, _, err = cli("sweep", str(path), "--out", str(out))
    assert code == 0, err
    df = pd.read_csv(out / "sweep_results.csv")
    assert df["device"].tolist() == ["cpu", "cpu"]
    summary = (out / "summary.md").read_text()
    line = next(x for x in summary.splitlines() if x.startswith("- throughput:"))
    assert "cells/hour over 2 finished cells" in line and line.endswith("devices: cpu x2")



class _Cluster:
    """What ray_gpus reads of a Ray cluster: ray.nodes()."""

    def __init__(self, *nodes: tuple[bool, float]) -> None:
        self._nodes = [{"Alive": alive, "Resources": {"CPU": 4.0, "GPU": gpus} if gpus else {"CPU": 4.0}}
                       for alive, gpus in nodes]

    def nodes(self) -> list[dict[str, object]]:
        return self._nodes


def test_ray_gpus_per_task_and_infeasible_requests() -> None:
    cluster = _Cluster((True, 2.0), (True, 1.0), (False, 8.0))  # the dead node's 8 GPUs do not count
    assert ray_gpus(cluster, 0.0) == 0.0
    assert ray_gpus(cluster, 0.25) == 0.25  # fractions up to 1 as given
    assert ray_gpus(cluster, 1.5) == 2.0  # whole GPUs above 1, on one node
    with pytest.raises(UsageError, match=r"needs a Ray node with 3 GPU\(s\), and the largest has 2"):
        ray_gpus(cluster, 2.5)
    with pytest.raises(UsageError, match="the largest has 0"):
        ray_gpus(_Cluster((True, 0.0)), 0.5)
