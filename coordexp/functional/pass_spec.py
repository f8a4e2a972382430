"""What one Stage-1 pass computes (:class:`PassSpec`), where it reads the logits (:class:`ChunkSource`)
and where it writes their gradient (:class:`GradSpec`); see :mod:`coordexp.functional.stage1_pass`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypedDict

import torch
from torch import Tensor

from coordexp.functional.coord_slice import CoordSlice
from coordexp.functional.grad_monitor import GradMonitor
from coordexp.generated.models.config import CoordSoftCEW1Config

DEFAULT_CHUNK_SIZE = 2048


class PassOptions(TypedDict):
    """The keyword arguments every pass entry point takes for what to compute besides the loss."""

    top5: bool
    mass: bool
    mass_max_tokens: int
    chunk_size: int


@dataclass(frozen=True)
class PassSpec:
    """What one pass computes. Host-side booleans only: the work done never depends on the data."""

    coord: CoordSlice | None = None
    coord_cfg: CoordSoftCEW1Config | None = None
    top5: bool = True
    mass: bool = False
    mass_max_tokens: int = 0
    base_ce: bool = False
    grad: bool = False
    """also write ``d loss / d logits`` of the coord loss (+ base CE) chunk by chunk (see ``GradSpec``)"""
    chunk_size: int = DEFAULT_CHUNK_SIZE
    base_all: bool = False
    """the base CE over EVERY supervised target on raw rows (the coord loss is off): no row is sanitised
    in the full-vocab softmax, the coord terms are diagnostics only (never in the gradient); needs no
    coord slice"""
    eos_token_id: int | None = None
    """the tokenizer's eos id: never a text-gate position"""

    @property
    def diag(self) -> bool:
        return self.coord is not None and self.coord_cfg is not None

    @property
    def gate(self) -> bool:
        return self.diag and self.coord_cfg is not None and self.coord_cfg.gate_weight != 0

    @property
    def temperature(self) -> float:
        return 1.0 if self.coord_cfg is None else float(self.coord_cfg.temperature)

    @property
    def text_gate(self) -> bool:
        """Whether the text gate is part of the loss (the coord loss with ``text_gate_weight != 0``)."""
        cfg = self.coord_cfg
        return self.diag and not self.base_all and cfg is not None and cfg.text_gate_weight != 0

    @property
    def do_mass(self) -> bool:
        return self.mass and self.coord is not None

    @property
    def do_base(self) -> bool:
        return (self.base_ce and self.coord is not None) or self.base_all

    @property
    def need_full(self) -> bool:
        """Whether the full-vocab softmax pass is needed (anything beyond token stats and the coord slice)."""
        return self.do_mass or self.do_base or self.gate or self.text_gate

    @property
    def tempered(self) -> bool:
        """Whether the gate needs a ``1 / T`` tempered full-vocab ``logsumexp`` of the coord rows."""
        return self.gate and self.temperature != 1.0


def pass_spec(
    coord: CoordSlice | None,
    coord_cfg: CoordSoftCEW1Config | None,
    *,
    vocab: int,
    device: torch.device,
    options: PassOptions,
    base_ce: bool = False,
    base_all: bool = False,
    eos_token_id: int | None = None,
) -> PassSpec:
    """The spec of a pass over logits of ``vocab`` columns on ``device``: ``coord`` moved there and
    checked against ``vocab`` (``ValueError`` when an id is beyond it); ``coord_cfg`` (the coord
    diagnostics) only counts with a ``coord``."""
    if coord is not None:
        coord = coord.to(device)
        coord.check_vocab(vocab)
    return PassSpec(
        coord=coord,
        coord_cfg=coord_cfg if coord is not None else None,
        base_ce=base_ce,
        base_all=base_all,
        eos_token_id=eos_token_id,
        **options,
    )


@dataclass(frozen=True)
class GradSpec:
    """Where and how the pass writes the gradient: ``out`` shaped like the logits; coord-term rows are
    scaled by ``coord_scale`` (``1 / coord_denominator``), base-CE rows by ``base_scale``;
    ``coord_extra`` ``[N, K]`` (the box terms' gradient) is added to the coord columns of each row."""

    out: Tensor
    coord_scale: Tensor
    base_scale: Tensor
    coord_extra: Tensor | None = None
    text_scale: Tensor | None = None
    """``text_gate_weight / N_text`` (0 without a coord target in the batch): the text gate's rows"""
    monitor: GradMonitor | None = None
    """on a monitored pass: the per-term Gram matrix the chunks add to (``custom.grad_monitor``)"""


@dataclass(frozen=True)
class PassResult:
    stats: dict[str, Tensor]
    """every key of :data:`STAT_KEYS`, 0-d float32"""


@dataclass(frozen=True)
class ChunkSource:
    """Where the pass reads each chunk's logits and puts its gradient rows.

    By default (:func:`tensor_source`) the rows of a logits tensor and of ``GradSpec.out``;
    :mod:`coordexp.functional.linear_pass` computes each chunk from the hidden states and the output head
    instead (``read``), and turns each chunk's gradient rows into hidden-state and head gradients
    (``done``), so that the full logits never exist.
    """

    n_rows: int
    vocab: int
    dtype: torch.dtype
    device: torch.device
    read: Callable[[int, int], Tensor]
    """``(start, size) -> [size, V]`` logits of rows ``start .. start + size``"""
    grad_rows: Callable[[int, int], Tensor] | None = None
    """``(start, size) -> [size, V]`` where the pass writes those rows' gradient (with ``GradSpec``)"""
    done: Callable[[int, int, Tensor], None] | None = None
    """``(start, size, gradient rows)``: called after each chunk whose gradient rows were written"""
    preds: Tensor | None = None
    """``[n_rows]`` int64: filled with each row's argmax (ms-swift's token accuracy reads it)"""
    rows: int | None = None
    """rows per chunk (default :func:`~coordexp.functional.stage1_pass.chunk_rows`)"""


def tensor_source(logits: Tensor, grad: GradSpec | None = None) -> ChunkSource:
    """The rows of ``logits`` ``[N, V]`` (and of ``grad.out``)."""
    return ChunkSource(
        n_rows=logits.shape[0],
        vocab=logits.shape[1],
        dtype=logits.dtype,
        device=logits.device,
        read=lambda start, size: logits.narrow(0, start, size),
        grad_rows=None if grad is None else (lambda start, size: grad.out.narrow(0, start, size)),
    )


def validate_targets(rows: int, targets: Tensor, types: Tensor | None, chunk_size: int) -> None:
    """Host-side checks of what scores ``rows`` logit rows: ``targets`` ``[rows]`` int64, ``types`` like
    them, ``chunk_size`` an int >= 1 (no device sync)."""
    if targets.dim() != 1 or targets.shape[0] != rows:
        raise ValueError(f"targets must be [N={rows}], got shape {tuple(targets.shape)}")
    if targets.dtype != torch.long:
        raise TypeError(f"targets must be int64, got {targets.dtype}")
    if types is not None and (types.shape != targets.shape or types.dtype != torch.long):
        raise ValueError("types must be an int64 tensor shaped like targets")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")


def validate_inputs(logits: Tensor, targets: Tensor, types: Tensor | None, chunk_size: int) -> None:
    """Host-side shape / dtype checks (no device sync)."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be [N, V], got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be floating point, got {logits.dtype}")
    validate_targets(logits.shape[0], targets, types, chunk_size)
