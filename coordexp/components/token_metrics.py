"""Aggregate token metrics: top-5 and text accuracy, per-type fraction/accuracy, coord monitors.

All values are ratios of sufficient statistics from the fused pass (see
``coordexp.functional.stat_keys``), written as :class:`Ratio` (numerator, denominator) so that a
logging window's value is exact; a ratio whose denominator is 0 is not written.
"""

from __future__ import annotations

from typing import ClassVar

from coordexp.components.base import BaseComponent, PassRequest
from coordexp.components.context import StepContext
from coordexp.generated import metric_keys as K
from coordexp.generated.models.config import TokenTypeMetricsConfig
from coordexp.reporting.aggregation import Ratio, StepValue

# (type name, frac key, acc key, top-5 key)
_TYPE_KEYS = (
    ("desc", K.DESC_TOKEN_FRAC, K.DESC_TOKEN_ACC, K.DESC_TOKEN_ACC_TOP5),
    ("format", K.FORMAT_TOKEN_FRAC, K.FORMAT_TOKEN_ACC, K.FORMAT_TOKEN_ACC_TOP5),
    ("coord", K.COORD_TOKEN_FRAC, K.COORD_TOKEN_ACC, K.COORD_TOKEN_ACC_TOP5),
)
# (metric key, numerator stat, denominator stat, needs token types)
_FLIPS = (
    (K.COORD_MONITOR_FLIP_COORD_TO_NONCOORD, "n_flip_coord_to_noncoord", "n_gt_coord", False),
    (K.COORD_MONITOR_FLIP_TEXT_TO_COORD, "n_flip_text_to_coord", "n_noncoord", False),
    (K.COORD_MONITOR_FLIP_FORMAT_TO_COORD, "n_flip_format_to_coord", "n_type_format", True),
    (K.COORD_MONITOR_FLIP_DESC_TO_COORD, "n_flip_desc_to_coord", "n_type_desc", True),
)
_MASS = (
    (K.COORD_MONITOR_COORD_VOCAB_MASS_AT_GT_COORD, "coord", False),
    (K.COORD_MONITOR_COORD_VOCAB_MASS_AT_GT_TEXT, "text", False),
    (K.COORD_MONITOR_COORD_VOCAB_MASS_AT_GT_FORMAT, "format", True),
    (K.COORD_MONITOR_COORD_VOCAB_MASS_AT_GT_DESC, "desc", True),
)


def _ratio(out: dict[str, StepValue], key: str, num: float, den: float) -> None:
    if den > 0:
        out[key] = Ratio(num, den)


class TokenMetricsComponent(BaseComponent):
    name: ClassVar[str] = "token_metrics"
    feature: ClassVar[str] = "token_type_metrics"

    def __init__(self, cfg: TokenTypeMetricsConfig) -> None:
        self.cfg = cfg
        self.coord_vocab_known = False

    def pass_request(self, ctx: StepContext) -> PassRequest | None:
        return PassRequest(
            top5=self.cfg.log_top5,
            mass=self.cfg.coord_monitor_mass,
            mass_max_tokens=self.cfg.coord_monitor_mass_max_tokens,
            types=True,
        )

    def report(self, ctx: StepContext) -> None:
        s = ctx.host
        n_sup = s["n_sup"]
        if n_sup <= 0:
            return
        out: dict[str, StepValue] = {}
        if self.cfg.log_top5:
            out[K.TOKEN_ACC_TOP5] = Ratio(s["n_top5"], n_sup)
        _ratio(out, K.TEXT_TOKEN_ACC, s["n_noncoord_top1"], s["n_noncoord"])
        types_present = s["n_typed"] > 0
        if types_present:
            for name, frac_key, acc_key, top5_key in _TYPE_KEYS:
                count = s[f"n_type_{name}"]
                out[frac_key] = Ratio(count, s["n_typed"])
                _ratio(out, acc_key, s[f"n_type_{name}_top1"], count)
                if self.cfg.log_top5:
                    _ratio(out, top5_key, s[f"n_type_{name}_top5"], count)
        if self.coord_vocab_known:
            for key, num, den, needs_types in _FLIPS:
                if types_present or not needs_types:
                    _ratio(out, key, s[num], s[den])
            if self.cfg.coord_monitor_mass:
                for key, slot, needs_types in _MASS:
                    if types_present or not needs_types:
                        _ratio(out, key, s[f"mass_sum_{slot}"], s[f"mass_n_{slot}"])
        ctx.metrics.update(out)
