"""Desc matching: exact after normalisation by default; with a local encoder folder, also by the
cosine of mean-pooled, L2-normalised embeddings (checked against the same computation by hand on the
demo model used as an encoder), at the threshold; the folder is checked at load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from coordexp.config import ConfigError
from coordexp.detection.descs import ExactDescs, SemanticDescs, normalize_desc
from coordexp.detection.f1ish import f1ish_metrics
from coordexp.detection.objects import DetObject


@pytest.fixture(scope="module")
def encoder_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from coordexp.demo.build import build_demo_assets

    return build_demo_assets(tmp_path_factory.mktemp("encoder"), seed=0, kind="text").model_dir


def test_exact_matching_normalises_case_separators_and_spaces() -> None:
    exact = ExactDescs()
    assert normalize_desc("  Traffic_Light ") == "traffic light" == normalize_desc("traffic-light")
    assert exact.same("Traffic_Light", "traffic  light") and not exact.same("", "")
    assert exact.category("dog", ["cat", "dog"]) == "dog" and exact.category("Dog", ["cat", "dog"]) is None


def _by_hand(folder: Path, text: str) -> torch.Tensor:
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    batch = tok([text], return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state[0].float()
    vector = hidden.mean(0)  # one text, no padding: the masked mean is the plain mean
    return vector / vector.norm()


def test_semantic_cosine_is_the_mean_pooled_normalised_embedding_product(encoder_folder: Path) -> None:
    semantic = SemanticDescs(encoder_folder, threshold=0.6)
    want = float(_by_hand(encoder_folder, "red car") @ _by_hand(encoder_folder, "small dog"))
    assert semantic.cosine("Red_Car", "small  dog") == pytest.approx(want, abs=1e-5)
    assert semantic.same("Red car", "red-car")  # exact after normalisation, whatever the encoder says


def test_semantic_category_and_f1ish_follow_the_threshold(encoder_folder: Path) -> None:
    names = ["cat", "dog", "traffic light"]
    probe = SemanticDescs(encoder_folder, threshold=0.6)
    cosines = {n: probe.cosine("kitten", n) for n in names}
    best = max(cosines, key=lambda n: cosines[n])
    below = SemanticDescs(encoder_folder, threshold=max(0.0, cosines[best] - 1e-4))
    above = SemanticDescs(encoder_folder, threshold=min(1.0, cosines[best] + 1e-4))
    assert below.category("kitten", names) == best and above.category("kitten", names) is None
    gt = [DetObject(best, (0, 0, 100, 100), 0)]
    pred = [DetObject("kitten", (0, 0, 100, 100), 0)]
    assert f1ish_metrics([(pred, gt)], 0.5, "annotated", below)["tp_full"] == 1
    assert f1ish_metrics([(pred, gt)], 0.5, "annotated", above)["pred_ignored"] == 1
    assert f1ish_metrics([(pred, gt)], 0.5, "annotated", ExactDescs())["pred_ignored"] == 1


def test_a_semantic_model_folder_without_a_model_is_refused_at_load(tmp_path: Path) -> None:
    from coordexp.launch import demo_config, parse_config

    raw = demo_config(tmp_path / "demo").model_dump(mode="json")
    raw["custom"]["eval_detection"] = {"enabled": True, "semantic_model": str(tmp_path / "nowhere")}
    with pytest.raises(
        ConfigError, match=r"^custom.eval_detection.semantic_model: no config.json in .*nowhere"
    ):
        parse_config(raw)
