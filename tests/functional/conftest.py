"""Shared setup of the functional tests: single-threaded, deterministic CPU runs."""

from __future__ import annotations

import torch

torch.set_num_threads(1)
