"""Whether a row's ``assistant_payload`` says what its answer text says.

The text is what the labels are made from, so it is what trains; a payload that disagrees with it
(other objects, descs or coordinates) is reported, never used. Rule: the same number of objects in
the same order, equal descs (stripped), and every geometry of the answer's object present in the
payload's object with the same bins in the same order. A payload object may hold a geometry the
answer leaves out (a JSON payload with ``bbox_2d`` and ``poly`` written as CoordJSON, which has one
geometry per record).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from coordexp.answers.json_answer import parse_json_answer
from coordexp.answers.model import AnswerObject
from coordexp.coord_tokens.payload import serialize_payload


def _without_none(obj: Any) -> Any:
    # HF datasets fills keys missing from some rows' structs with None.
    if isinstance(obj, Mapping):
        return {k: _without_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list | tuple):
        return [_without_none(v) for v in obj]
    return obj


def payload_objects(payload: Any) -> tuple[AnswerObject, ...] | None:
    """The objects of an ``assistant_payload`` (a mapping, or JSON text), None when it has none to
    give (not a mapping, or not serialisable)."""
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except ValueError:
            return None
    if not isinstance(payload, Mapping):
        return None
    try:
        return parse_json_answer(serialize_payload(_without_none(payload))).objects
    except (TypeError, ValueError):
        return None


def objects_disagreement(answer: Sequence[AnswerObject], payload: Sequence[AnswerObject]) -> str | None:
    """How the answer's objects differ from the payload's (the first difference), or None."""
    if len(answer) != len(payload):
        return f"the answer has {len(answer)} objects, assistant_payload {len(payload)}"
    for i, (ours, theirs) in enumerate(zip(answer, payload, strict=True)):
        if (ours.desc or "").strip() != (theirs.desc or "").strip():
            return f"objects[{i}].desc is {ours.desc!r} in the answer, {theirs.desc!r} in assistant_payload"
        kinds = {g.kind: g.bins for g in theirs.geometries}
        for geometry in ours.geometries:
            if kinds.get(geometry.kind) != geometry.bins:
                given = list(kinds[geometry.kind]) if geometry.kind in kinds else "absent"
                return (
                    f"objects[{i}].{geometry.kind} is {list(geometry.bins)} in the answer, "
                    f"{given} in assistant_payload"
                )
    return None


def payload_disagreement(payload: Any, answer: Sequence[AnswerObject]) -> str | None:
    """Why ``payload`` disagrees with the answer's objects, or None when it agrees."""
    theirs = payload_objects(payload)
    if theirs is None:
        return "assistant_payload is not a JSON object of an answer"
    return objects_disagreement(answer, theirs)


__all__ = ["objects_disagreement", "payload_disagreement", "payload_objects"]
