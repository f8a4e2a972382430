"""``InstabilityMonitor``: the stateful host side of the monitor (EMA, event log, sample dumps).

It turns one ``StepObservation`` per forward pass into a ``MonitorDecision``. It is a diagnostic:
``observe`` never raises because of what it is given or because the disk misbehaves; each failure
kind warns once and the step carries on. It never changes training by itself either: the guard
(zero the loss) and the early stop are returned for the caller to apply, which keeps the
objective-changing action visible in the trainer code.

Only the main process writes files; every process computes the same decisions and warnings from
its own observations (a caller that needs ranks to agree on ``stop`` reduces it across ranks).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from coordexp.diagnostics.warn_once import WarnOnce
from coordexp.monitor.events import JsonlAppender, build_event, encode_line
from coordexp.monitor.observation import LOSS_SPIKE, MonitorDecision, StepObservation
from coordexp.monitor.rules import clean_observation, detect_reasons, next_ema, should_guard, should_stop
from coordexp.monitor.samples import dump_batch_samples
from coordexp.monitor.settings import InstabilityMonitorSettings, normalize_monitor_config
from coordexp.run_folder.names import EVENTS_FILE, sample_dump_name

__all__ = ["DEFAULT_DUMP_SUBDIR", "InstabilityMonitor"]

DEFAULT_DUMP_SUBDIR = "instability_dumps"
LOGGER = logging.getLogger("coordexp.monitor")
_NO_DECISION = MonitorDecision()


class InstabilityMonitor:
    """Detects unstable steps, records them, and says whether to guard the loss or stop.

    ``cfg`` is the ``custom.instability_monitor`` section (mapping, attribute object or
    ``InstabilityMonitorSettings``); wrong types or out-of-bounds values raise ``ValueError`` here.
    Files go to ``cfg.dump_dir`` or ``<output_dir>/instability_dumps``. Sample dumps read each row
    at the source file and line its meta names; ``source_files`` (dataset label -> JSONL file) is the
    fallback for samples whose meta has no source position (see ``coordexp.monitor.samples``).
    """

    def __init__(
        self,
        cfg: object,
        *,
        output_dir: str | Path,
        is_main_process: bool = True,
        source_files: Mapping[str, str | Path] | None = None,
    ) -> None:
        self.settings: InstabilityMonitorSettings = normalize_monitor_config(cfg)
        dump_dir = self.settings.dump_dir
        self.dump_dir = Path(dump_dir) if dump_dir else Path(output_dir) / DEFAULT_DUMP_SUBDIR
        self.events_path = self.dump_dir / EVENTS_FILE
        self.is_main_process = bool(is_main_process)
        self._sources = {str(label): Path(path) for label, path in (source_files or {}).items()}
        self._events = JsonlAppender(self.events_path)
        self._warned = WarnOnce()  # failure kinds
        self._ema: float | None = None
        self._dumps_per_step: dict[tuple[int, str], int] = {}

    def _warn(self, kind: str, msg: str, *args: object) -> bool:
        """Log ``msg % args`` the first time ``kind`` fails (each kind once: a diagnostic must not flood
        the training log); return whether it logged."""
        return self._warned.log(kind, LOGGER, msg, *args)

    @property
    def ema(self) -> float | None:
        """The train-loss EMA after the last observed step (``None`` before a finite train loss)."""
        return self._ema

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must keep so a resumed run does not restart the spike baseline."""
        return {"ema": self._ema}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore ``state_dict()``; an unreadable value leaves the EMA unset (with a warning)."""
        try:
            ema = state.get("ema")
            self._ema = None if ema is None else float(ema)
        except (TypeError, ValueError, AttributeError) as exc:
            self._warn("load_state", "Instability monitor: ignoring unreadable state %r (%s)", state, exc)

    def observe(self, obs: StepObservation) -> MonitorDecision:
        """Judge one step, update the EMA, record any event; return what the caller must apply."""
        try:
            clean = clean_observation(obs)
        except Exception as exc:
            self._warn(
                "bad_observation",
                "Instability monitor: unreadable observation skipped (%s: %s)",
                type(exc).__name__,
                exc,
            )
            return _NO_DECISION
        try:
            baseline = self._ema
            reasons = detect_reasons(clean, baseline, self.settings)
            self._ema = next_ema(baseline, clean, LOSS_SPIKE in reasons, self.settings)
            decision = MonitorDecision(
                reasons=reasons,
                guard=should_guard(reasons, clean.mode, self.settings.guard),
                stop=should_stop(reasons, self.settings),
            )
        except Exception as exc:  # a bug here must not stop training: the monitor is a diagnostic
            self._warn(
                "decide_failed",
                "Instability monitor: decision failed (%s: %s); step not judged",
                type(exc).__name__,
                exc,
            )
            return _NO_DECISION
        if decision.reasons:
            self._report(clean, decision, baseline)
        return decision

    def _meta_json(self, obs: StepObservation) -> str | None:
        meta: object = obs.meta_json
        if meta is None or isinstance(meta, str):
            return meta
        self._warn(
            "meta_not_str",
            "Instability monitor: instability_meta_json is a %s, not a str; ignored",
            type(meta).__name__,
        )
        return None

    def _report(self, obs: StepObservation, decision: MonitorDecision, ema: float | None) -> None:
        """Warn once per reason kind; on the main process, append the event and dump the samples."""
        where = str(self.events_path) if self.is_main_process else "(not written: not the main process)"
        for reason in decision.reasons:
            self._warn(
                f"reason:{reason}",
                "Instability monitor: %s at %s step %d (loss=%r, guard=%s, stop=%s); events: %s",
                reason,
                obs.mode,
                obs.global_step,
                obs.loss,
                decision.guard,
                decision.stop,
                where,
            )
        if not self.is_main_process:
            return
        obs = replace(obs, meta_json=self._meta_json(obs))
        try:
            self._events.append(encode_line(build_event(obs, decision, ema, time_unix=time.time())))
        except Exception as exc:
            self._warn(
                "events_write",
                "Instability monitor: cannot append to %s (%s: %s)",
                self.events_path,
                type(exc).__name__,
                exc,
            )
        if self.settings.dump_samples:
            self._dump_samples(obs, decision)

    def _dump_samples(self, obs: StepObservation, decision: MonitorDecision) -> None:
        meta = obs.meta_json
        if meta is None:
            self._warn(
                "samples:no_meta",
                "Instability monitor: dump_samples is on but the batch has no "
                "instability_meta_json; samples are not dumped",
            )
            return
        context = {"global_step": obs.global_step, "mode": obs.mode, "reasons": list(decision.reasons)}
        try:
            dump_batch_samples(meta, self._sources, self._dump_path(obs), context, self._warn)
        except Exception as exc:
            self._warn(
                f"samples:{type(exc).__name__}",
                "Instability monitor: sample dump failed at step %d (%s: %s)",
                obs.global_step,
                type(exc).__name__,
                exc,
            )

    def _dump_path(self, obs: StepObservation) -> Path:
        """``step_<step>_<mode>.jsonl``; a later batch of the same step and mode (an eval pass, a
        gradient-accumulation micro-batch) gets ``step_<step>_<mode>_<k>.jsonl`` so no dump is lost."""
        key = (obs.global_step, obs.mode)
        k = self._dumps_per_step.get(key, 0)
        while True:
            suffix = "" if k == 0 else f"_{k}"
            path = self.dump_dir / sample_dump_name(obs.global_step, obs.mode, suffix)
            k += 1
            if not path.exists():
                self._dumps_per_step[key] = k
                return path
