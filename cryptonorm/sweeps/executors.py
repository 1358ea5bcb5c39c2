"""Executors: run cell tasks inline, in a process pool, or as Ray tasks; each finished cell goes to `finished`.

"local" runs `jobs` processes (concurrent.futures, "spawn" context; jobs=1 runs in this process); each sets
torch to max(1, cores // jobs) threads unless the config sets train.threads. With train.device auto/cuda on
a CUDA machine, all local workers share the one GPU (each holds its own copy of the small dataset and model
there). "ray" runs each cell as a Ray task (1 CPU each) on a local Ray instance with `jobs` CPUs, or on an
existing cluster (`address`); a task whose worker process dies is submitted again once (RAY_RETRIES), and
each Ray cell's result.json records its Ray `node`, `host`, `attempt` and the `gpus` Ray gave it.

`gpus_per_cell` > 0 packs cells onto GPUs: 0.25 = four cells per GPU. Locally each worker process is pinned
to one GPU slot (CUDA_VISIBLE_DEVICES, set before torch starts; slots = GPUs x floor(1 / gpus_per_cell), and
`jobs` is capped at the slots); with Ray every task asks for num_gpus=gpus_per_cell, so Ray places it (Ray
hides every GPU from a task that asks for none: with 0 Ray cells train on the CPU); Ray asks whole GPUs above 1
(2.5 -> 3, as locally), and a cluster where no live node has that many GPUs is a usage error before any cell
is submitted (Ray would hold such tasks forever, waiting for a node that can take them).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any

from cryptonorm.errors import CryptonormError, UsageError
from cryptonorm.sweeps.cell import CellTask, failed_result, one_line, run_cell

if TYPE_CHECKING:
    from multiprocessing.sharedctypes import Synchronized

    import pandas as pd

Finished = Callable[[CellTask, dict[str, Any]], None]
RAY_RETRIES = 1  # a cell whose process died (killed, out of memory) runs once more before it counts as failed


# worker-process state, set once per process by the pool initializer
_WORKER: dict[str, Any] = {}


def _init_worker(candles: pd.DataFrame, threads: int, parent_pid: int, slots: list[str] | None = None,
                 counter: Synchronized[int] | None = None) -> None:
    if slots and counter is not None:  # this worker's GPU(s): before torch (and CUDA) start in this process
        with counter.get_lock():
            k = counter.value
            counter.value += 1
        os.environ["CUDA_VISIBLE_DEVICES"] = slots[k % len(slots)]
    import torch

    _WORKER["candles"] = candles
    torch.set_num_threads(threads)

    def watchdog() -> None:  # a SIGKILLed parent cannot stop its pool: leave instead of training on as an orphan
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watchdog, daemon=True, name="cryptonorm-parent-watchdog").start()


def _pool_cell(task: CellTask) -> dict[str, Any]:
    return run_cell(task, _WORKER["candles"])


def _ray_cell(task: CellTask, candles: pd.DataFrame, threads: int, attempt: int = 1,
              retried_after: str | None = None) -> dict[str, Any]:
    """One cell in a Ray worker; its result (and result.json) records where it ran and which attempt it was."""
    import socket

    import ray
    import torch

    torch.set_num_threads(threads)
    where: dict[str, Any] = {"node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
                             "attempt": attempt}
    if gpus := ray.get_gpu_ids():  # the GPU(s) Ray placed this task on (CUDA_VISIBLE_DEVICES is set to them)
        where["gpus"] = ",".join(str(g) for g in gpus)
    if retried_after:
        where["retried_after"] = retried_after
    return run_cell(task, candles, where)


def cores() -> int:
    """CPU cores this process may use."""
    with contextlib.suppress(AttributeError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1



def run_inline(todo: list[CellTask], candles: pd.DataFrame, threads: int,
                finished: Finished) -> None:
    """Run the cells one after another in this process, torch on `threads` threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for task in todo:
            finished(task, run_cell(task, candles))
    finally:
        torch.set_num_threads(before)


def gpu_slots(gpus_per_cell: float, visible: list[str]) -> list[str]:
    """CUDA_VISIBLE_DEVICES of each worker slot: floor(1 / g) slots per GPU for g <= 1 (slot k on GPU
    k // per_gpu), else ceil(g) whole GPUs per slot. Raises UsageError when no GPU is visible."""
    if not visible:
        raise UsageError(f"--gpus-per-cell {gpus_per_cell:g} needs a CUDA GPU, and none is visible; "
                         "leave it at 0 to train on the CPU")
    if gpus_per_cell <= 1:
        per_gpu = max(1, int(1 / gpus_per_cell + 1e-9))
        return [gpu for gpu in visible for _ in range(per_gpu)]
    need = math.ceil(gpus_per_cell - 1e-9)
    slots = [",".join(visible[i:i + need]) for i in range(0, len(visible) - need + 1, need)]
    if not slots:
        raise UsageError(f"--gpus-per-cell {gpus_per_cell:g} asks for more GPUs than the {len(visible)} visible")
    return slots


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as CUDA_VISIBLE_DEVICES entries."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    import torch  # only when GPUs were asked for

    return [str(i) for i in range(torch.cuda.device_count())]


def run_pool(todo: list[CellTask], candles: pd.DataFrame, jobs: int, threads: int,
              finished: Finished, slots: list[str] | None = None) -> None:
    """`jobs` spawned processes; at most `jobs` cells in flight, so a dead worker costs only those cells.
    `slots` (gpu_slots): each worker pins itself to the next slot's GPU(s)."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    if not todo:
        return
    ctx = mp.get_context("spawn")
    queue = list(reversed(todo))

    def new_pool() -> ProcessPoolExecutor:
        counter = ctx.Value("i", 0)  # the next free slot, taken by each worker as it starts
        return ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=ctx, initializer=_init_worker,
                                   initargs=(candles, threads, os.getpid(), slots, counter))

    pool = new_pool()
    running: dict[Future[dict[str, Any]], CellTask] = {}
    try:
        while queue or running:
            while queue and len(running) < jobs:
                task = queue.pop()
                running[pool.submit(_pool_cell, task)] = task
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            broken = False
            for fut in done:
                task = running.pop(fut)
                try:
                    result = fut.result()
                except BrokenProcessPool:
                    broken = True
                    result = failed_result(task, "worker process died (out of memory or killed?); run the sweep "
                                                 "again to retry")
                except Exception as e:
                    result = failed_result(task, one_line(e))
                finished(task, result)
            if broken:  # every in-flight cell of a broken pool is lost: record them and start a fresh pool
                for fut, task in list(running.items()):
                    finished(task, failed_result(task, "worker pool broke while this cell ran; run the sweep "
                                                       "again to retry"))
                    running.pop(fut)
                pool.shutdown(wait=False, cancel_futures=True)
                pool = new_pool()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def check_executor(executor: str, address: str | None, gpus_per_cell: float = 0.0) -> None:
    """UsageError (one line) for an unknown executor, an --address without Ray or a negative --gpus-per-cell;
    a CryptonormError, before any work, when nothing listens at the Ray address."""
    if executor not in ("local", "ray"):
        raise UsageError(f"--executor must be local or ray, got {executor!r}")
    if address and executor != "ray":
        raise UsageError("--address is for --executor ray")
    if gpus_per_cell < 0:
        raise UsageError(f"--gpus-per-cell must be >= 0, got {gpus_per_cell:g}")
    if address:
        import_ray()  # "Ray is not installed" first: no cluster can help then
        check_reachable(address)


def import_ray() -> ModuleType:
    """The ray module, or a UsageError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray, which is not installed: pip install cryptonorm[ray]") from None
    return ray


@contextlib.contextmanager
def ray_session(ray: ModuleType, address: str | None, jobs: int) -> Iterator[None]:
    """Connect to the Ray cluster at `address` (or start a local Ray with `jobs` CPUs) unless this process is
    connected already; disconnect (or stop the local Ray) afterwards only if it connected here."""
    if ray.is_initialized():
        yield
        return
    try:
        quiet = {"log_to_driver": False, "logging_level": logging.WARNING}  # no "Connecting to..." INFO lines
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(num_cpus=jobs, include_dashboard=False, **quiet)
    except Exception as e:
        hint = ""
        if address and os.environ.get("RAY_AUTH_MODE", "").lower() != "token":  # token auth: Ray >= 2.52
            hint = ("; if the cluster uses token authentication, set RAY_AUTH_MODE=token here, with its token in "
                    "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token")
        first = (str(e).strip().splitlines() or ["no reason given"])[0]  # Ray's words, not its class names
        raise CryptonormError(f"cannot start or reach Ray{f' at {address}' if address else ''}: "
                              f"{first}{hint}") from e
    try:
        yield
    finally:
        ray.shutdown()


CONNECT_TIMEOUT_S = 10.0  # a Ray head that does not accept a TCP connection in this time is not there


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """A CryptonormError in at most `timeout` seconds when nothing listens at a Ray address HOST:PORT (or
    ray://HOST:PORT): ray.init itself retries an unreachable head for minutes. 'auto' and addresses without
    a port are left to Ray."""
    import socket

    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return
    except OSError as e:
        why = "no answer" if isinstance(e, TimeoutError) else (e.strerror or "connection refused").lower()
        raise CryptonormError(f"cannot reach Ray at {address}: {why} (tried for up to {timeout:g} s); start the "
                              "head with `ray start --head --port PORT` there, or check --address") from None


def ray_gpus(ray: ModuleType, gpus_per_cell: float) -> float:
    """The num_gpus of each Ray task: gpus_per_cell up to 1, whole GPUs above (Ray takes no fractions there).
    UsageError when no live node of the cluster has that many GPUs, rather than tasks that never start."""
    if gpus_per_cell <= 0:
        return 0.0
    need = gpus_per_cell if gpus_per_cell <= 1 else float(math.ceil(gpus_per_cell - 1e-9))
    most = max((float(node.get("Resources", {}).get("GPU", 0.0)) for node in ray.nodes() if node.get("Alive")),
               default=0.0)
    if most < need:
        raise UsageError(f"--gpus-per-cell {gpus_per_cell:g} needs a Ray node with {need:g} GPU(s), and the "
                         f"largest has {most:g}; start the nodes with `ray start --num-gpus N`, or leave it at 0 "
                         "to train on the CPU")
    return need


def run_ray(ray: ModuleType, todo: list[CellTask], candles: pd.DataFrame, jobs: int, address: str | None,
             threads: int, finished: Finished, gpus_per_cell: float = 0.0) -> None:
    """Each cell is a Ray task with 1 CPU (and `gpus_per_cell` GPUs); the candles go into the object store
    once. A task whose process or node dies is submitted again, RAY_RETRIES times, by this driver (not by
    Ray's max_retries), so the result records the attempt that finished and why the one before died."""
    with ray_session(ray, address, jobs):
        if not todo:
            return
        num_gpus = ray_gpus(ray, gpus_per_cell)
        remote = ray.remote(num_cpus=1, num_gpus=num_gpus, max_retries=0)(_ray_cell)
        ref = ray.put(candles)
        per_task = 1 if address else threads
        pending = {remote.remote(task, ref, per_task): (task, 1) for task in todo}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for r in done:
                task, attempt = pending.pop(r)
                try:
                    result = ray.get(r)
                except Exception as e:  # the task's process or node died; run_cell itself never raises
                    if attempt <= RAY_RETRIES:
                        pending[remote.remote(task, ref, per_task, attempt + 1, one_line(e))] = (task, attempt + 1)
                        continue
                    result = {**failed_result(task, f"Ray task failed {attempt} times: {one_line(e)}"),
                              "attempt": attempt}
                finished(task, result)
