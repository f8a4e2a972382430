"""Assistant answers: their grammars, typed character spans and the objects they hold.

One parser per format, used by every reader of an answer (token types today; the coord-slot
grouping of the box losses and the detection evaluation build on the same objects):
:func:`parse_answer` (``auto`` / ``json`` / ``coordjson``), :func:`parse_coordjson` (strict for
training data, salvage for model output) and :func:`parse_json_answer`.
"""

from coordexp.answers.coordjson import FieldOrder, balanced_end, parse_coordjson, write_coordjson
from coordexp.answers.json_answer import parse_json_answer
from coordexp.answers.model import (
    ANSWER_FORMATS,
    AnswerFormat,
    AnswerObject,
    AnswerProblem,
    CoordSlot,
    Geometry,
    ParsedAnswer,
    slot_token_groups,
    typed_runs,
)
from coordexp.answers.parse import parse_answer

__all__ = [
    "ANSWER_FORMATS",
    "AnswerFormat",
    "AnswerObject",
    "AnswerProblem",
    "CoordSlot",
    "FieldOrder",
    "Geometry",
    "ParsedAnswer",
    "balanced_end",
    "parse_answer",
    "parse_coordjson",
    "parse_json_answer",
    "slot_token_groups",
    "typed_runs",
    "write_coordjson",
]
