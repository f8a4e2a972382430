"""Pure, sync-free tensor functions of Stage-1: statistics, the coord loss and their helpers.

Tensors in, tensors out. Statistics are sufficient statistics (sums and counts as 0-d device
tensors); host code moves them in one transfer (:func:`stats_to_host`) and divides
(:func:`safe_div`).
"""

from coordexp.functional.coord_config import CoordLossConfig
from coordexp.functional.coord_math import (
    SANITIZE_LIMIT,
    coord_terms,
    gaussian_soft_targets,
    sanitize_logits,
    w1_distance,
)
from coordexp.functional.coord_slice import CoordSlice
from coordexp.functional.losses import ce_loss, coord_loss
from coordexp.functional.reduce import padded_quantile, safe_div, stats_to_host
from coordexp.functional.stage1_pass import DEFAULT_CHUNK_SIZE, stage1_stats
from coordexp.functional.stat_keys import (
    BASE_CE_STAT_KEYS,
    COORD_DIAG_STAT_KEYS,
    INSTABILITY_STAT_KEYS,
    MASS_STAT_KEYS,
    MONITOR_STAT_KEYS,
    STAT_KEYS,
    TOKEN_STAT_KEYS,
)
from coordexp.functional.sync_count import SyncCounter
from coordexp.functional.targets import (
    IGNORE_INDEX,
    TYPE_COORD,
    TYPE_DESC,
    TYPE_FORMAT,
    TYPE_IGNORE,
    next_token_targets,
    next_token_types,
)

__all__ = [
    "BASE_CE_STAT_KEYS",
    "COORD_DIAG_STAT_KEYS",
    "DEFAULT_CHUNK_SIZE",
    "IGNORE_INDEX",
    "INSTABILITY_STAT_KEYS",
    "MASS_STAT_KEYS",
    "MONITOR_STAT_KEYS",
    "SANITIZE_LIMIT",
    "STAT_KEYS",
    "TOKEN_STAT_KEYS",
    "TYPE_COORD",
    "TYPE_DESC",
    "TYPE_FORMAT",
    "TYPE_IGNORE",
    "CoordLossConfig",
    "CoordSlice",
    "SyncCounter",
    "ce_loss",
    "coord_loss",
    "coord_terms",
    "gaussian_soft_targets",
    "next_token_targets",
    "next_token_types",
    "padded_quantile",
    "safe_div",
    "sanitize_logits",
    "stage1_stats",
    "stats_to_host",
    "w1_distance",
]
