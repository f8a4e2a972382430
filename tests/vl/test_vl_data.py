"""VL rows through the real loader: media paths resolve against the data file, a missing or
unreadable image refuses its row with file:line and reason (the run stops unless tolerated)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from coordexp.demo import DemoAssets
from coordexp.launch.config import DataSection
from coordexp.rows.datasets import build_datasets
from coordexp.rows.fields import SOURCE_LINE_KEY
from coordexp.rows.refused import DataError
from coordexp.run_folder.names import REFUSED_ROWS_FILE

pytestmark = pytest.mark.vl


def _template(assets: DemoAssets) -> Any:
    import swift

    _, processor = swift.get_model_processor(
        str(assets.model_dir), model_type=assets.model_type, load_model=False
    )
    template = swift.get_template(processor, template_type=assets.template_type, max_length=512)
    template.set_mode("train")
    return template


def _copy_data(assets: DemoAssets, dest: Path, n: int) -> tuple[Path, list[dict[str, Any]]]:
    """The first ``n`` lvis rows and their images, in a new folder."""
    src = assets.train_files[0]
    rows = [json.loads(line) for line in src.read_text(encoding="utf-8").splitlines()[:n]]
    for row in rows:
        (dest / row["images"][0]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src.parent / row["images"][0], dest / row["images"][0])
    return dest / "rows.jsonl", rows


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _build(template: Any, files: list[Path], out: Path, fraction: float = 0.0) -> list[dict[str, Any]]:
    data = DataSection.model_validate(
        {"train": [str(p) for p in files], "layout": "padded", "max_refused_fraction": fraction}
    )
    train, _ = build_datasets(template, data, packing_length=512, output_dir=out)
    return list(train)


def test_relative_images_resolve_against_the_data_file(
    vl_assets: DemoAssets, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, rows = _copy_data(vl_assets, tmp_path / "data", 4)
    # Odd but legal forms: the HF Image dict without bytes, two images in one turn, an absolute path.
    rows[1] = {**rows[1], "images": [{"path": rows[1]["images"][0]}]}
    first, second = rows[2]["images"][0], rows[3]["images"][0]
    two_tags = "<image><image>" + rows[2]["messages"][0]["content"].removeprefix("<image>")
    rows[2] = {
        **rows[2],
        "images": [first, second],
        "messages": [{"role": "user", "content": two_tags}, rows[2]["messages"][1]],
    }
    rows[3] = {**rows[3], "images": [str((path.parent / second).resolve())]}
    _write(path, rows)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the working directory has no images/ folder
    encoded = _build(_template(vl_assets), [path], tmp_path / "run")
    assert len(encoded) == 4
    assert [len(enc["image_grid_thw"]) for enc in encoded] == [1, 1, 2, 1]
    for enc in encoded:
        grid = enc["image_grid_thw"]
        image_tokens = sum(1 for t in enc["input_ids"] if t == 151655)
        assert image_tokens == int(grid.prod(dim=-1).sum()) // 4  # 2x2 merge
        assert all(
            label == -100 for t, label in zip(enc["input_ids"], enc["labels"], strict=True) if t == 151655
        )


def test_missing_and_unreadable_images_refuse_their_rows(vl_assets: DemoAssets, tmp_path: Path) -> None:
    path, rows = _copy_data(vl_assets, tmp_path / "data", 4)
    rows[1] = {**rows[1], "images": ["images/nope.png"]}
    (tmp_path / "data" / "images" / "broken.png").write_text("not a png", encoding="utf-8")
    rows[2] = {**rows[2], "images": ["images/broken.png"]}
    _write(path, rows)
    template = _template(vl_assets)
    run = tmp_path / "run"
    with pytest.raises(DataError) as info:
        _build(template, [path], run)
    where = str(path.resolve())
    assert str(info.value).startswith(f"{where}:2: images: media file not found: 'images/nope.png'")
    records = [json.loads(line) for line in (run / REFUSED_ROWS_FILE).read_text().splitlines()]
    assert [(r["file"], r["line"]) for r in records] == [(where, 2), (where, 3)]
    assert f"relative paths resolve against {path.parent.resolve()}" in records[0]["reason"]
    assert records[1]["reason"].startswith("UnidentifiedImageError: ")
    assert records[1]["reason"].endswith("(row media: {'images': ['images/broken.png']})")
    # Tolerated: the run goes on with the two good rows; the summary still lists the refused ones.
    kept = _build(template, [path], tmp_path / "run2", fraction=0.5)
    assert [enc[SOURCE_LINE_KEY] for enc in kept] == [1, 4]
    assert len((tmp_path / "run2" / REFUSED_ROWS_FILE).read_text().splitlines()) == 2
