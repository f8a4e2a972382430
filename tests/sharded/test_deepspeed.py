"""DeepSpeed ZeRO-2 and ZeRO-3 under ``coordexp train``: two gloo ranks on CPU, against plain DDP.

Each run is the real ``coordexp train`` (``sharded_train_script.py`` under ``torch.distributed.run``)
on the demo model with the coord loss on, every Stage-1 feature on, the packing layout, gradient
accumulation 2, evaluation and checkpoints every 2 steps. Checked per ZeRO stage:

- the engine is really on (ZeRO-3: each rank holds 0 elements of the output head outside a gather);
- every logged value equals the DDP run of the same data within ``REL_TOL`` (timings and
  ``total_flos``, which counts the partitioned parameters under ZeRO-3, excepted); measured: at most
  1.3e-6 relative, ``grad_norm`` 9.4e-6 (a norm summed in another order over the partitions);
- ``check-logs`` passes with every enabled key seen in train and eval;
- a resume from the step-2 checkpoint (a copy of the run folder, ``resume_from_checkpoint``) logs
  the same values as the uninterrupted run, one series, and restores the monitor's state.

DeepSpeed is the ``deepspeed`` extra; where it is not installed these tests skip, unless
``COORDEXP_REQUIRE_DEEPSPEED=1`` (set by ``.ci/run``), where they fail.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from coordexp.cli import check_logs
from tests.processes import REPO, child_env, torchrun

SCRIPT = Path(__file__).with_name("sharded_train_script.py")
EXAMPLES = REPO / "examples"
RUN_TIMEOUT_S = 420  # the first DeepSpeed run JIT-builds a small communication op (~1 min)
REL_TOL = 2e-5
_NOT_COMPARED = re.compile(r"speed|runtime|per_second|time|flos|memory")

if importlib.util.find_spec("deepspeed") is None:
    if os.environ.get("COORDEXP_REQUIRE_DEEPSPEED") == "1":
        raise RuntimeError(
            "COORDEXP_REQUIRE_DEEPSPEED=1 but deepspeed is not installed (pip extra 'deepspeed')"
        )
    pytest.skip("deepspeed is not installed (the 'deepspeed' extra)", allow_module_level=True)

pytestmark = pytest.mark.slow


def zero_config(stage: int) -> dict[str, Any]:
    """The DeepSpeed section of the shipped example ``examples/stage1_zero<stage>.yaml``: what users
    copy is what runs here ("auto" fp16/bf16 follow the trainer arguments: off on CPU)."""
    example = yaml.safe_load((EXAMPLES / f"stage1_zero{stage}.yaml").read_text(encoding="utf-8"))
    return dict(example["training"]["deepspeed"])


def write_config(root: Path, name: str, stage: int | None, **training: Any) -> Path:
    from coordexp.launch import demo_config

    raw = demo_config(root / "demo").model_dump(mode="json")
    raw["data"].update(layout="packing", packing_length=512, max_samples=32)
    raw["custom"]["contracts"] = {"mode": "strict"}
    raw["training"].update(
        output_dir=str(root / name),
        max_steps=4,
        gradient_accumulation_steps=2,
        warmup_steps=0,
        logging_steps=1,
        eval_steps=2,
        save_steps=2,
        save_total_limit=None,
        report_to=[],
    )
    if stage is not None:
        raw["training"]["deepspeed"] = zero_config(stage)
    raw["training"].update(training)
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def launch(config: Path, out: Path) -> list[dict[str, Any]]:
    out.mkdir(parents=True, exist_ok=True)
    cmd = torchrun(str(SCRIPT), str(config), str(out))
    proc = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-6000:])
    return [json.loads((out / f"rank{r}.json").read_text(encoding="utf-8")) for r in range(2)]


def records(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "logging.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def assert_same_values(
    expected: list[dict[str, Any]], got: list[dict[str, Any]], skip: frozenset[str] = frozenset()
) -> None:
    assert len(got) == len(expected)
    for want, have in zip(expected, got, strict=True):
        assert set(have) == set(want)
        for key, value in want.items():
            if key in skip or _NOT_COMPARED.search(key) or not isinstance(value, int | float):
                continue
            assert math.isclose(have[key], value, rel_tol=REL_TOL, abs_tol=REL_TOL), (key, value, have[key])


def assert_check_logs_full(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert check_logs.main([str(run_dir)]) == 0
    out = capsys.readouterr().out
    # every key the run's config enables is seen (the catalog also holds keys of terms this run leaves off)
    coverage = re.search(
        r"coverage: train \d+/\d+ catalog keys seen \((\d+)/(\d+) enabled\), "
        r"eval \d+/\d+ \((\d+)/(\d+) enabled\)",
        out,
    )
    assert coverage is not None, out
    train_seen, train_all, eval_seen, eval_all = map(int, coverage.groups())
    assert train_seen == train_all == eval_seen == eval_all > 0, out
    assert "enabled but never seen: none" in out, out


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sharded")


@pytest.fixture(scope="module")
def ddp(root: Path) -> Path:
    ranks = launch(write_config(root, "ddp", None), root / "ddp_probe")
    assert not any(r["deepspeed"] or r["fsdp"] for r in ranks)
    return root / "ddp"


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_matches_ddp_checks_and_resumes(
    stage: int, root: Path, ddp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"zero{stage}"
    config = write_config(root, name, stage)
    ranks = launch(config, root / f"{name}_probe")
    run_dir = root / name
    for rank in ranks:
        assert rank["deepspeed"] and rank["global_step"] == 4
        if stage == 3:  # partitioned: the Stage-1 pass still saw real logits (values equal DDP's)
            assert rank["head_local_numel"] == 0 < rank["head_full_numel"]
        else:
            assert rank["head_local_numel"] == rank["head_full_numel"] > 0
    assert ranks[0]["train_loss"] == pytest.approx(ranks[1]["train_loss"])

    full = records(run_dir)
    assert_same_values(records(ddp), full)
    assert_check_logs_full(run_dir, capsys)
    assert (run_dir / "checkpoint-2").is_dir() and (run_dir / "checkpoint-4").is_dir()

    # Resume a copy of the run from its step-2 checkpoint: the same steps 3-4, one series.
    resumed_dir = root / f"{name}_resumed"
    shutil.copytree(run_dir, resumed_dir, ignore=shutil.ignore_patterns("checkpoint-4", "final"))
    resume_config = write_config(
        root, f"{name}_resumed", stage, resume_from_checkpoint=str(resumed_dir / "checkpoint-2")
    )
    launch(resume_config, root / f"{name}_resumed_probe")
    # HF's end-of-run ``train_loss`` averages the steps of this train() call: steps 3-4 when resumed.
    assert_same_values(full, records(resumed_dir), skip=frozenset({"train_loss"}))
    assert_check_logs_full(resumed_dir, capsys)
    state_full = json.loads((run_dir / "checkpoint-4" / "trainer_state.json").read_text(encoding="utf-8"))
    state_resumed = json.loads(
        (resumed_dir / "checkpoint-4" / "trainer_state.json").read_text(encoding="utf-8")
    )
    # The monitor's per-rank EMA went through the step-2 checkpoint and came out the same at step 4.
    monitor_full, monitor_resumed = monitor_states(state_full), monitor_states(state_resumed)
    assert len(monitor_full["ranks"]) == 2 and all(r["ema"] is not None for r in monitor_full["ranks"])
    for full_rank, resumed_rank in zip(monitor_full["ranks"], monitor_resumed["ranks"], strict=True):
        assert resumed_rank["ema"] == pytest.approx(full_rank["ema"], rel=REL_TOL)


def monitor_states(trainer_state: dict[str, Any]) -> dict[str, Any]:
    """The instability monitor's saved state in a checkpoint's ``trainer_state.json``."""
    found = [
        entry["attributes"]["monitor_state"]
        for entries in trainer_state["stateful_callbacks"].values()
        for entry in (entries if isinstance(entries, list) else [entries])
        if "monitor_state" in entry.get("attributes", {})
    ]
    assert len(found) == 1, trainer_state["stateful_callbacks"]
    return found[0]


def _without_logits(config: Path) -> Path:
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    raw["custom"]["stage1_pass"] = {"materialize_logits": False}
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return config


def test_zero2_without_materialised_logits_matches_ddp(
    root: Path, ddp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ZeRO-2 keeps the whole head weight on every rank: the mode runs and logs what DDP with
    materialised logits logs (every key, the same values), and ``check-logs`` passes."""
    config = _without_logits(write_config(root, "zero2_no_logits", 2))
    ranks = launch(config, root / "zero2_no_logits_probe")
    assert all(rank["deepspeed"] and rank["global_step"] == 4 for rank in ranks)
    run_dir = root / "zero2_no_logits"
    assert_same_values(records(ddp), records(run_dir))
    assert_check_logs_full(run_dir, capsys)


def test_zero3_without_materialised_logits_is_refused_on_every_rank(root: Path) -> None:
    """``custom.stage1_pass.materialize_logits: false`` computes the logits outside the head's forward,
    where ZeRO-3 has not gathered the head weight: refused at start, one line, exit code 2, every rank."""
    config = _without_logits(write_config(root, "zero3_no_logits", 3))
    cmd = torchrun("-m", "coordexp", "train", str(config))
    proc = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert proc.returncode != 0
    message = "custom.stage1_pass.materialize_logits=false with DeepSpeed ZeRO-3"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("coordexp train: error:")]
    assert len(errors) == 2 and all(message in line for line in errors), proc.stderr[-4000:]
    assert "exitcode  : 2" in proc.stderr
    assert not (root / "zero3_no_logits" / "logging.jsonl").exists()
