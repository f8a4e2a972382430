"""Runtime contract guards.

The contracts are the schemas in ``schemas/``; the generated tables in ``coordexp.generated`` carry
them into the runtime. These guards refuse what the contracts do not declare:

- :func:`check_metric_key`: a metric write must use a declared, coordexp-owned train key with a
  finite value in range, and never a per-dataset bucket.
- :func:`check_batch_extras`: every declared extra in a batch has its declared type, dtype, shape
  and length; :func:`check_enricher_output` refuses keys an enricher added without declaring them.

Modes (``custom.contracts.mode``): ``strict`` raises :class:`ContractViolation`, ``warn`` warns
once per key and rule and drops the offending write or extra, ``off`` skips the checks.
"""

from coordexp.contracts.catalog import classify_log_key, keys_written_under, strip_eval_prefix
from coordexp.contracts.errors import ContractViolation
from coordexp.contracts.extras_check import check_batch_extras, check_enricher_output, extra_violation
from coordexp.contracts.metric_keys import check_metric_key, find_dataset_bucket, metric_key_violation
from coordexp.contracts.modes import (
    GUARD_MODES,
    ContractWarning,
    GuardMode,
    contracts_mode,
    default_mode,
    reset_warned,
    set_default_mode,
)

__all__ = [
    "GUARD_MODES",
    "ContractViolation",
    "ContractWarning",
    "GuardMode",
    "check_batch_extras",
    "check_enricher_output",
    "check_metric_key",
    "classify_log_key",
    "contracts_mode",
    "default_mode",
    "extra_violation",
    "find_dataset_bucket",
    "keys_written_under",
    "metric_key_violation",
    "reset_warned",
    "set_default_mode",
    "strip_eval_prefix",
]
