"""The pre-pass measures Qwen3-VL rows from their image headers: the index it builds (lengths,
labels, refusals and their reasons) equals the one built by decoding every image, over images of
many sizes, modes and formats, rows with two images, rows made too long by their image, and files
that are not images; and the shortcut decodes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from coordexp.demo import DemoAssets
from coordexp.rows import image_lengths
from coordexp.rows.row_index import build_index, scan_file
from tests.vl.test_vl_data import _copy_data, _template

pytestmark = pytest.mark.vl

# (width, height, mode, format): odd sizes, both orientations, tiny, large, alpha, grey, palette
_IMAGES = [
    (640, 480, "RGB", "PNG"),
    (333, 517, "RGB", "JPEG"),
    (1000, 200, "L", "PNG"),
    (20, 30, "RGB", "PNG"),
    (1400, 1100, "RGBA", "PNG"),
    (480, 640, "P", "PNG"),
    (97, 1013, "CMYK", "JPEG"),
]


def _images(folder: Path) -> list[str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for k, (w, h, mode, fmt) in enumerate(_IMAGES):
        name = f"img{k}.{fmt.lower()}"
        Image.new(mode, (w, h), 90 + k).save(folder / name, format=fmt)
        names.append(f"images/{name}")
    (folder / "not_an_image.png").write_bytes(b"this is text, not a PNG")
    return names


def _rows(assets: DemoAssets, folder: Path) -> Path:
    path, rows = _copy_data(assets, folder, 1)
    names = _images(folder / "images")
    base = rows[0]
    out = [{**base, "images": [name], "sample_id": f"one-{k}"} for k, name in enumerate(names)]
    two = {**base, "images": [names[3], names[2]], "sample_id": "two"}
    two["messages"] = [dict(m) for m in base["messages"]]
    two["messages"][0] = {**two["messages"][0], "content": "<image><image>" + _text(base["messages"][0])}
    out += [two, {**base, "images": ["images/not_an_image.png"], "sample_id": "not-an-image"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in out), encoding="utf-8")
    return path


def _text(message: dict[str, Any]) -> str:
    return str(message["content"]).replace("<image>", "")


def test_header_lengths_equal_decoded_lengths(
    vl_assets: DemoAssets, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _rows(vl_assets, tmp_path / "data")
    template = _template(vl_assets)  # max_length 512: the 1400x1100 image makes its row too long
    scans = [scan_file(str(path))]
    decoded = build_index(template, scans, num_proc=1, image_check="decode")

    from PIL import ImageFile

    loads: list[str] = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(
        ImageFile.ImageFile,
        "load",
        lambda self: loads.append(str(getattr(self, "filename", ""))) or real_load(self),
    )
    header = build_index(template, scans, num_proc=1, image_check="header")
    monkeypatch.undo()
    two = build_index(template, scans, num_proc=2, image_check="header")  # a first row per process

    for name in ("file", "offset", "line", "length", "label"):
        assert np.array_equal(getattr(header, name), getattr(decoded, name)), name
        assert np.array_equal(getattr(two, name), getattr(decoded, name)), name
    assert header.refused == decoded.refused == two.refused
    reasons = {line: reason for _, line, reason in header.refused}
    assert "MaxLengthError" in reasons[5] and "not_an_image.png" in reasons[9], reasons
    assert sorted(reasons) == [5, 9], reasons
    assert len(header) == len(_IMAGES) - 1 + 1  # the two-image row is kept, the too-long one is not
    # Decoded from files: the first row (checked against the full encode once), the refused rows
    # (the template's own words), nothing else.
    decoded_files = {Path(f).name for f in loads if f}
    assert decoded_files <= {"img0.png", "img4.png", "not_an_image.png"}, decoded_files


def test_a_size_rule_the_shortcut_gets_wrong_turns_it_off(
    vl_assets: DemoAssets, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _rows(vl_assets, tmp_path / "data")
    template = _template(vl_assets)
    scans = [scan_file(str(path))]
    decoded = build_index(template, scans, num_proc=1, image_check="decode")
    monkeypatch.setattr(image_lengths.ImageSizeLengths, "delta", lambda self, size: 1)
    header = build_index(template, scans, num_proc=1, image_check="header")
    assert np.array_equal(header.length, decoded.length)
    assert header.refused == decoded.refused
    assert "disagree with the template" in capsys.readouterr().err


def test_a_damaged_image_is_named_when_its_batch_comes_or_refused_by_decode(
    vl_assets: DemoAssets, tmp_path: Path
) -> None:
    """A JPEG cut short keeps its header: the header pre-pass keeps its row and reading the row
    stops the run naming file:line; ``image_check: decode`` refuses it at start."""
    from coordexp.launch.config import DataSection
    from coordexp.rows.datasets import build_datasets
    from coordexp.rows.refused import DataError

    path = _rows(vl_assets, tmp_path / "data")
    jpeg = tmp_path / "data" / "images" / "img1.jpeg"
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    template = _template(vl_assets)
    settings = {"train": [str(path)], "max_refused_fraction": 0.5, "cache_dir": str(tmp_path / "cache")}
    rows, _ = build_datasets(
        template, DataSection.model_validate(settings), packing_length=512, output_dir=tmp_path / "a"
    )
    assert [int(n) for n in rows.row_index.line[:3]] == [1, 2, 3]
    with pytest.raises(DataError, match=rf"^{path.resolve()}:2: .*truncated.*image_check: decode"):
        rows[1]
    decode = DataSection.model_validate({**settings, "image_check": "decode"})
    rows, _ = build_datasets(template, decode, packing_length=512, output_dir=tmp_path / "b")
    assert 2 not in rows.row_index.line.tolist()
    refused = (tmp_path / "b" / "coordexp_refused_rows.jsonl").read_text(encoding="utf-8")
    assert '"line": 2' in refused and "truncated" in refused
