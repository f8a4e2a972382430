"""FSDP is never silently something else.

On CPU accelerate drops the FSDP plugin without a word, so two ranks with ``training.fsdp`` would
train as plain DDP and exit 0. ``coordexp train`` refuses that, in one line, at two depths:

- at config load (before anything is loaded): no GPU visible, or not a distributed launch;
- after the trainer is built: ``trainer.is_fsdp_enabled`` false for any other reason. Two real gloo
  ranks reproduce the silent-DDP case with the load-time check switched off
  (``fsdp_refusal_script.py``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from coordexp.cli.main import main
from tests.processes import child_env, torchrun

SCRIPT = Path(__file__).with_name("fsdp_refusal_script.py")
FSDP = {"fsdp": True, "fsdp_config": {"version": 2}}

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")


def _config(tmp_path: Path) -> Path:
    from coordexp.launch import demo_config

    raw = demo_config(tmp_path / "demo").model_dump(mode="json")
    raw["data"].update(val=[], max_samples=8)
    raw["training"].update(output_dir=str(tmp_path / "run"), max_steps=2, report_to=[], **FSDP)
    path = tmp_path / "fsdp.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_fsdp_without_gpu_stops_at_load_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path)
    capsys.readouterr()
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"{config}: training.fsdp: FSDP needs GPUs" in err[0]
    assert "plain DDP" in err[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_two_ranks_where_accelerate_drops_fsdp_stop_with_one_line(tmp_path: Path) -> None:
    config = _config(tmp_path)
    proc = subprocess.run(
        torchrun(str(SCRIPT), str(config)), env=child_env(), capture_output=True, text=True, timeout=240
    )
    assert proc.returncode != 0
    lines = [
        ln
        for ln in proc.stderr.splitlines()
        if ln.startswith("coordexp train: error: training.fsdp: the trainer did not enable FSDP")
    ]
    assert len(lines) == 2, proc.stderr[-4000:]  # each rank's one-line error
    assert "]: Traceback" not in proc.stderr  # no rank's traceback (torchrun's own report aside)
    assert not (tmp_path / "run" / "logging.jsonl").exists()
