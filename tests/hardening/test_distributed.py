"""Two ranks on CPU (gloo): no hang, union of keys, global coord denominators, rank-0-only dumps.

Two runs, both bounded by timeouts (a hang fails the test instead of blocking CI):

1. ``test_real_swift_ddp_run``: the real ms-swift ``Seq2SeqTrainer`` built by
   ``coordexp.launch.build_trainer`` under ``torch.distributed.run`` (2 processes, gloo), up to 5
   steps of the demo with ``average_tokens_across_devices: true`` (``ddp_train_script.py``). Rank 0
   sees no token types; rank 1 no coord targets and, in its third batch, no supervised token at all
   (a NaN loss on rank 1 only, with early stop on ``nonfinite_loss``). Checks: both ranks finish and
   stop after the same step (a one-sided stop used to hang the other rank); the logged records hold
   the union of the ranks' keys (``SwiftMixin.log`` gathers the key union before ``MeanMetric``
   reduces); the coord count reduction runs on every rank every micro-step, including the rank with
   no coord positions; the coord denominator is the global count, and each rank's coord loss is its
   local term sum / global count * world size; only rank 0 writes ``events.jsonl``.
2. ``test_components_ddp_gradient_is_the_global_token_mean``: the components alone under
   ``torch.multiprocessing`` (gloo, ``file://`` rendezvous): the DDP-averaged gradient of the two
   ranks equals the single-process gradient of the global token mean over both ranks' batches.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

from coordexp.generated import metric_keys as K
from coordexp.monitor.events import read_events
from tests.hardening.support import TYPED_KEYS
from tests.processes import child_env, torchrun

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")

SCRIPT = Path(__file__).with_name("ddp_train_script.py")
WORLD = 2
RUN_TIMEOUT_S = 240
SPAWN_TIMEOUT_S = 120
COORD_DIAG = {K.COORD_DIAG_LOSS, K.COORD_DIAG_W1, K.COORD_DIAG_COORD_TOKENS}
TYPED = {K.DESC_TOKEN_FRAC, K.FORMAT_TOKEN_FRAC, K.FORMAT_TOKEN_ACC}


def _write_config(tmp_path: Path) -> Path:
    from coordexp.launch import demo_config

    raw = demo_config(tmp_path / "demo").model_dump(mode="json")
    raw["data"].update(val=[], max_samples=16, layout="padded")
    raw["training"].update(
        output_dir=str(tmp_path / "run"),
        max_steps=5,  # the one-sided early stop below ends the run after step 3 on both ranks
        per_device_train_batch_size=2,
        gradient_accumulation_steps=1,
        warmup_steps=0,
        logging_steps=1,
        eval_strategy="no",
        save_strategy="no",
        report_to=[],
        average_tokens_across_devices=True,
        ddp_timeout=60,
    )
    monitor = raw["custom"]["instability_monitor"]
    monitor["guard"] = {"max_abs_logit": 1e-3}  # an event every step on every rank
    monitor["early_stop"] = {"enabled": True, "on_reasons": ["nonfinite_loss"]}  # rank 1's batch 3 only
    raw["custom"]["contracts"] = {"mode": "strict"}
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.mark.slow
def test_real_swift_ddp_run(tmp_path: Path) -> None:
    config = _write_config(tmp_path)
    cmd = torchrun(str(SCRIPT), str(config), str(tmp_path), nproc=WORLD)
    try:
        proc = subprocess.run(
            cmd, env=child_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=tmp_path
        )
    except subprocess.TimeoutExpired as exc:  # torchrun's group is killed with it
        pytest.fail(f"2-rank run did not finish in {RUN_TIMEOUT_S} s (hang?):\n{str(exc.stderr)[-4000:]}")
    assert proc.returncode == 0, proc.stderr[-6000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert [r["world_size"] for r in ranks] == [WORLD, WORLD]
    assert [r["is_main_process"] for r in ranks] == [True, False]
    # Rank 1 alone saw a NaN loss (its step 3) and asked to stop: both ranks stopped after step 3.
    assert [r["global_step"] for r in ranks] == [3, 3]
    assert "nonfinite_loss" in ranks[1]["decisions"][2]["reasons"]
    assert not any("nonfinite_loss" in d["reasons"] for d in ranks[0]["decisions"])

    # -- each rank wrote its own feature-conditional keys --------------------------------------
    steps = len(ranks[0]["keys"])
    assert steps == len(ranks[1]["keys"]) == 3
    rank0 = set().union(*map(set, ranks[0]["keys"]))
    rank1 = set().union(*map(set, ranks[1]["keys"]))
    assert COORD_DIAG <= rank0 and not rank0 & TYPED_KEYS
    assert TYPED <= rank1 and not rank1 & COORD_DIAG

    # -- the log holds the union, every value finite ----------------------------------------------
    records = [
        json.loads(x) for x in (tmp_path / "run" / "logging.jsonl").read_text().splitlines() if x.strip()
    ]
    train = [r for r in records if "loss" in r and "train_runtime" not in r]
    assert len(train) == 3
    for record in train:  # coord keys from rank 0, typed keys from rank 1 (NaN logits still count)
        assert COORD_DIAG | TYPED <= record.keys(), sorted(record)
    for record in records:
        # rank 1's NaN logits poison the step's gradient: the framework's grad_norm of step 3 is NaN
        framework = {"grad_norm"} if record is train[2] else set()
        assert all(
            math.isfinite(v) for k, v in record.items() if isinstance(v, float) and k not in framework
        ), record

    # -- exact aggregation: same keys on every rank; logged = the reduction of both ranks' steps ----
    registered = [r["registered"] for r in ranks]
    assert registered[0] == registered[1] and COORD_DIAG | TYPED <= {k for k, _ in registered[0]}
    kinds = dict(registered[0])
    for step, record in enumerate(train):
        written = [r["values"][step] for r in ranks]
        for key, kind in kinds.items():
            parts = [w[key] for w in written if key in w]
            if not any(p[2] if isinstance(p, list) else True for p in parts):
                assert key not in record, key  # no rank had data for it in the window: not logged
                continue
            if kind == "RatioMetric":
                want = sum(p[0] for p in parts) / sum(p[1] for p in parts)
            elif kind == "SumMetric":
                want = sum(parts)
            else:
                continue
            if math.isfinite(want):  # (ms-swift rounds logged values to 8 decimals)
                assert record[key] == pytest.approx(want, rel=1e-6, abs=1e-7), (step, key)
        # rank 1 has no coord targets: the coord keys are rank 0's own values
        assert record[K.COORD_DIAG_COORD_TOKENS] == written[0][K.COORD_DIAG_COORD_TOKENS]
        assert K.COORD_DIAG_COORD_TOKENS not in written[1]

    # -- the count reduction runs on every rank, every micro-step ---------------------------------
    # the one-pass loss reduces the [coord, base-CE] counts in one collective: 1 per step on each rank.
    assert len(ranks[0]["reductions"]) == len(ranks[1]["reductions"]) == steps
    for a, b in zip(ranks[0]["reductions"], ranks[1]["reductions"], strict=True):
        assert a[1] == b[1] == [x + y for x, y in zip(a[0], b[0], strict=True)], (a, b)  # global sums

    # -- coord denominators are global; loss_r = (local sums / global counts) * world --------------
    assert all(c["n_coord"] == 0 for c in ranks[1]["coord"])  # rank 1 has no coord positions...
    for c0, c1 in zip(ranks[0]["coord"], ranks[1]["coord"], strict=True):
        assert c0["n_coord"] > 0
        assert c0["denominator"] == c1["denominator"] == c0["n_coord"] + c1["n_coord"]  # ...yet reduces
        for c in (c0, c1):
            if not math.isfinite(c["base"]):  # (rank 1's NaN step: nothing to compare)
                continue
            # (the coord part is the fp32 loss minus its base part: absolute rounding of the loss)
            assert c["value"] == pytest.approx(c["local_sum"] / c["denominator"], rel=1e-5, abs=1e-5)
            # ms-swift multiplies the seam's loss by the process count (average_tokens_across_devices)
            assert c["returned"] == pytest.approx(c["fused"] * WORLD, rel=1e-5, abs=1e-6)
        assert not math.isfinite(c1["base"]) or c1["value"] == pytest.approx(0.0, abs=1e-5)

    # -- only rank 0 writes events -----------------------------------------------------------------
    fired = [[d for d in r["decisions"] if d["reasons"]] for r in ranks]
    assert fired[0] and fired[1], "both ranks must have had instability events"
    events = read_events(tmp_path / "run" / "instability_dumps" / "events.jsonl")
    assert len(events) == len(fired[0])
    assert [e["loss"] for e in events] == pytest.approx([d["loss"] for d in fired[0]])
    assert [e["reasons"] for e in events] == [d["reasons"] for d in fired[0]]


# ---------------------------------------------------------------- one rank fails

FAILURE_SCRIPT = Path(__file__).with_name("rank_failure_script.py")
PG_TIMEOUT_S = 600
"""The process-group timeout of the failing run: far beyond the subprocess timeout below, so the
run can only end in time if the failure reaches the other rank through something else."""
FAILURE_RUN_TIMEOUT_S = 180


@pytest.mark.slow
def test_a_strict_violation_on_one_rank_stops_every_rank_with_its_error(tmp_path: Path) -> None:
    config = _write_config(tmp_path)
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    raw["training"]["ddp_timeout"] = PG_TIMEOUT_S
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    cmd = torchrun(str(FAILURE_SCRIPT), str(config), str(tmp_path), nproc=WORLD)
    try:
        proc = subprocess.run(
            cmd, env=child_env(), capture_output=True, text=True, timeout=FAILURE_RUN_TIMEOUT_S, cwd=tmp_path
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"rank 0 was left waiting for the failed rank 1 (no end in {FAILURE_RUN_TIMEOUT_S} s, "
            f"process-group timeout {PG_TIMEOUT_S} s):\n{str(exc.stderr)[-4000:]}"
        )
    assert proc.returncode != 0
    # rank 1 ended with its own violation, and said so
    own = (tmp_path / "rank1.txt").read_text(encoding="utf-8")
    assert own.startswith("ContractViolation: contract violation [undeclared_extra] for 'rank1_debug_extra'")
    assert "[coordexp] rank 1: ContractViolation: contract violation [undeclared_extra]" in proc.stderr
    # rank 0, which had nothing wrong, reported rank 1's error as rank 1's before rank 1 exited...
    peer = "rank 0 stopped because another rank failed: rank 1: ContractViolation: contract violation"
    assert f"[coordexp] {peer} [undeclared_extra] for 'rank1_debug_extra'" in proc.stderr, proc.stderr[-4000:]
    # ...and, unless the launcher stopped it first once rank 1 had exited, raised it
    ended = tmp_path / "rank0.txt"
    if ended.exists():
        assert ended.read_text(encoding="utf-8").startswith(f"RankFailedError: {peer}")


# ---------------------------------------------------------------- components under mp + gloo


def _rank_batch(rank: int) -> dict[str, Any]:
    from tests.components.stage1_fixtures import BatchSpec, make_batch
    from tests.hardening.support import coord_ids

    batch = make_batch(BatchSpec(packed=False, with_types=rank == 0))
    if rank == 1:  # no coord targets and no token types on rank 1
        batch["labels"] = batch["labels"].masked_fill(torch.isin(batch["labels"], coord_ids()), -100)
    meta = [{"num_samples": 1, "total_length": 1, "samples": [{"dataset": f"rank{rank}"}]}] * 3
    batch["instability_meta_json"] = json.dumps(meta)
    return batch


def _ddp_stand_in() -> type:
    """The stand-in trainer with ms-swift's world-size scaling under average_tokens (built in the
    spawned rank, after its imports)."""
    from tests.components.stage1_fixtures import StandInTrainer

    class DDPStandIn(StandInTrainer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.args.average_tokens_across_devices = True

        def compute_loss(
            self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
            if num_items_in_batch is not None:
                loss = loss * dist.get_world_size()
            return (loss, outputs) if return_outputs else loss

    return DDPStandIn


def _spawn_ranks(worker: Any, tmp_path: Path, what: str) -> None:
    """Run ``worker(rank, init_file, out)`` on WORLD spawned ranks; a hang fails the test."""
    ctx = mp.start_processes(
        worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + SPAWN_TIMEOUT_S
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail(f"the 2-rank {what} did not finish in {SPAWN_TIMEOUT_S} s (hang?)")
    finally:
        for proc in ctx.processes:
            if proc.is_alive():
                proc.terminate()
                proc.join(10)


def _worker(rank: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60)
    )
    try:
        import coordexp.components.coord_loss as coord_module
        from tests.components.stage1_fixtures import ToyLM, tokenizer
        from tests.hardening.support import custom, stage1_trainer

        DDPStandIn = _ddp_stand_in()

        calls = {"n": 0}
        real_global = coord_module._global

        def counted(count: torch.Tensor, trainer: Any) -> torch.Tensor:
            calls["n"] += 1
            return real_global(count, trainer)

        coord_module._global = counted  # type: ignore[assignment]
        sections = {"instability_monitor": {"guard": {"max_abs_logit": 1e-3}}}
        torch.manual_seed(0)
        model = ToyLM(len(tokenizer()))
        trainer, _ = stage1_trainer(custom(True, **sections), Path(out), model=model, base=DDPStandIn)
        loss = trainer.compute_loss(model, _rank_batch(rank), num_items_in_batch=torch.tensor(1))
        loss.backward()
        grads = {}
        for name, p in model.named_parameters():
            assert p.grad is not None
            g = p.grad.clone()
            dist.all_reduce(g)
            grads[name] = g / WORLD
        torch.save(
            {
                "loss": loss.detach(),
                "grads": grads,
                "keys": sorted(trainer.logged()),
                "reductions": calls["n"],
            },
            Path(out) / f"component_rank{rank}.pt",
        )
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_components_ddp_gradient_is_the_global_token_mean(tmp_path: Path) -> None:
    _spawn_ranks(_worker, tmp_path, "component step")
    results = [torch.load(tmp_path / f"component_rank{r}.pt") for r in range(WORLD)]

    # the count reduction ran on both ranks (base count + coord count), rank 1 has no coord targets
    assert [r["reductions"] for r in results] == [2, 2]
    assert COORD_DIAG <= set(results[0]["keys"]) and TYPED <= set(results[0]["keys"])
    assert not (COORD_DIAG | TYPED) & set(results[1]["keys"])

    # single process, both ranks' rows in one batch: the global token mean
    from tests.components.stage1_fixtures import ToyLM, tokenizer
    from tests.hardening.support import custom, stage1_trainer

    torch.manual_seed(0)
    model = ToyLM(len(tokenizer()))
    trainer, _ = stage1_trainer(custom(True), tmp_path / "single", model=model)
    parts = [_rank_batch(r) for r in range(WORLD)]
    batch = {k: torch.cat([p[k] for p in parts]) for k in ("input_ids", "labels", "attention_mask")}
    loss = trainer.compute_loss(model, batch, num_items_in_batch=torch.tensor(1))
    loss.backward()
    # DDP averages gradients: mean_r grad(loss_r) must equal grad(global mean objective)
    for name, p in model.named_parameters():
        assert p.grad is not None
        torch.testing.assert_close(results[0]["grads"][name], p.grad, rtol=1e-4, atol=1e-6, msg=name)
    torch.testing.assert_close(
        (results[0]["loss"] + results[1]["loss"]) / WORLD, loss.detach(), rtol=1e-5, atol=1e-6
    )

    # only rank 0 wrote events, and all of them are rank 0's
    events = read_events(tmp_path / "instability_dumps" / "events.jsonl")
    assert len(events) == 1 and "rank0" in events[0]["instability_meta_json"]


# -- issue 21: the box terms and the adjacent repulsion are global means over boxes / applied pairs ------


def _box_batch(rank: int | None) -> dict[str, Any]:
    """The dense scenes of the trainer-level reference, padded; rank 0 gets rows 0 and 1, rank 1 row 2,
    None all three (what one process sees of both ranks)."""
    from tests.components.stage1_fixtures import BatchSpec, make_batch
    from tests.components.test_objective_terms_reference import PAYLOADS

    full = make_batch(BatchSpec(packed=False, with_types=True, with_boxes=True, payloads=PAYLOADS))
    if rank is None:
        return full
    rows = slice(0, 2) if rank == 0 else slice(2, 3)
    return {k: v[rows] for k, v in full.items()}


def _box_custom() -> dict[str, Any]:
    from tests.components.test_objective_terms_reference import GEO, SIZE
    from tests.hardening.support import custom

    block = custom(True)
    block["coord_soft_ce_w1"].update(
        text_gate_weight=0.5,
        adjacent_repulsion_weight=5000.0,
        adjacent_repulsion_filter_mode="global",
        adjacent_repulsion_margin_ratio=0.3,
        adjacent_repulsion_copy_margin=0.0,
    )
    block["bbox_geo"], block["bbox_size_aux"] = dict(GEO), dict(SIZE)
    return block


def _box_worker(rank: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60)
    )
    try:
        from tests.components.stage1_fixtures import ToyLM, tokenizer
        from tests.hardening.support import stage1_trainer

        DDPStandIn = _ddp_stand_in()

        torch.manual_seed(0)
        model = ToyLM(len(tokenizer()))
        trainer, _ = stage1_trainer(_box_custom(), Path(out), model=model, base=DDPStandIn)
        loss = trainer.compute_loss(model, _box_batch(rank), num_items_in_batch=torch.tensor(1))
        loss.backward()
        grads = {}
        for name, p in model.named_parameters():
            assert p.grad is not None
            g = p.grad.clone()
            dist.all_reduce(g)
            grads[name] = g / WORLD
        torch.save(
            {"loss": loss.detach(), "grads": grads, "logged": trainer.logged()},
            Path(out) / f"box_rank{rank}.pt",
        )
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_box_terms_ddp_gradient_is_the_global_mean_over_boxes_and_pairs(tmp_path: Path) -> None:
    _spawn_ranks(_box_worker, tmp_path, "box-term step")
    results = [torch.load(tmp_path / f"box_rank{r}.pt") for r in range(WORLD)]
    # rank 0: 6 boxes and 3 pairs, rank 1: 1 box and no pair (it still joins the one collective)
    assert results[0]["logged"]["bbox_geo/groups_total"] == [6.0]
    assert results[0]["logged"]["coord_diag/adjacent_repulsion_applied_count"] == [3.0]
    assert results[1]["logged"]["coord_diag/adjacent_repulsion_applied_count"] == [0.0]
    from tests.components.stage1_fixtures import ToyLM, tokenizer
    from tests.hardening.support import stage1_trainer

    torch.manual_seed(0)
    model = ToyLM(len(tokenizer()))
    trainer, _ = stage1_trainer(_box_custom(), tmp_path / "single", model=model)
    loss = trainer.compute_loss(model, _box_batch(None), num_items_in_batch=torch.tensor(1))
    loss.backward()
    assert trainer.logged()["coord_diag/adjacent_repulsion"][0] > 1e-2 * loss.item()
    for name, p in model.named_parameters():
        assert p.grad is not None
        torch.testing.assert_close(results[0]["grads"][name], p.grad, rtol=1e-4, atol=1e-6, msg=name)
    torch.testing.assert_close(
        (results[0]["loss"] + results[1]["loss"]) / WORLD, loss.detach(), rtol=1e-5, atol=1e-6
    )
