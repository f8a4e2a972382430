"""One chunk of the Stage-1 pass: every statistic of its rows and, with a gradient, its gradient rows.

The pass (:mod:`coordexp.functional.stage1_pass`, whose docstring states the row semantics) walks the
logits chunk by chunk; :class:`ChunkStats` computes one chunk in the scratch buffers of a
:class:`Workspace` that every chunk of the pass reuses.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from coordexp.functional.coord_math import (
    SANITIZE_LIMIT,
    CoordTerms,
    coord_terms,
    coord_terms_grad,
    sanitize_logits,
    sanitizer_passes_grad,
)
from coordexp.functional.coord_slice import CoordSlice
from coordexp.functional.pass_spec import ChunkSource, GradSpec, PassSpec
from coordexp.functional.targets import IGNORE_INDEX, TYPE_COORD, TYPE_DESC, TYPE_FORMAT, TYPE_IGNORE
from coordexp.functional.text_gate import MASS_FLOOR as TEXT_MASS_FLOOR
from coordexp.generated.models.config import CoordSoftCEW1Config

__all__ = ["ChunkStats", "Workspace"]

_FLOAT_MAX = torch.finfo(torch.float32).max
_TYPE_NAMES = (("desc", TYPE_DESC), ("format", TYPE_FORMAT), ("coord", TYPE_COORD))


class Workspace:
    """fp32 ``[rows, V]`` scratch buffers, allocated once per pass and reused by every chunk.

    ``a``: ``|x|`` (instability), later the softmax; ``c``: finite flags, later the gradient mask;
    ``u``: the sanitised row values; ``xf``: the fp32 upcast of non-fp32 logits.
    """

    def __init__(self, spec: PassSpec, source: ChunkSource, rows: int) -> None:
        shape = (min(rows, source.n_rows), source.vocab)

        def make(needed: bool) -> Tensor | None:
            return torch.empty(shape, dtype=torch.float32, device=source.device) if needed else None

        self.xf = make(source.dtype != torch.float32)
        self.a = make(True)
        self.c = make(True)
        self.u = make(spec.need_full)
        # base_all keeps the shared softmax untempered (the CE needs it): the gate's tempered rows go here
        self.t = make(spec.base_all and spec.tempered)

    @staticmethod
    def take(buf: Tensor | None, size: int) -> Tensor:
        assert buf is not None
        return buf.narrow(0, 0, size)


class ChunkStats:
    """Statistics of one chunk of rows: :meth:`run` fills ``cols`` (per-row float columns keyed by stat
    name) and, with ``grad``, writes the chunk's rows of the gradient into ``grad_rows``."""

    def __init__(self, spec: PassSpec, ws: Workspace, grad: GradSpec | None, grad_rows: Tensor | None):
        self.spec = spec
        self.ws = ws
        self.grad = grad
        self.grad_rows = grad_rows
        self.cols: dict[str, Tensor] = {}
        self.err: Tensor | None = None

    def run(self, x: Tensor, tgt: Tensor, typ: Tensor | None, keep: Tensor | None) -> ChunkStats:
        """The chunk's logits ``x`` ``[n, V]``, targets, types and mass-subsample rows."""
        spec = self.spec
        self.size = x.shape[0]
        self.tgt = tgt
        sup = tgt != IGNORE_INDEX
        self._token_stats(x, tgt, typ, sup)
        xf = x if x.dtype == torch.float32 else Workspace.take(self.ws.xf, self.size).copy_(x)
        self._instability(xf, sup)
        if spec.coord is not None:
            self._coord_stats(spec.coord, x, xf, tgt, sup, keep)
        elif spec.base_all:
            self._full_vocab(None, x, xf, tgt, sup, None, sup)
        return self

    def put(self, name: str, mask: Tensor, value: Tensor | None = None) -> None:
        self.cols[name] = mask if value is None else torch.where(mask, value, 0.0)

    def _token_stats(self, x: Tensor, tgt: Tensor, typ: Tensor | None, sup: Tensor) -> None:
        spec = self.spec
        in5: Tensor | None = None
        if spec.top5:
            top = x.topk(min(5, x.shape[-1]), dim=-1, sorted=True).indices
            pred = top[:, 0]
            in5 = sup & (top == tgt.unsqueeze(-1)).any(-1)
        else:
            pred = x.argmax(-1)
        hit1 = sup & (pred == tgt)
        self.sup, self.pred, self.hit1, self.in5 = sup, pred, hit1, in5
        self.put("n_sup", sup)
        self.put("n_top1", hit1)
        if in5 is not None:
            self.put("n_top5", in5)
        if spec.coord is not None:
            self.tgt_coord, self.bins = spec.coord.lookup(tgt)
            self.pred_coord = spec.coord.lookup(pred)[0]
        else:
            self.tgt_coord = torch.zeros_like(sup)
            self.bins = torch.zeros_like(tgt)
            self.pred_coord = torch.zeros_like(sup)
        self.coord_row = sup & self.tgt_coord
        # rows whose full-vocab softmax sees the coord-term sanitiser (none when the CE covers them raw)
        self.sanitised_row = torch.zeros_like(sup) if spec.base_all else self.coord_row
        self.type_masks: dict[str, Tensor] = {}
        if typ is not None:
            typed = typ != TYPE_IGNORE
            gt_coord = sup & torch.where(typed, typ == TYPE_COORD, self.tgt_coord)
            self.put("n_typed", sup & typed)
            for name, code in _TYPE_NAMES:
                mask = sup & (typ == code)
                self.type_masks[name] = mask
                self.put(f"n_type_{name}", mask)
                self.put(f"n_type_{name}_top1", mask & hit1)
                if in5 is not None:
                    self.put(f"n_type_{name}_top5", mask & in5)
        else:
            gt_coord = self.coord_row
        self.gt_coord = gt_coord
        self.noncoord = sup & ~gt_coord
        if spec.text_gate:  # the text gate's positions (see coordexp.functional.text_gate)
            text = sup & ~self.tgt_coord
            if typ is not None:
                text = text & ((typ == TYPE_DESC) | (typ == TYPE_FORMAT))
            if spec.eos_token_id is not None:
                text = text & (tgt != spec.eos_token_id)
            self.text_row = text
        self.put("n_noncoord", self.noncoord)
        self.put("n_noncoord_top1", self.noncoord & hit1)

    def _instability(self, xf: Tensor, sup: Tensor) -> None:
        """Non-finite count and finite ``max |x|`` with float ops only (bool reductions are slow on CPU).

        With the full-vocab gradient, also the sanitiser's gradient mask (``c``): 1 where the gradient
        flows (coord rows: ``|x| <= 1e4``; other rows: not NaN), 0 elsewhere.
        """
        magnitude = torch.abs(xf, out=Workspace.take(self.ws.a, self.size))
        finite = torch.lt(magnitude, math.inf, out=Workspace.take(self.ws.c, self.size))
        nonfinite = xf.shape[-1] - finite.sum(-1)
        self.put("n_nonfinite_logits", sup, nonfinite)
        self.grad_mask: Tensor | None = None
        if self.grad is not None and self.spec.need_full:
            limit = torch.where(self.sanitised_row, SANITIZE_LIMIT, math.inf).unsqueeze(-1)
            self.grad_mask = torch.le(magnitude, limit, out=finite)
        absmax = magnitude.nan_to_num_(nan=0.0, posinf=0.0).amax(-1)
        self.absmax = torch.where(sup, absmax, 0.0).amax()

    def _sanitised(self, xf: Tensor) -> Tensor:
        """Coord rows sanitised (NaN -> 0, clamp to ±1e4), other rows NaN -> 0 and ±inf -> ±float max.

        Every value is finite, so the softmax of any row is; the raw semantics of the non-coord rows
        (``logsumexp`` NaN / ±inf, as ``torch.logsumexp`` of the raw row) are restored per row.
        """
        u = torch.nan_to_num(xf, nan=0.0, out=Workspace.take(self.ws.u, self.size))
        limit = torch.where(self.sanitised_row, SANITIZE_LIMIT, _FLOAT_MAX).unsqueeze(-1)
        torch.minimum(u, limit, out=u)
        return torch.maximum(u, -limit, out=u)

    def _row_lse(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(softmax(u), logsumexp(u), fix)`` per row from ONE softmax kernel (no separate exp pass).

        ``s = Σ exp(u - max) = 1 / max(softmax)``, ``lse = log(s) + max`` (the order ``torch.logsumexp``
        uses); ``fix = exp(log(s) - (lse - max))`` turns ``softmax`` into ``exp(u - lse)``, i.e. the
        softmax as autograd of ``logsumexp`` sees it, with the rounding of ``lse`` (which is up to ~1e-3
        relative at ``|u| ~ 1e4``). The softmax goes into the ``a`` buffer (``|x|`` is no longer needed).
        """
        top = u.amax(-1)
        probs = torch.softmax(u, dim=-1, out=Workspace.take(self.ws.a, self.size))
        log_s = probs.amax(-1).log().neg_()
        lse = log_s + top
        return probs, lse, torch.exp(log_s - (lse - top))

    def _coord_stats(
        self, coord: CoordSlice, x: Tensor, xf: Tensor, tgt: Tensor, sup: Tensor, keep: Tensor | None
    ) -> None:
        spec = self.spec
        pred_coord = self.pred_coord
        self.put("n_gt_coord", self.gt_coord)
        self.put("n_flip_coord_to_noncoord", self.gt_coord & ~pred_coord)
        self.put("n_flip_text_to_coord", self.noncoord & pred_coord)
        if self.type_masks:
            self.put("n_flip_format_to_coord", self.type_masks["format"] & pred_coord)
            self.put("n_flip_desc_to_coord", self.type_masks["desc"] & pred_coord)
        noncoord_row = sup & ~self.tgt_coord
        self.put("n_base", noncoord_row)
        if not spec.need_full:
            if spec.diag and spec.coord_cfg is not None:
                raw = coord.take(x).to(torch.float32)
                terms = coord_terms(sanitize_logits(raw), self.bins, spec.coord_cfg)
                self._coord_diag(spec.coord_cfg, terms, None)
                self._write_coord_only_grad(coord, spec.coord_cfg, x, terms)
            return
        self._full_vocab(coord, x, xf, tgt, sup, keep, sup if spec.base_all else noncoord_row)

    def _full_vocab(
        self,
        coord: CoordSlice | None,
        x: Tensor,
        xf: Tensor,
        tgt: Tensor,
        sup: Tensor,
        keep: Tensor | None,
        base_row: Tensor,
    ) -> None:
        """The shared full-vocab softmax: base CE, coord-mass, gate and, with ``grad``, the gradient."""
        spec = self.spec
        u = self._sanitised(xf)
        # the raw row max (NaN if the row has a NaN, as topk / argmax rank NaN first): no extra pass
        raw_top = x.gather(-1, self.pred.unsqueeze(-1)).squeeze(-1).to(torch.float32)
        full_terms: CoordTerms | None = None
        if coord is not None and spec.diag and spec.coord_cfg is not None:
            full_terms = coord_terms(sanitize_logits(coord.take(u)), self.bins, spec.coord_cfg)
        lse_c: Tensor | None = None
        if coord is not None and spec.do_mass:
            lse_c = torch.logsumexp(coord.take(u), dim=-1)
            # a raw row of -inf only has a -inf coord lse (its mass is then NaN -> 0), not ~-float max
            lse_c = torch.where(~self.sanitised_row & (raw_top == -math.inf), -math.inf, lse_c)
        lse1_coord: Tensor | None = None
        lse_gate: Tensor | None = None
        if spec.tempered and spec.base_all:
            tempered = torch.div(u, spec.temperature, out=Workspace.take(self.ws.t, self.size))
            lse_gate = torch.logsumexp(tempered, dim=-1)
        elif spec.tempered:
            if spec.do_mass:
                lse1_coord = torch.logsumexp(u, dim=-1)
            u.div_(torch.where(self.coord_row, spec.temperature, 1.0).unsqueeze(-1))
        probs, lse_v, lse_fix = self._row_lse(u)
        text = self._text_gate(coord, u, probs) if spec.text_gate and coord is not None else None
        # raw semantics of the non-coord rows, as torch.logsumexp of the raw row gives them
        raw_lse = torch.where(raw_top.isinf(), raw_top, lse_v)
        raw_lse = torch.where(raw_top.isnan(), math.nan, raw_lse)
        lse1 = torch.where(self.sanitised_row, lse_v, raw_lse)
        if lse1_coord is not None:
            lse1 = torch.where(self.coord_row, lse1_coord, lse1)
        if spec.do_mass and lse_c is not None and keep is not None:
            mass = torch.exp((lse_c - lse1).clamp_(max=0.0))
            mass = mass.nan_to_num_(nan=0.0)
            buckets = {"coord": self.gt_coord, "text": self.noncoord}
            if self.type_masks:
                buckets.update(format=self.type_masks["format"], desc=self.type_masks["desc"])
            for name, mask in buckets.items():
                self.put(f"mass_n_{name}", keep & mask)
                self.put(f"mass_sum_{name}", keep & mask, mass)
        gt_logit = xf.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        if spec.do_base:
            self.put("base_ce_sum", base_row, raw_lse - gt_logit)
        gate_raw: Tensor | None = None
        if full_terms is not None and spec.coord_cfg is not None:
            lse_t = (lse_v if lse_gate is None else lse_gate) if spec.gate else None
            gate_raw = self._coord_diag(spec.coord_cfg, full_terms, lse_t)
        if self.grad is not None:
            loss_terms = None if spec.base_all else full_terms  # base_all: coord terms are diagnostics
            self._write_full_grad(
                coord, spec.coord_cfg, x, probs, lse_fix, loss_terms, gate_raw, base_row, raw_top, text
            )

    def _text_gate(
        self, coord: CoordSlice, u: Tensor, probs: Tensor
    ) -> tuple[Tensor, Tensor, Tensor | None] | None:
        """The text gate of the text rows: statistics, and with a gradient ``(coord-column addition
        [n, K], all-column row coefficient [n], tempered softmax or None when it is ``probs``)``.

        ``s = softmax(x / T)`` (T = 1: the pass's own softmax), ``m = Σ_C s``, ``g = -log(clamp(1 - m,
        1e-6, 1))``; ``∂g/∂x_j = s_j / T`` on the coord columns, ``-(m / (1 - m)) s_j / T`` elsewhere.
        """
        rows, temp = self.text_row, self.spec.temperature
        s = probs if temp == 1.0 else torch.softmax(u / temp, dim=-1)
        s_coord = coord.take(s)
        m = s_coord.sum(-1)
        rest = 1.0 - m
        g = torch.log(rest.clamp(TEXT_MASS_FLOOR, 1.0)).neg_().nan_to_num_(nan=0.0, posinf=1e4)
        self.put("n_text_gate", rows)
        self.put("text_gate_sum", rows, g)
        self.put("text_coord_mass_sum", rows, m)
        if self.grad is None or self.grad.text_scale is None:
            return None
        coef = torch.where(rows & (rest > TEXT_MASS_FLOOR), self.grad.text_scale, 0.0)
        rest = rest.clamp(min=TEXT_MASS_FLOOR)
        coord_add = s_coord * (coef / (temp * rest)).unsqueeze(-1)
        return coord_add, -coef * m / (rest * temp), None if temp == 1.0 else s

    def _coord_diag(self, cfg: CoordSoftCEW1Config, terms: CoordTerms, lse_t: Tensor | None) -> Tensor | None:
        """Coord-term statistics of the coord rows; returns the gate's ``lse_t - lse_z`` (with ``lse_t``)."""
        rows, bins = self.coord_row, self.bins
        self.put("n_coord", rows)
        self.put("soft_ce_sum", rows, terms.soft_ce)
        self.put("w1_sum", rows, terms.w1)
        self.put("ce_sum", rows, terms.ce)
        gate_raw: Tensor | None = None
        if lse_t is not None:
            gate_raw = lse_t - terms.lse_z
            self.put("gate_sum", rows, gate_raw.clamp(min=0.0))
            self.put("coord_vocab_mass_sum", rows, torch.exp(-gate_raw))
        k = terms.z.shape[-1]
        gt = bins.unsqueeze(-1)
        top = terms.z.topk(min(5, k), dim=-1).indices
        self.put("acc_top5_hits", rows & (top == gt).any(-1))
        z_gt = terms.z.gather(-1, gt).squeeze(-1)
        self.put("p_gt_sum", rows, terms.p.gather(-1, gt).squeeze(-1))
        self.put("margin_sum", rows, terms.z.amax(-1) - z_gt)
        grid = torch.arange(k, device=bins.device, dtype=torch.float32)
        bin_f = bins.to(torch.float32)
        err = ((terms.p * grid).sum(-1) - bin_f).abs()
        self.put("bin_abs_err_sum", rows, err)
        self.put("w1_to_delta_sum", rows, (terms.p * (grid - bin_f.unsqueeze(-1)).abs()).sum(-1))
        self.err = torch.where(rows, err, math.inf)
        return gate_raw

    def _coord_grad(
        self, cfg: CoordSoftCEW1Config, terms: CoordTerms, gate_raw: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """``(d loss / d coord logits [n, K], per-row gate scale)`` of the coord terms, scaled."""
        assert self.grad is not None
        rows = self.coord_row
        zero = torch.zeros((), device=rows.device)
        row_scale = torch.where(rows, self.grad.coord_scale, zero)
        gate_scale = zero.expand(self.size)
        if cfg.gate_weight != 0 and gate_raw is not None:
            gate_scale = torch.where(rows & (gate_raw >= 0), self.grad.coord_scale * cfg.gate_weight, zero)
        return coord_terms_grad(terms, self.bins, cfg, row_scale, gate_scale), gate_scale

    def _write_coord_only_grad(
        self, coord: CoordSlice, cfg: CoordSoftCEW1Config, x: Tensor, terms: CoordTerms
    ) -> None:
        """No full-vocab term: the gradient is zero outside the coord columns."""
        if self.grad is None or self.grad_rows is None:
            return
        coord_grad, _ = self._coord_grad(cfg, terms, None)
        coord_grad.masked_fill_(~sanitizer_passes_grad(coord.take(x)), 0.0)
        if self.grad.monitor is not None:  # custom.grad_monitor: the terms' parts of these rows
            self.grad.monitor.add_chunk(self, coord, cfg, x, terms)
        out = self.grad_rows.zero_()
        if coord.start is not None:
            coord.take(out).copy_(coord_grad)
        else:
            out.index_copy_(-1, coord.ids, coord_grad.to(out.dtype))

    def _write_full_grad(
        self,
        coord: CoordSlice | None,
        cfg: CoordSoftCEW1Config | None,
        x: Tensor,
        probs: Tensor,
        lse_fix: Tensor,
        terms: CoordTerms | None,
        gate_raw: Tensor | None,
        base_row: Tensor,
        raw_top: Tensor,
        text: tuple[Tensor, Tensor, Tensor | None] | None = None,
    ) -> None:
        """``softmax * row coefficient`` (gate rows: ``gate_scale * fix / T``; base rows: ``base_scale``, NaN
        when the raw row has a NaN or a ±inf max, as cross-entropy gives), ``- base_scale`` at the target
        of base rows, plus the coord-slice gradient; zero where the coord-term sanitiser changed a logit."""
        assert self.grad is not None and self.grad_rows is not None and self.grad_mask is not None
        spec, out = self.spec, self.grad_rows
        zero = torch.zeros((), device=x.device)
        coord_grad: Tensor | None = None
        gate_scale = zero.expand(self.size)
        if terms is not None and cfg is not None:
            coord_grad, gate_scale = self._coord_grad(cfg, terms, gate_raw)
        base_on = base_row if spec.do_base else torch.zeros_like(base_row)
        base_coef = torch.where(base_on, self.grad.base_scale, zero)
        row_coef = gate_scale * lse_fix / spec.temperature + base_coef
        if text is not None and text[2] is None:  # the text gate on the pass's own softmax (T = 1)
            row_coef = row_coef + text[1]
        row_coef = torch.where(base_on & ~raw_top.isfinite(), math.nan, row_coef)
        if self.grad.monitor is not None and coord is not None and cfg is not None and terms is not None:
            base = torch.where(base_on & ~raw_top.isfinite(), math.nan, base_coef) if spec.do_base else None
            gate = (gate_scale * lse_fix / spec.temperature, gate_scale)
            self.grad.monitor.add_chunk(self, coord, cfg, x, terms, full=(probs, gate, base, base_on, text))
        mask = self.grad_mask.mul_(row_coef.unsqueeze(-1))
        work = out if out.dtype == torch.float32 else probs
        torch.mul(probs, mask, out=work)
        if text is not None and text[2] is not None:  # tempered text gate: its own softmax
            work.addcmul_(text[2], text[1].unsqueeze(-1))
        if text is not None:
            coord_grad = text[0] if coord_grad is None else coord_grad + text[0]
        if spec.do_base:
            work.scatter_add_(-1, self.tgt.clamp(min=0).unsqueeze(-1), -base_coef.unsqueeze(-1))
        if coord_grad is not None and coord is not None:
            coord_grad.masked_fill_(~sanitizer_passes_grad(coord.take(x)), 0.0)
            if coord.start is not None:
                coord.take(work).add_(coord_grad)
            else:
                work.index_add_(-1, coord.ids, coord_grad)
        if work is not out:
            out.copy_(work)
