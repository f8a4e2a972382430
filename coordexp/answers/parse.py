"""One entry for every reader of an assistant answer: :func:`parse_answer`.

``answer_format`` (``data.answer_format`` in the training YAML):

- ``json``: the text must be one valid JSON value (:mod:`coordexp.answers.json_answer`);
- ``coordjson``: the text must be one strict CoordJSON container (:mod:`coordexp.answers.coordjson`);
- ``auto`` (default): decided per text. Valid JSON is read as JSON (a CoordJSON answer with bare
  integers is valid JSON and types the same either way); anything else is read as CoordJSON. When
  neither reads it, the problem reported is CoordJSON's if the text holds a coord token outside a
  JSON string's quotes (``<|coord_`` not preceded by a quote), else JSON's.
"""

from __future__ import annotations

from coordexp.answers.coordjson import FieldOrder, parse_coordjson
from coordexp.answers.json_answer import parse_json_answer
from coordexp.answers.model import ANSWER_FORMATS, AnswerFormat, ParsedAnswer


def _looks_like_coordjson(text: str) -> bool:
    i = text.find("<|coord_")
    while i >= 0:
        if i == 0 or text[i - 1] != '"':
            return True
        i = text.find("<|coord_", i + 1)
    return False


def parse_answer(
    text: str, answer_format: AnswerFormat = "auto", *, field_order: FieldOrder | None = None
) -> ParsedAnswer:
    """The typed spans and objects of an assistant answer (training data: strict reading).

    ``field_order`` applies to CoordJSON only (None: either order per record).
    """
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"answer_format must be one of {ANSWER_FORMATS}, got {answer_format!r}")
    if answer_format == "json":
        return parse_json_answer(text)
    if answer_format == "coordjson":
        return parse_coordjson(text, mode="strict", field_order=field_order)
    as_json = parse_json_answer(text)
    if as_json.typed:
        return as_json
    as_coordjson = parse_coordjson(text, mode="strict", field_order=field_order)
    if as_coordjson.typed or _looks_like_coordjson(text):
        return as_coordjson
    return as_json


__all__ = ["parse_answer"]
