"""The Stage-1 metrics collator: ms-swift's collator plus the diagnostics extras.

``build_dataset_metrics_collator(template, ...)`` returns ``collate(batch) -> dict`` that runs the
base collator (``template.data_collator`` by default), then the enrichers (dataset meta always;
instability meta when ``custom.instability_monitor.enabled``; token types when
``custom.token_type_metrics.enabled``; each section parsed once into its model; the box extras when a
box term of the objective is on), then the contract
guards of ``coordexp.contracts`` (``check_enricher_output`` per enricher, ``check_batch_extras`` on
the result).

How the source row's fields reach the collator (ms-swift 4.6)
--------------------------------------------------------------
The Stage-1 rows carry ``assistant_payload``, ``dataset`` (or ``metadata``/``dataset_name``),
``base_idx`` and ``sample_id`` next to ``messages``. ``Template.encode`` returns only ``input_ids``,
``labels``, ``length(s)``: it puts the row's other fields in ``StdTemplateInputs.extra_kwargs`` and
drops them, unless the template has ``remove_unused_columns=False``, when they come back as
``encoded["_extra_kwargs"]`` (swift CLI: ``--remove_unused_columns false``, which also keeps the
columns in swift's dataset loader). The enrichers read the fields from either place
(``enrichers.sample_fields``: ``_extra_kwargs`` over top-level keys):

- top-level keys, the route docs/ms-swift-probe.md recommends: merge them into the encoded dict after
  ``encode`` (``enc.update({k: row[k] for k in ...})``). swift's collator ignores unknown keys in all
  batch modes, so they never reach the model.
- ``_extra_kwargs`` (``remove_unused_columns=False``): survives ``EncodePreprocessor`` and
  ``PackingDataset`` (a pack is a list of encoded dicts).

Through HF ``datasets`` a dict-valued payload becomes an Arrow struct that fills keys missing in some
rows with None (``"poly": None``); token typing retries without None-valued keys (the exact-id check
keeps that safe). A payload stored as JSON text is accepted too (it keeps its key order).

Left alone, ``Template.data_collator`` would copy every ``_extra_kwargs`` field into a padded batch,
i.e. into ``model(**inputs)``. The collator hands the base collator copies of the samples whose
``_extra_kwargs`` lack ``META_FIELDS``, so those fields never become model inputs; other extra
fields pass through unchanged. The copies also protect the raw list: swift's padding-free path
rewrites the list it is given in place (``batch[:] = [packed_row]``).

Batch layouts: padded (list of samples, one row each), padding-free (list of samples joined into one
row) and packed (list of packs; swift flattens them and joins all into one row with ``position_ids``
restarting at 0 and no ``attention_mask``). ``enrichers.group_rows`` maps raw samples to rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from coordexp.config.loading import held_section
from coordexp.contracts import ContractViolation, check_batch_extras, check_enricher_output
from coordexp.diagnostics.warn_once import WarnOnce
from coordexp.generated.batch_extras import BATCH_EXTRAS_KEYS
from coordexp.generated.models.config import InstabilityMonitorConfig, TokenTypeMetricsConfig
from coordexp.rows.box_slots import BoxSlotsEnricher
from coordexp.rows.enrichers import DatasetMetaEnricher, Enricher, InstabilityMetaEnricher
from coordexp.rows.fields import EXTRA_KWARGS_KEY, META_FIELDS
from coordexp.rows.typing_enricher import TokenTypesEnricher

logger = logging.getLogger("coordexp.data_collators.collator")  # the name users configure

Collator = Callable[[list[Any]], dict[str, Any]]


class EnricherWarning(RuntimeWarning):
    """An optional enricher failed; its extras were dropped for that batch."""


def _without_meta(sample: Any) -> Any:
    """A shallow copy of a sample whose ``_extra_kwargs`` no longer holds the collator's meta fields."""
    if not isinstance(sample, Mapping):
        return sample
    copy = dict(sample)
    extra = copy.get(EXTRA_KWARGS_KEY)
    if isinstance(extra, Mapping) and META_FIELDS & extra.keys():
        kept = {k: v for k, v in extra.items() if k not in META_FIELDS}
        # swift adds a batch column per key of any sample's _extra_kwargs: drop an emptied dict.
        if kept:
            copy[EXTRA_KWARGS_KEY] = kept
        else:
            del copy[EXTRA_KWARGS_KEY]
    return copy


def base_collator_input(raw: Sequence[Any]) -> list[Any]:
    """Fresh lists and sample copies for the base collator (it may rewrite the list in place)."""
    return [[_without_meta(s) for s in x] if isinstance(x, list | tuple) else _without_meta(x) for x in raw]


class DatasetMetricsCollator:
    """``collate(batch) -> dict``: base collator, then enrichers, then the extras contract guard."""

    def __init__(
        self, base_collator: Collator, enrichers: Sequence[Enricher], *, contracts_mode: str | None = None
    ) -> None:
        declared = set(BATCH_EXTRAS_KEYS)
        seen: set[str] = set()
        for enricher in enrichers:
            # Wiring errors, not data errors: fail when the collator is built.
            if not enricher.emits <= declared:
                undeclared = sorted(enricher.emits - declared)
                raise ContractViolation(
                    undeclared[0],
                    "undeclared_extra",
                    f"enricher {enricher.name!r} declares extras the batch-extras contract does not: "
                    f"{undeclared}",
                )
            if enricher.emits & seen:
                raise ValueError(
                    f"enricher {enricher.name!r} emits keys another enricher already emits: "
                    f"{sorted(enricher.emits & seen)}"
                )
            seen |= enricher.emits
        self.base_collator = base_collator
        self.enrichers: tuple[Enricher, ...] = tuple(enrichers)
        self.contracts_mode = contracts_mode
        self._warned = WarnOnce()  # enricher names

    def _warn_once(self, enricher: Enricher, exc: BaseException) -> None:
        warned = self._warned.warn(
            enricher.name,
            f"optional batch enricher {enricher.name!r} failed ({type(exc).__name__}: {exc}); its extras "
            f"{sorted(enricher.emits)} are dropped for this batch, collation goes on (warned once)",
            EnricherWarning,
            stacklevel=3,
        )
        if not warned:
            logger.debug("enricher %s failed again: %r", enricher.name, exc)

    def _run(self, enricher: Enricher, batch: dict[str, Any], raw: list[Any]) -> None:
        view = dict(batch)  # the enricher writes into a view, so a failure leaves nothing behind
        try:
            enricher(view, raw)
        except Exception as exc:
            if not enricher.optional:
                raise
            self._warn_once(enricher, exc)
            return
        # Any new or replaced key counts as written (replacing a model input is refused too).
        added = [k for k, v in view.items() if k not in batch or v is not batch[k]]
        # strict raises; warn drops the refused keys from the view (warning once); off keeps them.
        check_enricher_output(enricher.name, added, enricher.emits, view, mode=self.contracts_mode)
        batch.update({k: view[k] for k in added if k in view})

    def __call__(self, batch: list[Any]) -> dict[str, Any]:
        # Snapshot first: the base collator gets its own lists, the enrichers the untouched samples.
        raw = [list(item) if isinstance(item, list | tuple) else item for item in batch]
        out = self.base_collator(base_collator_input(raw))
        for enricher in self.enrichers:
            self._run(enricher, out, raw)
        check_batch_extras(out, mode=self.contracts_mode)
        return out


def build_enrichers(
    template: Any, token_type_cfg: Any = None, instability_monitor_cfg: Any = None, *, box_slots: bool = False
) -> list[Enricher]:
    """Dataset meta always; instability meta and token types when their features are enabled; the box
    extras with ``box_slots`` (a box term of the objective is on).

    A section is the parsed model, or what a caller of the public collator holds (a mapping, an
    attribute object), parsed into the model here; None: the section is absent (off).
    """
    enrichers: list[Enricher] = [DatasetMetaEnricher()]
    if instability_monitor_cfg is not None:
        monitor = held_section(InstabilityMonitorConfig, instability_monitor_cfg)
        if monitor.enabled:
            enrichers.append(InstabilityMetaEnricher(monitor.max_meta_samples))
    if token_type_cfg is not None:
        tokens = held_section(TokenTypeMetricsConfig, token_type_cfg)
        if tokens.enabled:
            enrichers.append(TokenTypesEnricher(template, include=tokens.include, exclude=tokens.exclude))
    if box_slots:
        enrichers.append(BoxSlotsEnricher(template))
    return enrichers


def build_dataset_metrics_collator(
    template: Any,
    base_collator: Collator | None = None,
    token_type_cfg: Any = None,
    instability_monitor_cfg: Any = None,
    *,
    contracts_mode: str | None = None,
    extra_enrichers: Sequence[Enricher] = (),
    box_slots: bool = False,
) -> DatasetMetricsCollator:
    """Wrap ``base_collator`` (default ``template.data_collator``) with the diagnostics enrichers.

    ``token_type_cfg`` / ``instability_monitor_cfg``: the parsed section models, or Mappings or
    attribute-style configs (parsed into the models, strictly; a bad value raises ``ConfigError``).
    ``contracts_mode`` (strict / warn / off) overrides the process default of ``coordexp.contracts``.
    ``extra_enrichers`` run after the built-in ones (they must emit contract-declared keys).
    ``box_slots``: attach the answer parser's boxes (``box_slots`` / ``box_pairs``), which the box terms
    of the objective read.
    """
    base = template.data_collator if base_collator is None else base_collator
    built = build_enrichers(template, token_type_cfg, instability_monitor_cfg, box_slots=box_slots)
    enrichers = built + list(extra_enrichers)
    return DatasetMetricsCollator(base, enrichers, contracts_mode=contracts_mode)


__all__ = [
    "DatasetMetricsCollator",
    "EnricherWarning",
    "base_collator_input",
    "build_dataset_metrics_collator",
    "build_enrichers",
]
