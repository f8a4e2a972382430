"""The component protocol (every phase of a step a component may take part in, plus its link to the
metric catalog) and the request each component makes of the fused statistics pass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

from coordexp.components.context import StepContext
from coordexp.functional.pass_spec import PassOptions
from coordexp.generated.models.config import CoordSoftCEW1Config


@dataclass(frozen=True)
class PassRequest:
    """What a component needs from the step's single fused pass over the logits."""

    top5: bool = False
    mass: bool = False
    mass_max_tokens: int = 0
    types: bool = False
    coord_cfg: CoordSoftCEW1Config | None = None
    boxes: bool = False
    """the box terms read the batch's ``box_slots`` / ``box_pairs``"""

    def merge(self, other: PassRequest) -> PassRequest:
        if self.coord_cfg is not None and other.coord_cfg is not None and self.coord_cfg != other.coord_cfg:
            raise ValueError("two components asked for different coord configurations")
        return PassRequest(
            top5=self.top5 or other.top5,
            mass=self.mass or other.mass,
            mass_max_tokens=max(self.mass_max_tokens, other.mass_max_tokens),
            types=self.types or other.types,
            coord_cfg=self.coord_cfg or other.coord_cfg,
            boxes=self.boxes or other.boxes,
        )

    def options(self, chunk_size: int) -> PassOptions:
        """The keyword arguments of the pass entry points (``coord_loss``, ``stage1_stats``, ...) this
        request sets, with the pipeline's ``chunk_size``."""
        return PassOptions(
            top5=self.top5, mass=self.mass, mass_max_tokens=self.mass_max_tokens, chunk_size=chunk_size
        )


class Component(Protocol):
    """One Stage-1 behaviour: its place in the metric catalog and its phases of a step.

    The pipeline calls every phase on every component, in ``COMPONENT_ORDER`` (see ``pipeline``):

    1. ``pass_request`` - what the component needs from the step's single pass over the logits;
    2. (the objective: forward, coord loss or diagnostics pass - see ``objective``);
    3. ``after_loss`` - the step's loss is final (before accumulation scaling): stage device values;
    4. (the step's single device->host transfer);
    5. ``reports`` / ``report`` - host side: turn the statistics into metric values (best-effort);
    6. ``end_step`` - on every rank, every call, whatever ``report`` did.

    Catalog link, which decides whether a config needs the component (``needs.components_for``):
    ``feature`` names the catalog ``feature`` of the keys it writes; ``objective_conditions`` the
    conditions under which it acts on training even where it writes no key.
    """

    name: ClassVar[str]
    feature: ClassVar[str]
    objective_conditions: ClassVar[frozenset[str]]
    reads_logits: ClassVar[bool]

    def pass_request(self, ctx: StepContext) -> PassRequest | None: ...

    def after_loss(self, ctx: StepContext) -> None: ...

    def reports(self, ctx: StepContext) -> bool: ...

    def report(self, ctx: StepContext) -> None: ...

    def end_step(self, ctx: StepContext) -> None: ...


class BaseComponent:
    """No-op defaults of every :class:`Component` phase; a component overrides the phases it joins."""

    name: ClassVar[str]
    feature: ClassVar[str]
    objective_conditions: ClassVar[frozenset[str]] = frozenset()
    reads_logits: ClassVar[bool] = True
    """whether the component computes anything from the logits (then the one-pass seam is installed)"""

    def pass_request(self, ctx: StepContext) -> PassRequest | None:
        return None

    def after_loss(self, ctx: StepContext) -> None:
        return None

    def reports(self, ctx: StepContext) -> bool:
        """Whether ``report`` runs this step: by default when the pass produced statistics."""
        return bool(ctx.stats)

    def report(self, ctx: StepContext) -> None:
        return None

    def end_step(self, ctx: StepContext) -> None:
        return None
