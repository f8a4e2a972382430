"""What the loss functions' autograd functions compute, whichever way they get the logits.

:func:`~coordexp.functional.losses.coord_loss` and :func:`~coordexp.functional.losses.ce_loss`
read materialised logits, their :mod:`~coordexp.functional.linear_pass` twins compute them chunk by
chunk from the hidden states; the four share one :class:`LossPlan`: the pass's spec, which terms enter
the loss, the denominators and the loss itself from the pass's statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from coordexp.functional.box_terms import BoxBatch, box_terms_value, box_terms_with_grad
from coordexp.functional.coord_slice import CoordSlice
from coordexp.functional.grad_monitor import GradMonitor
from coordexp.functional.pass_spec import GradSpec, PassOptions, PassSpec, pass_spec
from coordexp.functional.targets import IGNORE_INDEX
from coordexp.functional.text_gate import text_gate_positions
from coordexp.generated.models.config import CoordSoftCEW1Config

__all__ = ["Denominator", "LogitsInfo", "LossPlan", "ce_loss_plan", "coord_loss_plan", "wants_grad"]

Denominator = Tensor | float | None
"""a loss part's denominator: a 0-d tensor, a number, or None for the batch's own row count"""


def _as_denominator(value: Denominator, default: Tensor) -> Tensor:
    if value is None:
        return default.clamp(min=1.0)
    if isinstance(value, Tensor):
        value = value.detach().to(dtype=torch.float32).reshape(())
        # only a real move names the device (a same-device ``.to(device=...)`` reads as a host copy on CPU)
        return value if value.device == default.device else value.to(default.device)
    return torch.full((), float(value), device=default.device)


@dataclass
class LossPlan:
    """What the autograd function computes: ``cfg`` is None when the coord terms are not in the loss;
    ``stats`` receives the pass's statistics."""

    spec: PassSpec
    cfg: CoordSoftCEW1Config | None
    base_ce: bool
    want_grad: bool
    stats: dict[str, Tensor] = field(default_factory=dict)
    boxes: BoxBatch | None = None
    """the box terms of the batch (added to the loss; their gradient to the coord columns)"""
    text_denominator: Denominator = None
    """the text gate's denominator (None: this batch's text-gate positions)"""
    text_scale: Tensor | None = None
    """``text_gate_weight / N_text``, 0 without a coord target (set by :meth:`prepare_text_gate`)"""

    def prepare_text_gate(self, targets: Tensor, types: Tensor | None) -> None:
        """Before the pass: the text gate's scale (sync-free; nothing when it is off)."""
        coord, cfg = self.coord, self.cfg
        if not self.spec.text_gate or coord is None or cfg is None:
            return
        rows = text_gate_positions(targets, types, coord, self.spec.eos_token_id)
        den = _as_denominator(self.text_denominator, rows.sum().to(torch.float32))
        is_coord = coord.lookup(targets)[0] & (targets != IGNORE_INDEX)
        self.text_scale = cfg.text_gate_weight * is_coord.any().to(torch.float32) / den

    box_value: Tensor | None = None
    box_stats: dict[str, Tensor] = field(default_factory=dict)
    grad_monitor: bool = False
    """monitor the per-term gradients in this pass (``custom.grad_monitor``; only with a gradient)"""
    monitor: GradMonitor | None = None
    """the monitor of the forward's pass (set by :meth:`box_terms`; dropped once its statistics are out)"""

    def monitor_names(self, box_parts: tuple[str, ...]) -> tuple[str, ...]:
        """The terms of the loss, in the monitor's order: base CE, the coord terms with a non-zero
        weight, the gate, the text gate, then the box parts by name."""
        names = ["base_ce"] if self.spec.do_base else []
        cfg = self.cfg
        if cfg is not None:
            names += [n for n, w in (("soft_ce", cfg.soft_ce_weight), ("w1", cfg.w1_weight)) if w != 0]
            names += ["ce"] if cfg.ce_weight != 0 else []
            names += ["gate"] if cfg.gate_weight != 0 and self.spec.gate else []
        names += ["text_gate"] if self.spec.text_gate else []
        return (*names, *box_parts)

    def box_terms(self, coord_rows: Callable[[Tensor], Tensor], n_rows: int) -> Tensor | None:
        """Compute the box terms from ``coord_rows(positions)`` (the coord-slice logits ``[P, K]`` of
        those rows) before the pass; returns their gradient as ``[n_rows, K]`` (None without one)."""
        coord = self.coord
        monitoring = self.grad_monitor and self.want_grad and self.cfg is not None and coord is not None
        if self.boxes is None:
            if monitoring and coord is not None:
                self.monitor = GradMonitor.of(self.monitor_names(()), coord.device)
            return None
        positions = self.boxes.flat_positions
        z = coord_rows(positions)
        self.box_value, self.box_stats, grad = box_terms_with_grad(z, self.boxes, self.want_grad)
        if monitoring:
            parts = _box_part_grads(z, self.boxes)
            self.monitor = GradMonitor.of(self.monitor_names(tuple(parts)), z.device)
            for name, part in parts.items():
                rows = torch.zeros((n_rows, z.shape[-1]), dtype=torch.float32, device=z.device)
                self.monitor.box_parts[name] = rows.index_add_(0, positions, part)
        if grad is None:
            return None
        extra = torch.zeros((n_rows, z.shape[-1]), dtype=torch.float32, device=z.device)
        return extra.index_add_(0, positions, grad)

    @property
    def coord(self) -> CoordSlice | None:
        return self.spec.coord

    def _row_counts(self, targets: Tensor) -> tuple[Tensor, Tensor]:
        """``(n_coord, n_base)`` from the targets alone (the pass counts the same rows), float32, sync-free.

        ``n_base`` counts the base-CE rows: every supervised target with ``base_all``, else the non-coord
        ones.
        """
        sup = targets != IGNORE_INDEX
        if self.coord is None:
            return torch.zeros((), device=targets.device), sup.sum().to(torch.float32)
        is_coord = self.coord.lookup(targets)[0]
        base = sup if self.spec.base_all else sup & ~is_coord
        return (sup & is_coord).sum().to(torch.float32), base.sum().to(torch.float32)

    def denominators(
        self, targets: Tensor, coord_denominator: Denominator, base_denominator: Denominator
    ) -> tuple[Tensor, Tensor]:
        """``(coord, base)`` denominators: the given ones, else the row counts clamped to >= 1."""
        n_coord, n_base = self._row_counts(targets)
        return _as_denominator(coord_denominator, n_coord), _as_denominator(base_denominator, n_base)

    def writing_gradient(
        self, out: Tensor, coord_den: Tensor, base_den: Tensor, coord_extra: Tensor | None = None
    ) -> tuple[PassSpec, GradSpec]:
        """The spec of a pass that also writes ``d loss / d logits`` (``grad_output = 1``) into ``out``
        (plus ``coord_extra`` in the coord columns)."""
        grad = GradSpec(out, 1.0 / coord_den, 1.0 / base_den, coord_extra, self.text_scale, self.monitor)
        return replace(self.spec, grad=True), grad

    def loss(
        self, stats: dict[str, Tensor], coord_den: Tensor, base_den: Tensor, device: torch.device
    ) -> Tensor:
        """The loss from the pass's ``stats`` (kept in :attr:`stats`)."""
        loss = torch.zeros((), device=device)
        if self.cfg is not None:
            cfg = self.cfg
            total = torch.zeros_like(stats["n_coord"])
            for weight, key in (
                (cfg.ce_weight, "ce_sum"),
                (cfg.soft_ce_weight, "soft_ce_sum"),
                (cfg.w1_weight, "w1_sum"),
                (cfg.gate_weight, "gate_sum"),
            ):
                if weight != 0:
                    total = total + weight * stats[key]
            loss = total / coord_den
        if self.base_ce:
            loss = loss + stats["base_ce_sum"] / base_den
        if self.text_scale is not None:
            loss = loss + self.text_scale * stats["text_gate_sum"]
        if self.box_value is not None:
            loss = loss + self.box_value
            stats = {**stats, **self.box_stats}
        # the Gram entries are in the stats: a backward that reruns the pass monitors nothing
        self.monitor, self.grad_monitor = None, False
        self.stats = stats
        return loss


def _box_part_grads(z: Tensor, boxes: BoxBatch) -> dict[str, Tensor]:
    """``d part / d z`` ``[M * 4, K]`` of each part of :func:`box_terms_value` (autograd on the small box
    tensor), for the gradient monitor."""
    zf = z.detach().to(torch.float32)
    with torch.enable_grad():
        zf.requires_grad_(True)
        parts, _ = box_terms_value(zf, boxes)
        names = list(parts)
        grads: dict[str, Tensor] = {}
        for i, name in enumerate(names):
            value = parts[name]
            if not value.requires_grad:  # a part that does not depend on the logits
                grads[name] = torch.zeros_like(zf)
                continue
            (grad,) = torch.autograd.grad(value, zf, retain_graph=i + 1 < len(names), allow_unused=True)
            grads[name] = torch.zeros_like(zf) if grad is None else grad
    return grads


@dataclass(frozen=True)
class LogitsInfo:
    """What a plan needs to know of the logits before the pass: their vocabulary, their device and
    whether autograd wants a gradient through them."""

    vocab: int
    device: torch.device
    want_grad: bool

    @classmethod
    def of(cls, logits: Tensor) -> LogitsInfo:
        return cls(logits.shape[-1], logits.device, wants_grad(logits))


def coord_loss_plan(
    coord: CoordSlice,
    cfg: CoordSoftCEW1Config,
    logits: LogitsInfo,
    options: PassOptions,
    *,
    base_ce: bool,
    boxes: BoxBatch | None = None,
    eos_token_id: int | None = None,
    text_denominator: Denominator = None,
    grad_monitor: bool = False,
) -> LossPlan:
    """The loss of :func:`~coordexp.functional.losses.coord_loss`: the coord terms, plus with
    ``base_ce`` the CE over the non-coord targets, plus with ``boxes`` the box terms."""
    spec = pass_spec(
        coord,
        cfg,
        vocab=logits.vocab,
        device=logits.device,
        options=options,
        base_ce=base_ce,
        eos_token_id=eos_token_id,
    )
    return LossPlan(
        spec,
        cfg,
        base_ce,
        logits.want_grad,
        boxes=boxes,
        text_denominator=text_denominator,
        grad_monitor=grad_monitor,
    )


def ce_loss_plan(
    coord: CoordSlice | None, coord_cfg: CoordSoftCEW1Config | None, logits: LogitsInfo, options: PassOptions
) -> LossPlan:
    """The loss of :func:`~coordexp.functional.losses.ce_loss`: the CE over every supervised target;
    ``coord_cfg`` (with ``coord``) adds the coord diagnostics, never a loss term."""
    spec = pass_spec(
        coord, coord_cfg, vocab=logits.vocab, device=logits.device, options=options, base_all=True
    )
    return LossPlan(spec, None, True, logits.want_grad)


def wants_grad(*tensors: Tensor | None) -> bool:
    """Whether autograd will want a gradient of any of ``tensors``."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
