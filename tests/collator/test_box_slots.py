"""The box extras on real ms-swift batches: the answer parser's boxes (JSON and CoordJSON answers),
their links to the previous object, polys left out, unread samples marked, padded and packed rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from coordexp.answers import write_coordjson
from coordexp.coord_tokens.codec import coord_token, get_coord_token_ids
from coordexp.coord_tokens.payload import serialize_payload
from coordexp.generated.batch_extras import BOX_PAIRS_KEY, BOX_SLOTS_KEY, BoxPair, BoxSlot
from coordexp.rows.collator import build_dataset_metrics_collator
from coordexp.rows.fields import ANSWER_FORMAT_KEY, ANSWER_TEXTS_KEY, SOURCE_FILE_KEY, SOURCE_LINE_KEY

NONE, UNREAD = int(BoxSlot.NONE), int(BoxSlot.UNREAD)
FIRST, OTHER, SAME, NO_LINK = (
    int(BoxPair.FIRST),
    int(BoxPair.OTHER_DESC),
    int(BoxPair.SAME_DESC),
    int(BoxPair.NONE),
)


def _box(base: int) -> list[str]:
    return [coord_token(base + d) for d in (0, 7, 50, 99)]


# A dense scene: two cats (same desc after normalisation), a poly whose desc says "polyester" and holds
# "bbox_2d" (the reference's text heuristic trips on both), then a box after the poly.
PAYLOAD = {
    "objects": [
        {"desc": "cat", "bbox_2d": _box(100)},
        {"desc": "Cat ", "bbox_2d": _box(110)},
        {"desc": "polyester bbox_2d", "poly": [coord_token(v) for v in (5, 6, 30, 8, 60, 90)]},
        {"desc": "cat", "bbox_2d": _box(300)},
        {"desc": "dog", "bbox_2d": _box(400)},
    ]
}
# per object: (is box, link)
EXPECTED = [(True, FIRST), (True, SAME), (False, NO_LINK), (True, FIRST), (True, OTHER)]


def _row(text: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": "Detect the objects."},
            {"role": "assistant", "content": text},
        ],
        "dataset": "lvis",
    }


def _encoded(template: Any, text: str, answer_format: str, line: int = 1) -> dict[str, Any]:
    enc: dict[str, Any] = template.encode(_row(text), return_length=True)
    enc[ANSWER_TEXTS_KEY], enc[ANSWER_FORMAT_KEY] = [text], answer_format
    enc[SOURCE_FILE_KEY], enc[SOURCE_LINE_KEY] = "train.jsonl", line
    return enc


def _coord_runs(template: Any, labels: torch.Tensor, slots: torch.Tensor, links: torch.Tensor) -> list[Any]:
    """(slot codes, link) per object, read off the supervised coord positions in order."""
    coord = torch.isin(labels, torch.tensor(get_coord_token_ids(template.tokenizer)))
    return list(zip(slots[coord].tolist(), links[coord].tolist(), strict=True))


def _expected_runs() -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for (is_box, link), obj in zip(EXPECTED, PAYLOAD["objects"], strict=True):
        if is_box:
            runs += [(s, link) for s in range(4)]
        else:
            runs += [(NONE, NO_LINK)] * len(obj["poly"])
    return runs


TEXTS = {
    "coordjson": write_coordjson(
        [
            (o["desc"], kind, [int(t[len("<|coord_") : -2]) for t in o[kind]])
            for o in PAYLOAD["objects"]
            for kind in ("bbox_2d", "poly")
            if kind in o
        ]
    ),
    "json": serialize_payload(PAYLOAD),
}


@pytest.mark.parametrize("answer_format", ["coordjson", "json"])
def test_boxes_come_from_the_answer_parser(template: Any, answer_format: str) -> None:
    collate = build_dataset_metrics_collator(template, box_slots=True)
    out = collate([_encoded(template, TEXTS[answer_format], answer_format)])
    slots, links = out[BOX_SLOTS_KEY][0], out[BOX_PAIRS_KEY][0]
    assert slots.shape == out["labels"].shape[1:]
    assert _coord_runs(template, out["labels"][0], slots, links) == _expected_runs()
    # everything that is no coordinate of a box is NONE (text, format, suffix, prompt, padding)
    assert ((slots >= 0) == (links >= 0)).all() and int((slots >= 0).sum()) == 16


def test_packed_rows_keep_each_samples_links(make_template: Callable[..., Any]) -> None:
    template = make_template(packing=True)
    collate = build_dataset_metrics_collator(template, box_slots=True)
    texts = [TEXTS["coordjson"], TEXTS["json"]]
    samples = [
        _encoded(template, t, f, i) for i, (t, f) in enumerate(zip(texts, ("coordjson", "json"), strict=True))
    ]
    out = collate([samples])
    assert out["labels"].shape[0] == 1
    runs = _coord_runs(template, out["labels"][0], out[BOX_SLOTS_KEY][0], out[BOX_PAIRS_KEY][0])
    assert runs == _expected_runs() * 2  # the second sample's first box is FIRST again: no pair across


def test_a_truncated_answer_is_unread_and_warned_once(
    make_template: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    template = make_template()
    enc = _encoded(template, TEXTS["coordjson"], "coordjson", line=7)
    cut = len(enc["input_ids"]) - 12  # cut inside the last box, as max_length truncation does
    enc = {**enc, "input_ids": enc["input_ids"][:cut], "labels": enc["labels"][:cut], "length": cut}
    whole = _encoded(template, TEXTS["json"], "json", line=8)
    collate = build_dataset_metrics_collator(template, box_slots=True)
    with caplog.at_level("WARNING", logger="coordexp.data_collators.enrichers"):
        out = collate([enc, whole, enc])
    labels, slots = out["labels"], out[BOX_SLOTS_KEY]
    assert (slots[0][labels[0] != -100] == UNREAD).all() and (slots[0][labels[0] == -100] == NONE).all()
    assert _coord_runs(template, labels[1], slots[1], out[BOX_PAIRS_KEY][1]) == _expected_runs()
    warned = [r.getMessage() for r in caplog.records if "gives no boxes" in r.getMessage()]
    assert len(warned) == 1 and "train.jsonl:7" in warned[0]


def test_without_box_terms_there_are_no_box_extras(template: Any) -> None:
    out = build_dataset_metrics_collator(template)([_encoded(template, TEXTS["json"], "json")])
    assert BOX_SLOTS_KEY not in out and BOX_PAIRS_KEY not in out
