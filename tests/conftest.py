"""Suite-wide settings: strict contract guards and one torch thread (2 threads gave flaky slow steps)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The pre-pass cache of this test session (and of the runs it starts), never the user's ~/.cache.
os.environ.setdefault("COORDEXP_CACHE_DIR", tempfile.mkdtemp(prefix="coordexp-row-index-"))
atexit.register(shutil.rmtree, os.environ["COORDEXP_CACHE_DIR"], ignore_errors=True)
torch.set_num_threads(1)

from coordexp.contracts import reset_warned, set_default_mode  # noqa: E402

set_default_mode("strict")


@pytest.fixture(autouse=True)
def _fresh_contract_warnings() -> Iterator[None]:
    """Each test sees warn-once state afresh, so 'warns once' is observable per test."""
    reset_warned()
    yield
    set_default_mode("strict")
