"""The component protocol and the request each component makes of the fused statistics pass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

from coordexp.components.context import StepContext
from coordexp.functional import CoordLossConfig
from coordexp.functional.pass_spec import PassOptions


@dataclass(frozen=True)
class PassRequest:
    """What a component needs from the step's single fused pass over the logits."""

    top5: bool = False
    mass: bool = False
    mass_max_tokens: int = 0
    types: bool = False
    coord_cfg: CoordLossConfig | None = None

    def merge(self, other: PassRequest) -> PassRequest:
        if self.coord_cfg is not None and other.coord_cfg is not None and self.coord_cfg != other.coord_cfg:
            raise ValueError("two components asked for different coord configurations")
        return PassRequest(
            top5=self.top5 or other.top5,
            mass=self.mass or other.mass,
            mass_max_tokens=max(self.mass_max_tokens, other.mass_max_tokens),
            types=self.types or other.types,
            coord_cfg=self.coord_cfg or other.coord_cfg,
        )

    def options(self, chunk_size: int) -> PassOptions:
        """The keyword arguments of the pass entry points (``coord_loss``, ``stage1_stats``, ...) this
        request sets, with the pipeline's ``chunk_size``."""
        return PassOptions(
            top5=self.top5, mass=self.mass, mass_max_tokens=self.mass_max_tokens, chunk_size=chunk_size
        )


class Component(Protocol):
    """One Stage-1 behaviour. The pipeline calls the phases in a fixed order; see ``pipeline``."""

    name: ClassVar[str]

    def pass_request(self, ctx: StepContext) -> PassRequest | None: ...

    def report(self, ctx: StepContext) -> None: ...
