"""When a predicted desc names a GT desc: exact after normalisation, or, with
``custom.eval_detection.semantic_model`` (a local folder), also by embedding cosine.

- :class:`ExactDescs` (the default): ``normalize_desc(a) == normalize_desc(b)``, non-empty.
- :class:`SemanticDescs`: exact, or the cosine of the two descs' embeddings >= ``semantic_threshold``.
  An embedding is the encoder's last hidden state mean-pooled over the attention mask and
  L2-normalised (at most 64 tokens), as the reference computes it; the encoder is an HF ``AutoModel``
  with its tokenizer loaded from the local folder only (never a hub download), on CPU, once per run;
  each distinct desc is embedded once.

:meth:`same` decides F1-ish scope and a match's desc; :meth:`category` maps a prediction to a
COCO category: the exact GT desc when one is equal as written, else the most similar one at or
above the threshold, else none (the prediction is dropped, not a false positive).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_SPACES = re.compile(r"\s+")
_MAX_TOKENS = 64


def normalize_desc(desc: str) -> str:
    """Case-folded, ``_`` and ``-`` read as spaces, runs of spaces as one, stripped."""
    return _SPACES.sub(" ", desc.casefold().replace("_", " ").replace("-", " ")).strip()


class ExactDescs:
    """Desc matching by equality after :func:`normalize_desc`."""

    def same(self, pred: str, gt: str) -> bool:
        norm = normalize_desc(pred)
        return bool(norm) and norm == normalize_desc(gt)

    def category(self, pred: str, names: Sequence[str]) -> str | None:
        return pred if pred in names else None


class SemanticDescs(ExactDescs):
    """Exact, or embedding cosine >= ``threshold`` (see the module docstring)."""

    def __init__(self, folder: str | Path, threshold: float) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.threshold = threshold
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
        self._cache: dict[str, Any] = {}

    def _embed(self, texts: Sequence[str]) -> None:
        import torch

        todo = sorted({t for t in texts if t not in self._cache})
        if not todo:
            return
        batch = self.tokenizer(
            todo, padding=True, truncation=True, max_length=_MAX_TOKENS, return_tensors="pt"
        )
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state.float()
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
        for text, vector in zip(todo, pooled, strict=True):
            self._cache[text] = vector

    def cosine(self, a: str, b: str) -> float:
        na, nb = normalize_desc(a), normalize_desc(b)
        if not na or not nb:
            return 0.0
        self._embed([na, nb])
        return float(self._cache[na] @ self._cache[nb])

    def same(self, pred: str, gt: str) -> bool:
        return super().same(pred, gt) or self.cosine(pred, gt) >= self.threshold

    def category(self, pred: str, names: Sequence[str]) -> str | None:
        if pred in names:
            return pred
        scored = [(self.cosine(pred, name), name) for name in names]
        best = max(scored, default=(0.0, None))
        return best[1] if best[0] >= self.threshold else None


def desc_matcher(semantic_model: str | None, threshold: float) -> ExactDescs:
    """The matcher ``custom.eval_detection`` asks for."""
    return ExactDescs() if semantic_model is None else SemanticDescs(semantic_model, threshold)
