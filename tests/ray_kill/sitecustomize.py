"""The Ray cluster test's kill switch, kept out of the library: this folder goes first on the PYTHONPATH of the
test's Ray nodes and driver, so Python loads this file at the start of each of their processes.

When KILL_ENV is "CELL_ID:MARKER", the first process that imports cryptonorm.sweeps.executors gets its
`run_cell` wrapped: the cell CELL_ID, when MARKER does not exist yet, creates MARKER (with its process id)
and SIGKILLs its own worker once the cell's training has started, as the kernel's OOM killer would (or
right after the cell, if it ends first). One kill per test, whichever node runs the cell."""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any

KILL_ENV = "CRYPTONORM_TEST_KILL_CELL"
TARGET = "cryptonorm.sweeps.executors"


def _kill_hook(task: Any) -> Callable[[], None] | None:
    cell, _, marker = os.environ.get(KILL_ENV, "").partition(":")
    if not marker or cell != task.cell_id:
        return None
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # one kill per test
    except FileExistsError:
        return None
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)

    def kill() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def watch() -> None:  # mid-run: once run_cell has created the cell's run directory
        run_dir = Path(task.cell_dir) / "run"
        while not run_dir.exists():
            time.sleep(0.02)
        kill()

    threading.Thread(target=watch, daemon=True).start()
    return kill


def _patch(module: ModuleType) -> None:
    run_cell = module.run_cell

    def killing_run_cell(task: Any, candles: Any, where: Any = None) -> Any:
        kill = _kill_hook(task)
        result = run_cell(task, candles, where)
        if kill is not None:
            kill()  # the cell finished before the watcher saw it start: die before the result is returned
        return result

    module.run_cell = killing_run_cell


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Sequence[str] | None, target: ModuleType | None = None) -> ModuleSpec | None:
        if name != TARGET:
            return None
        sys.meta_path.remove(self)  # find the real module, once
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_patch(module: ModuleType) -> None:
            exec_module(module)
            _patch(module)

        loader.exec_module = exec_and_patch  # type: ignore[method-assign]
        return spec


if os.environ.get(KILL_ENV):
    sys.meta_path.insert(0, _Finder())
