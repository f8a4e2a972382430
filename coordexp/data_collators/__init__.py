"""Stage-1 collation: ms-swift's collator plus the diagnostics batch extras."""

from coordexp.data_collators.collator import (
    DatasetMetricsCollator,
    EnricherWarning,
    build_dataset_metrics_collator,
)
from coordexp.data_collators.enrichers import (
    DatasetMetaEnricher,
    Enricher,
    InstabilityMetaEnricher,
)
from coordexp.data_collators.token_types import TokenType, compute_token_types, dataset_included
from coordexp.data_collators.typing_enricher import TokenTypesEnricher

__all__ = [
    "DatasetMetaEnricher",
    "DatasetMetricsCollator",
    "Enricher",
    "EnricherWarning",
    "InstabilityMetaEnricher",
    "TokenType",
    "TokenTypesEnricher",
    "build_dataset_metrics_collator",
    "compute_token_types",
    "dataset_included",
]
