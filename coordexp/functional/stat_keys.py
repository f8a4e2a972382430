"""Names of the sufficient statistics returned by :func:`stage1_stats` and :func:`coord_loss`.

Every value is a 0-d float32 tensor on the logits' device: a sum or a count (``n_*``), except
``max_abs_logit`` (a max) and ``bin_abs_err_p90`` (a quantile). A key whose feature is off, or that has
nothing to count, is 0. Host code divides (see :func:`coordexp.functional.reduce.safe_div`).
"""

from __future__ import annotations

from typing import Final

TOKEN_STAT_KEYS: Final = (
    "n_sup",  # supervised positions (target != -100)
    "n_top1",  # ... whose argmax over the full vocab is the target
    "n_top5",  # ... whose target is in the full-vocab top-5 (0 unless top5)
    "n_noncoord",  # supervised GT non-coord positions (type when typed, else coord-id lookup)
    "n_noncoord_top1",
    "n_typed",  # supervised positions with a type (!= -1)
    "n_type_desc",
    "n_type_desc_top1",
    "n_type_desc_top5",
    "n_type_format",
    "n_type_format_top1",
    "n_type_format_top5",
    "n_type_coord",
    "n_type_coord_top1",
    "n_type_coord_top5",
)
MONITOR_STAT_KEYS: Final = (
    "n_gt_coord",  # supervised GT coord positions (= n_sup - n_noncoord), denominator of the first flip
    "n_flip_coord_to_noncoord",  # GT coord, argmax not a coord id
    "n_flip_text_to_coord",  # GT non-coord, argmax a coord id
    "n_flip_format_to_coord",  # GT FORMAT (types), argmax a coord id
    "n_flip_desc_to_coord",  # GT DESC (types), argmax a coord id
)
MASS_STAT_KEYS: Final = (
    "mass_sum_coord",  # Σ coord-vocab softmax mass (T = 1) over the (subsampled) GT coord positions
    "mass_sum_text",
    "mass_sum_format",
    "mass_sum_desc",
    "mass_n_coord",  # the matching counts
    "mass_n_text",
    "mass_n_format",
    "mass_n_desc",
)
INSTABILITY_STAT_KEYS: Final = (
    "max_abs_logit",  # max |logit| over finite logits of supervised rows
    "n_nonfinite_logits",  # non-finite logits in supervised rows
)
COORD_DIAG_STAT_KEYS: Final = (
    "n_coord",  # supervised positions whose target is a coord id
    "soft_ce_sum",
    "w1_sum",
    "ce_sum",
    "gate_sum",  # clamped gate; 0 when gate_weight == 0
    "coord_vocab_mass_sum",  # exp(-unclamped gate); 0 when gate_weight == 0
    "acc_top5_hits",  # GT bin in the top-5 coord bins
    "p_gt_sum",
    "margin_sum",  # max z - z[t]
    "bin_abs_err_sum",  # |E_p[k] - t|
    "bin_abs_err_p90",  # torch.quantile(|E_p[k] - t|, 0.9), linear
    "w1_to_delta_sum",  # E_p[|k - t|]
)
BASE_CE_STAT_KEYS: Final = (
    "base_ce_sum",  # Σ full-vocab CE over supervised non-coord targets (0 unless base CE is computed)
    "n_base",  # supervised targets that are not coord ids (needs a coord slice)
)
TERM_STAT_KEYS: Final = (
    "n_text_gate",  # text-gate positions (text_gate_weight != 0 and a coord target in the batch)
    "text_gate_sum",  # Σ g = -log(1 - m) over them
    "text_coord_mass_sum",  # Σ m (coord-vocabulary mass under the tempered full softmax)
    "n_repulsion_pairs",  # objects with a previous object in the same sample
    "n_repulsion_applied",  # pairs the filter applies the repulsion to
    "repulsion_sum",  # Σ max(0, copy - copy_margin)^2 over applied pairs
    "repulsion_copy_sum",  # Σ copy over applied pairs
)
BOX_STAT_KEYS: Final = (
    "n_boxes",  # complete coord quartets (rows whose coord count is a multiple of 4)
    "n_box_skipped_rows",  # rows dropped: coord count not a multiple of 4
    "n_box_skipped_slots",  # their coord positions
    "bbox_reg_sum",  # Σ SmoothL1 regression r_b (bbox_geo)
    "bbox_ciou_sum",  # Σ CIoU loss (bbox_geo)
    "size_log_wh_sum",  # Σ log-wh SmoothL1 (bbox_size_aux)
    "size_oversize_sum",  # Σ oversize penalty
    "size_width_sum",  # Σ predicted width
    "size_height_sum",  # Σ predicted height
    "size_log_area_sum",  # Σ ln max(w h, eps)
)
STAT_KEYS: Final = (
    TOKEN_STAT_KEYS
    + MONITOR_STAT_KEYS
    + MASS_STAT_KEYS
    + INSTABILITY_STAT_KEYS
    + COORD_DIAG_STAT_KEYS
    + BASE_CE_STAT_KEYS
    + TERM_STAT_KEYS
    + BOX_STAT_KEYS
)
"""All keys, in a fixed order; every stats dict holds exactly these."""
