"""What the benchmarks measure of one step: time (variants interleaved), host syncs, peak tensor bytes.

Shared by ``bench_stage1`` (a step on given logits) and ``bench_trainer_step`` (a whole ms-swift
training step); ``tests/perf`` uses :class:`TensorBytesTracker` to bound allocations.
"""

from __future__ import annotations

import time
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from coordexp.functional import SyncCounter

Step = Callable[[], Any]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(steps: dict[str, Step], repeats: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per step, variants interleaved within each repetition (drift hits all alike)."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():  # warm-up
        step()
    for _ in range(repeats):
        for name, step in steps.items():
            _sync(device)
            begin = time.perf_counter()
            step()
            _sync(device)
            times[name].append(time.perf_counter() - begin)
    return times


def count_syncs(step: Step, device: torch.device, host_transfers: int) -> dict[str, Any]:
    """Host syncs of one step: the dispatch-mode count (+ ``host_transfers``, the step's own
    device->host transfers, which the dispatch mode cannot see on CPU; see bench_stage1's docstring);
    on a GPU also the warnings of ``torch.cuda.set_sync_debug_mode``."""
    with SyncCounter(count_host_copies=True) as counter:
        step()
    result: dict[str, Any] = {"ops": dict(counter.ops)}
    count = counter.count
    if device.type == "cpu":
        count += host_transfers
    result["count"] = count
    if device.type == "cuda":
        _sync(device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                step()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        result["cuda_sync_debug"] = sum("synchroniz" in str(w.message) for w in caught)
    return result


class TensorBytesTracker(TorchDispatchMode):
    """Traced peak of tensor bytes alive: every storage an aten op creates counts from its creation
    until it is freed (a ``weakref.finalize`` on the storage). Results that share the storage of an
    input (views, in-place and ``out=`` ops, ``detach``) are not new allocations."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._alive: dict[int, int] = {}
        self.allocations: list[tuple[str, torch.dtype, int]] = []
        """``(op, dtype, bytes)`` of every new storage, in order (to count the logits-sized ones)"""

    def _release(self, key: int) -> None:
        self.live -= self._alive.pop(key, 0)

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        inputs = {
            value.untyped_storage().data_ptr()
            for value in tree_flatten((args, kwargs))[0]
            if isinstance(value, Tensor)
        }
        out = func(*args, **kwargs)
        for value in tree_flatten(out)[0]:
            if not isinstance(value, Tensor):
                continue
            storage = value.untyped_storage()
            key, nbytes = storage.data_ptr(), storage.nbytes()
            if nbytes == 0 or key in self._alive or key in inputs:  # a view / in-place / out= result
                continue
            self._alive[key] = nbytes
            self.allocations.append((func.overloadpacket.__name__, value.dtype, nbytes))
            self.live += nbytes
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._release, key)
        return out


def peak_bytes(step: Step, device: torch.device) -> int:
    """Peak bytes the step allocates above what was allocated before it (see the docstring)."""
    if device.type == "cuda":
        _sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    with TensorBytesTracker() as tracker:
        step()
    return tracker.peak
