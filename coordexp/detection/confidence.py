"""A predicted box's confidence from the log-probs of the tokens that wrote it
(``custom.eval_detection.score_mode: coord_logprob``; ``constant`` gives every box the same score).

For a kept object of a generated answer, with ``lp(t)`` the log-prob of generated token ``t`` under
the distribution it was sampled from (after the logits processors, fp32):

    score_geom = exp(mean of lp(t) over the tokens that write its geometry's elements)
    score_desc = exp(mean of lp(t) over the tokens that write its desc's characters)
    score      = 0.7 * score_geom + 0.3 * score_desc   (score_geom alone when the desc is empty)

The tokens of an element or a desc are found by character offsets: the parser gives each element's
and the desc's characters, and each generated token's characters come from decoding the generated
ids prefix by prefix. (The reference searches the token trace for the expected coord-token texts
and walks back from the first one to find the desc, which under ``geometry_first`` order fuses each
box with the previous object's desc; offsets take the object's own desc.) A box with a non-finite
log-prob, or a score outside (0, 1], gets no score (``None``) and is dropped from the scored
predictions, counted, not a false positive.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

from coordexp.answers.model import AnswerObject, scan_json_string
from coordexp.detection.objects import ReadAnswer

GEOMETRY_WEIGHT = 0.7
DESC_WEIGHT = 0.3
_DESC_VALUE = re.compile(r'"desc"\s*:\s*"')


def token_spans(ids: Sequence[int], decode: Callable[[Sequence[int]], str]) -> list[tuple[int, int]]:
    """Each token's ``(start, end)`` characters in ``decode(ids)``, from the prefix decodes (exact for
    byte-level tokenizers, where a token alone may decode to part of a character)."""
    spans: list[tuple[int, int]] = []
    previous = 0
    for k in range(len(ids)):
        end = len(decode(ids[: k + 1]))
        spans.append((previous, max(previous, end)))
        previous = max(previous, end)
    return spans


def _covering(spans: Sequence[tuple[int, int]], start: int, end: int) -> list[int]:
    return [k for k, (s, e) in enumerate(spans) if s < end and e > start]


def desc_chars(text: str, obj: AnswerObject) -> tuple[int, int] | None:
    """The characters of the object's desc value (quotes excluded), None when it has none."""
    found = _DESC_VALUE.search(text, obj.start, obj.end)
    if found is None:
        return None
    try:
        _, after = scan_json_string(text, found.end(), True)
    except ValueError:
        return None
    return (found.end(), after - 1)


def object_scores(
    read: ReadAnswer, spans: Sequence[tuple[int, int]], logprobs: Sequence[float]
) -> list[float | None]:
    """The confidence of each of ``read.objects`` (None: unscorable), given the generated tokens'
    character spans in the answer text and their log-probs."""
    parsed = read.parsed
    scores: list[float | None] = []
    for det in read.objects:
        obj = parsed.objects[det.index]
        geo_tokens = sorted(
            {
                k
                for g in obj.geometries
                for slot in g.slots
                for k in _covering(spans, read.offset + slot.start, read.offset + slot.end)
            }
        )
        if not geo_tokens:
            scores.append(None)
            continue
        geom = math.exp(math.fsum(logprobs[k] for k in geo_tokens) / len(geo_tokens))
        score = geom
        chars = desc_chars(parsed.text, obj)
        if chars is not None and chars[1] > chars[0]:
            desc_tokens = _covering(spans, read.offset + chars[0], read.offset + chars[1])
            if desc_tokens:
                desc = math.exp(math.fsum(logprobs[k] for k in desc_tokens) / len(desc_tokens))
                score = (GEOMETRY_WEIGHT * geom + DESC_WEIGHT * desc) / (GEOMETRY_WEIGHT + DESC_WEIGHT)
        scores.append(score if math.isfinite(score) and 0.0 < score <= 1.0 else None)
    return scores
