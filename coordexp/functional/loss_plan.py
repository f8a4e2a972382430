"""What the loss functions' autograd functions compute, whichever way they get the logits.

:func:`~coordexp.functional.losses.coord_loss` and :func:`~coordexp.functional.losses.ce_loss`
read materialised logits, their :mod:`~coordexp.functional.linear_pass` twins compute them chunk by
chunk from the hidden states; the four share one :class:`LossPlan`: the pass's spec, which terms enter
the loss, the denominators and the loss itself from the pass's statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from coordexp.functional.coord_slice import CoordSlice
from coordexp.functional.pass_spec import GradSpec, PassOptions, PassSpec, pass_spec
from coordexp.functional.targets import IGNORE_INDEX
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

    def writing_gradient(self, out: Tensor, coord_den: Tensor, base_den: Tensor) -> tuple[PassSpec, GradSpec]:
        """The spec of a pass that also writes ``d loss / d logits`` (``grad_output = 1``) into ``out``."""
        return replace(self.spec, grad=True), GradSpec(out, 1.0 / coord_den, 1.0 / base_den)

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
        self.stats = stats
        return loss


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
    coord: CoordSlice, cfg: CoordSoftCEW1Config, logits: LogitsInfo, options: PassOptions, *, base_ce: bool
) -> LossPlan:
    """The loss of :func:`~coordexp.functional.losses.coord_loss`: the coord terms, plus with
    ``base_ce`` the CE over the non-coord targets."""
    spec = pass_spec(coord, cfg, vocab=logits.vocab, device=logits.device, options=options, base_ce=base_ce)
    return LossPlan(spec, cfg, base_ce, logits.want_grad)


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
