"""Property tests: random shapes, masks, vocab layouts and extreme logits."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from stage1_reference import reference_grad, reference_stats

from coordexp.functional import CoordLossConfig, CoordSlice, coord_loss, stage1_stats, w1_distance

SPECIALS = (math.nan, math.inf, -math.inf, 1e5, -1e5, 1e4, 3e3)

FRACTIONS = (
    ("n_top1", "n_sup"),
    ("n_top5", "n_sup"),
    ("n_top1", "n_top5"),
    ("n_noncoord", "n_sup"),
    ("n_noncoord_top1", "n_noncoord"),
    ("n_typed", "n_sup"),
    ("n_gt_coord", "n_sup"),
    ("n_flip_coord_to_noncoord", "n_gt_coord"),
    ("n_flip_text_to_coord", "n_noncoord"),
    ("n_flip_format_to_coord", "n_type_format"),
    ("n_flip_desc_to_coord", "n_type_desc"),
    ("mass_n_coord", "n_gt_coord"),
    ("mass_n_text", "n_noncoord"),
    ("n_coord", "n_sup"),
    ("acc_top5_hits", "n_coord"),
    ("p_gt_sum", "n_coord"),
    ("n_base", "n_sup"),
    *((f"mass_sum_{b}", f"mass_n_{b}") for b in ("coord", "text", "format", "desc")),
)


def _fp32_slack(pb: dict) -> float:
    """Absolute fp32 resolution of the tempered logits (1e4-sized values resolve to ~1e-3)."""
    logits = pb["logits"]
    if logits.numel() == 0:
        return 1e-5
    sanitised = torch.nan_to_num(logits, nan=0.0, posinf=1e4, neginf=-1e4).clamp(-1e4, 1e4)
    big = float(sanitised.abs().max()) / min(1.0, pb["cfg"].temperature)
    return 1e-5 + 2.5e-7 * big


@st.composite
def problems(draw: st.DrawFn) -> dict:
    n = draw(st.integers(0, 24))
    k = draw(st.integers(2, 12))
    vocab = k + draw(st.integers(1, 10))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    if draw(st.booleans()):
        start = draw(st.integers(0, vocab - k))
        ids = list(range(start, start + k))
    else:
        ids = torch.randperm(vocab, generator=gen)[:k].tolist()
    scale = draw(st.sampled_from((0.1, 3.0, 50.0, 3e4)))
    logits = torch.randn(n, vocab, generator=gen) * scale
    n_special = draw(st.integers(0, 6)) if n else 0
    for _ in range(n_special):
        i = int(torch.randint(0, n, (1,), generator=gen))
        j = int(torch.randint(0, vocab, (1,), generator=gen))
        logits[i, j] = draw(st.sampled_from(SPECIALS))
    coord_frac = draw(st.floats(0, 1))
    is_coord = torch.rand(n, generator=gen) < coord_frac
    id_t = torch.tensor(ids)
    targets = torch.where(
        is_coord, id_t[torch.randint(0, k, (n,), generator=gen)], torch.randint(0, vocab, (n,), generator=gen)
    )
    targets[torch.rand(n, generator=gen) < draw(st.floats(0, 1))] = -100
    types = None
    if draw(st.booleans()):
        types = torch.tensor([-1, 1, 2, 3])[torch.randint(0, 4, (n,), generator=gen)]
    truncate = draw(st.one_of(st.none(), st.integers(0, 4)))
    cfg = CoordLossConfig(
        ce_weight=draw(st.sampled_from((0.0, 0.5))),
        soft_ce_weight=draw(st.sampled_from((0.0, 1.0))),
        w1_weight=draw(st.sampled_from((0.0, 2.0))),
        gate_weight=draw(st.sampled_from((0.0, 1.0))),
        temperature=draw(st.sampled_from((0.25, 1.0, 4.0))),
        target_sigma=draw(st.sampled_from((0.3, 2.0, 6.0))),
        target_truncate=truncate,
    )
    return dict(
        logits=logits,
        targets=targets,
        types=types,
        ids=ids,
        cfg=cfg,
        chunk=draw(st.integers(1, 30)),
        mass_max_tokens=draw(st.integers(0, 6)),
    )


@settings(max_examples=60, deadline=None)
@given(problems())
def test_stats_are_finite_bounded_and_match_reference(pb: dict) -> None:
    coord = CoordSlice.from_ids(pb["ids"])
    stats = stage1_stats(
        pb["logits"],
        pb["targets"],
        coord=coord,
        types=pb["types"],
        mass=True,
        mass_max_tokens=pb["mass_max_tokens"],
        coord_cfg=pb["cfg"],
        chunk_size=pb["chunk"],
    )
    host = {k: float(v) for k, v in stats.items()}
    assert all(math.isfinite(v) for v in host.values()), host
    for num, den in FRACTIONS:
        assert 0.0 <= host[num] <= host[den] * (1 + 1e-5) + 1e-6, (num, den, host)
    for key in (
        "soft_ce_sum",
        "w1_sum",
        "ce_sum",
        "gate_sum",
        "margin_sum",
        "bin_abs_err_sum",
        "w1_to_delta_sum",
    ):
        assert host[key] >= -1e-4 * max(1.0, host["n_coord"]), (key, host[key])
    assert 0.0 <= host["bin_abs_err_p90"] <= len(pb["ids"])
    assert host["coord_vocab_mass_sum"] <= host["n_coord"] * (1 + 1e-4)
    ref = reference_stats(
        pb["logits"],
        pb["targets"],
        pb["ids"],
        types=pb["types"],
        mass=True,
        mass_max_tokens=pb["mass_max_tokens"],
        cfg=pb["cfg"],
    )
    slack = _fp32_slack(pb) * max(1.0, host["n_sup"])
    for key, value in host.items():
        assert math.isclose(value, ref.get(key, 0.0), rel_tol=1e-5, abs_tol=slack), (key, value, ref.get(key))


@settings(max_examples=40, deadline=None)
@given(problems())
def test_loss_and_grad_finite_and_match_reference(pb: dict) -> None:
    coord = CoordSlice.from_ids(pb["ids"])
    leaf = pb["logits"].clone().requires_grad_(True)
    loss, stats = coord_loss(leaf, pb["targets"], coord, pb["cfg"], chunk_size=pb["chunk"])
    loss.backward()
    assert leaf.grad is not None
    loss = loss.detach()
    assert bool(torch.isfinite(loss)) and float(loss) >= -1e-5
    assert bool(torch.isfinite(leaf.grad).all())
    ref_loss, ref_grad = reference_grad(pb["logits"], pb["targets"], pb["ids"], pb["cfg"])
    slack = _fp32_slack(pb)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=slack)
    torch.testing.assert_close(leaf.grad, ref_grad, rtol=1e-5, atol=slack)
    if float(stats["n_coord"]) == 0:
        assert float(loss) == 0.0 and float(leaf.grad.abs().sum()) == 0.0


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 40), st.integers(1, 5), st.integers(0, 2**31 - 1), st.sampled_from((0.1, 1.0, 30.0)))
def test_w1_symmetric_nonnegative_and_zero_on_identity(k: int, rows: int, seed: int, scale: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    p = torch.softmax(torch.randn(rows, k, generator=gen) * scale, -1)
    q = torch.softmax(torch.randn(rows, k, generator=gen) * scale, -1)
    torch.testing.assert_close(w1_distance(p, q), w1_distance(q, p))
    assert bool((w1_distance(p, q) >= 0).all())
    assert bool((w1_distance(p, p) == 0).all())
    assert bool((w1_distance(p, q) <= 1.0 + 1e-6).all())
