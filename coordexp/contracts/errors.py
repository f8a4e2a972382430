"""The one exception type of the contract guards."""

from __future__ import annotations


class ContractViolation(Exception):
    """Something the contract does not declare was about to be written or passed on.

    ``key`` is the offending metric key or batch-extras key, ``rule`` the short name of the broken
    rule (e.g. ``undeclared``, ``per_dataset_bucket``, ``non_finite``, ``dtype``, ``shape``).
    """

    def __init__(self, key: str, rule: str, detail: str) -> None:
        self.key = key
        self.rule = rule
        self.detail = detail
        super().__init__(f"contract violation [{rule}] for {key!r}: {detail}")
