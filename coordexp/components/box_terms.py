"""The box terms' part of the coord component: ``custom.bbox_geo``, ``custom.bbox_size_aux`` and the
adjacent repulsion (``custom.coord_soft_ce_w1.adjacent_repulsion_*``).

Their catalog features are ``bbox_geo``, ``bbox_size_aux`` and ``coord_soft_ce_w1`` (condition
``adjacent_repulsion``); they are computed inside the coord objective's one pass
(:mod:`coordexp.functional.box_terms`: boxes grouped from the coord slots the answer parser marked
(``box_slots`` / ``box_pairs`` batch extras), decoded from the coord-slot softmax, scored with autograd
on the ``[boxes x 4, 1000]`` slice), so this part only builds the batch's boxes and writes the keys.

Normalisation (a deliberate difference from the reference, see docs/TRAINING_METRICS_AND_LOSSES.md): the
box terms are a mean over the batch's boxes (counted across ranks with the coord positions under
``average_tokens_across_devices``) and are added to the loss BEFORE the division by the accumulation
steps, like every other term, so each term weighs what its weight says for any
``gradient_accumulation_steps`` ``G``. The reference adds them after that division: its box terms weigh
``G`` times their weight. To reproduce an old run with ``G > 1``, multiply ``smoothl1_weight``,
``ciou_weight``, ``log_wh_weight`` and ``oversize_penalty_weight`` by ``G``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from coordexp.config import Stage1CustomConfig
from coordexp.functional import CoordSlice
from coordexp.functional.adjacent_repulsion import RepulsionWeights
from coordexp.functional.bbox_geo import BBoxGeoWeights
from coordexp.functional.bbox_size_aux import BBoxSizeAuxWeights
from coordexp.functional.box_groups import BoxGroups, box_groups
from coordexp.functional.box_terms import BoxTerms
from coordexp.generated import metric_keys as K
from coordexp.reporting.aggregation import Ratio, StepValue

__all__ = ["BoxTermsPart"]


@dataclass(frozen=True)
class BoxTermsPart:
    """Which box terms a config turns on (``terms`` None: none)."""

    terms: BoxTerms | None

    @classmethod
    def of(cls, custom: Stage1CustomConfig, temperature: float) -> BoxTermsPart:
        geo, size, coord = custom.bbox_geo, custom.bbox_size_aux, custom.coord_soft_ce_w1
        terms = BoxTerms(
            temperature=temperature,
            geo=BBoxGeoWeights.of(geo) if geo is not None and geo.enabled else None,
            size=BBoxSizeAuxWeights.of(size) if size is not None and size.enabled else None,
            repulsion=RepulsionWeights.of(coord) if coord is not None and coord.enabled else None,
        )
        return cls(terms if terms.any else None)

    @classmethod
    def wanted(cls, custom: Stage1CustomConfig) -> bool:
        """Whether a config turns on a box term (then the collator attaches the box extras)."""
        coord = custom.coord_soft_ce_w1
        return coord is not None and coord.enabled and cls.of(custom, coord.temperature).terms is not None

    @property
    def needs_links(self) -> bool:
        """Whether the batch must carry the answer parser's box extras (the repulsion pairs by them)."""
        return self.terms is not None and self.terms.repulsion is not None

    def groups(
        self, targets: Tensor, rows: int, coord: CoordSlice, slots: Tensor | None, links: Tensor | None
    ) -> BoxGroups:
        """The boxes of the flat next-token ``targets`` of ``rows`` batch rows (``slots`` / ``links``:
        the flat next-token ``box_slots`` / ``box_pairs``; None: label quartets, no pairs)."""
        return box_groups(targets.view(rows, -1), coord, slots, links)

    def loss_sum(self, s: dict[str, float]) -> float:
        """Σ of the weighted box terms over the batch's boxes (host statistics ``s``; 0 when off)."""
        total = 0.0
        if self.terms is not None and self.terms.geo is not None:
            geo = self.terms.geo
            total += geo.smoothl1_weight * s["bbox_reg_sum"] + geo.ciou_weight * s["bbox_ciou_sum"]
        if self.terms is not None and self.terms.size is not None:
            size = self.terms.size
            total += max(0.0, size.log_wh_weight) * s["size_log_wh_sum"]
            total += max(0.0, size.oversize_penalty_weight) * s["size_oversize_sum"]
        return total

    def repulsion_value(self, s: dict[str, float]) -> Ratio | None:
        """``weight · Σ pen / n_applied`` of the step (None when off or without an applied pair)."""
        rep = None if self.terms is None else self.terms.repulsion
        if rep is None or s["n_repulsion_applied"] <= 0:
            return None
        return Ratio(rep.weight * s["repulsion_sum"], s["n_repulsion_applied"])

    def report(self, s: dict[str, float], samples: float) -> dict[str, StepValue]:
        """The box keys of a step with coord targets (host statistics ``s``); a ratio over boxes only
        when there is a box (no NaN)."""
        out: dict[str, StepValue] = {}
        if self.terms is None:
            return out
        n = s["n_boxes"]
        geo, size = self.terms.geo, self.terms.size
        if geo is not None:
            reg = geo.smoothl1_weight * s["bbox_reg_sum"]
            ciou = geo.ciou_weight * s["bbox_ciou_sum"]
            if n > 0:
                out[K.LOSS_GEO_BBOX_GEO] = Ratio(reg + ciou, n)
                out[K.LOSS_GEO_BBOX_SMOOTHL1] = Ratio(reg, n)
                out[K.LOSS_GEO_BBOX_CIOU] = Ratio(ciou, n)
            out.update(self._counts("bbox_geo", s, samples))
            out[K.BBOX_GEO_LOSS_PER_SAMPLE] = Ratio(reg + ciou, samples)
        if size is not None:
            lwh = max(0.0, size.log_wh_weight) * s["size_log_wh_sum"]
            over = max(0.0, size.oversize_penalty_weight) * s["size_oversize_sum"]
            if n > 0:
                out[K.LOSS_GEO_BBOX_SIZE_AUX] = Ratio(lwh + over, n)
                out[K.LOSS_GEO_BBOX_LOG_WH] = Ratio(lwh, n)
                out[K.LOSS_GEO_BBOX_OVERSIZE] = Ratio(over, n)
                out[K.BBOX_SIZE_AUX_MEAN_WIDTH] = Ratio(s["size_width_sum"], n)
                out[K.BBOX_SIZE_AUX_MEAN_HEIGHT] = Ratio(s["size_height_sum"], n)
                out[K.BBOX_SIZE_AUX_MEAN_LOG_AREA] = Ratio(s["size_log_area_sum"], n)
            out.update(self._counts("bbox_size_aux", s, samples))
            out[K.BBOX_SIZE_AUX_LOSS_PER_SAMPLE] = Ratio(lwh + over, samples)
        if self.terms.repulsion is not None:
            out[K.COORD_DIAG_ADJACENT_REPULSION_PAIR_COUNT] = s["n_repulsion_pairs"]
            out[K.COORD_DIAG_ADJACENT_REPULSION_APPLIED_COUNT] = s["n_repulsion_applied"]
            value = self.repulsion_value(s)
            if value is not None:
                out[K.COORD_DIAG_ADJACENT_REPULSION] = out[K.COORD_SOFTCE_W1_ADJACENT_REPULSION] = value
                applied = s["n_repulsion_applied"]
                out[K.COORD_DIAG_ADJACENT_REPULSION_COPY_SCORE_MEAN] = Ratio(s["repulsion_copy_sum"], applied)
        return out

    @staticmethod
    def _counts(prefix: str, s: dict[str, float], samples: float) -> dict[str, StepValue]:
        groups, slots, rows, skipped, per_sample = _COUNT_KEYS[prefix]
        n = s["n_boxes"]
        return {
            groups: n,
            slots: 4.0 * n,
            rows: s["n_box_skipped_rows"],
            skipped: s["n_box_skipped_slots"],
            per_sample: Ratio(n, samples),
        }


_COUNT_KEYS = {
    "bbox_geo": (
        K.BBOX_GEO_GROUPS_TOTAL,
        K.BBOX_GEO_COORD_SLOTS_TOTAL,
        K.BBOX_GEO_SKIPPED_INCOMPLETE_ROWS,
        K.BBOX_GEO_SKIPPED_INCOMPLETE_COORD_SLOTS,
        K.BBOX_GEO_GROUPS_PER_SAMPLE,
    ),
    "bbox_size_aux": (
        K.BBOX_SIZE_AUX_GROUPS_TOTAL,
        K.BBOX_SIZE_AUX_COORD_SLOTS_TOTAL,
        K.BBOX_SIZE_AUX_SKIPPED_INCOMPLETE_ROWS,
        K.BBOX_SIZE_AUX_SKIPPED_INCOMPLETE_COORD_SLOTS,
        K.BBOX_SIZE_AUX_GROUPS_PER_SAMPLE,
    ),
}
