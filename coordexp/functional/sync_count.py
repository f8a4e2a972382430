"""Count the aten ops that force a device -> host sync on CUDA, on any device (CPU tests included).

``torch.cuda.set_sync_debug_mode`` only works on a GPU; this dispatch mode sees the same culprits on
CPU: ``.item()`` / ``float(t)`` / ``bool(t)`` (``_local_scalar_dense``), ``nonzero`` and what is built on
it (boolean-mask indexing, ``masked_select``, one-argument ``torch.where``), ``unique*``, ``equal``,
``repeat_interleave`` without ``output_size`` and ``bincount``; optionally copies to the CPU.

Example::

    with SyncCounter() as counter:
        loss.backward()
    assert counter.count == 0, counter.ops
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_SYNC_OPS = frozenset(
    {
        "_local_scalar_dense",
        "item",
        "is_nonzero",
        "nonzero",
        "argwhere",
        "masked_select",
        "_unique",
        "_unique2",
        "unique_dim",
        "unique_consecutive",
        "unique_dim_consecutive",
        "equal",
        "bincount",
    }
)
_INDEX_OPS = frozenset({"index", "_index_put_impl_", "index_put", "index_put_"})
_COPY_OPS = frozenset({"_to_copy", "copy_", "_copy_from", "_copy_from_and_resize"})


def _is_bool_index(indices: Any) -> bool:
    return any(
        isinstance(idx, torch.Tensor) and idx.dtype in (torch.bool, torch.uint8) for idx in (indices or ())
    )


def _device_of(value: Any) -> torch.device | None:
    if isinstance(value, torch.Tensor):
        return value.device
    if value is None:
        return None
    return torch.device(value)


class SyncCounter(TorchDispatchMode):
    """Counts sync-forcing aten ops. ``count`` is the total, ``ops`` a ``Counter`` of op names.

    ``count_host_copies=True`` also counts copies whose destination is the CPU: from a non-CPU tensor,
    or (so that CPU-only tests can see ``.cpu()`` / ``.to("cpu")`` calls) any ``_to_copy`` that names
    ``device=cpu`` explicitly.
    """

    def __init__(self, count_host_copies: bool = False) -> None:
        super().__init__()
        self.count_host_copies = count_host_copies
        self.ops: Counter[str] = Counter()

    @property
    def count(self) -> int:
        return sum(self.ops.values())

    def _is_sync(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        if name in _SYNC_OPS:
            return True
        if name == "repeat_interleave":
            return kwargs.get("output_size") is None and isinstance(args[0] if args else None, torch.Tensor)
        if name in _INDEX_OPS:
            return _is_bool_index(args[1] if len(args) > 1 else kwargs.get("indices"))
        if self.count_host_copies and name in _COPY_OPS:
            return self._is_host_copy(name, args, kwargs)
        return False

    @staticmethod
    def _is_host_copy(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        if name == "_to_copy":
            dst = _device_of(kwargs.get("device"))
            return dst is not None and dst.type == "cpu"
        if len(args) >= 2 and isinstance(args[0], torch.Tensor) and isinstance(args[1], torch.Tensor):
            dst_t, src_t = (args[0], args[1]) if name == "copy_" else (args[1], args[0])
            return dst_t.device.type == "cpu" and src_t.device.type != "cpu"
        return False

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if self._is_sync(name, args, kwargs):
            self.ops[name] += 1
        return func(*args, **kwargs)
