"""An error on one rank stops every rank promptly, and every rank reports that error.

Why: in a multi-rank run an exception on one rank (a strict contract violation raised by its
collator, a coord-objective error in ``compute_loss``, a failure in backward) happens before that
rank's next collective. Its peers then wait in that collective until the process-group timeout
(``ddp_timeout``, 30 minutes by default) unless a launcher tears them down, and when one does, their
logs say nothing about the cause.

Why not simply tear the process group down on the failing rank: with gloo, neither
``destroy_process_group`` nor an abort closes the connections while the trainer (DDP, accelerate)
still holds the group, so the peers' collectives go on waiting; only the process's exit closes
them, and ``torchrun`` stops the other ranks within 0.1 s of that exit, before they could say why.

How (the training entry runs the trainer inside :func:`stop_all_ranks_on_error`):

- The rank that raises publishes ``"rank R: <Type>: <message>"`` in the c10d store every rank
  already shares (torchrun's agent store, or the rendezvous store), prints that line on stderr,
  and waits (bounded) until every other rank has taken note; then it re-raises and exits.
- Every rank runs a watcher thread that looks at the store once per second (one small store
  request; no collective, no device sync, nothing on the training step). Seeing a peer's error, it
  prints ``"rank R stopped because another rank failed: rank F: ..."`` and takes note.
- The failing rank's exit closes its connections: a peer blocked in a collective (gloo) fails at
  once, and its main thread raises :class:`RankFailedError` with the published error. A peer that
  cannot be woken that way (an NCCL collective) is ended by its watcher after a grace period, or
  by the launcher, its report already on stderr.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["RankFailedError", "stop_all_ranks_on_error"]

_PREFIX = "coordexp/rank_failure"
_WATCH_INTERVAL_S = 1.0
"""How often the watcher looks for a peer's published error."""
_PEER_ERROR_WAIT_S = 5.0
"""How long a rank whose collective failed looks for the failing peer's published error."""
_REPORT_WAIT_S = 30.0
"""How long the failing rank waits for every peer to take note before it exits."""
_EXIT_GRACE_S = 15.0
"""How long a watcher that saw a peer's error lets its main thread end by itself before exiting."""
_POLL_S = 0.05


class RankFailedError(RuntimeError):
    """Another rank failed; the message names it and its error."""


def _distributed() -> tuple[int, int, Any] | None:
    """(rank, world size, store) of an initialised multi-rank run; None otherwise."""
    try:
        import torch.distributed as dist
        from torch.distributed import distributed_c10d

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return None
        return dist.get_rank(), dist.get_world_size(), distributed_c10d._get_default_store()
    except Exception:
        return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _error_key(rank: int) -> str:
    return f"{_PREFIX}/error/{rank}"


def _count(store: Any, name: str) -> int:
    return int(store.add(f"{_PREFIX}/{name}", 0))


def _bump(store: Any, name: str) -> None:
    try:
        store.add(f"{_PREFIX}/{name}", 1)
    except Exception:
        pass


def _published(store: Any, rank: int, world: int) -> list[str]:
    """The errors the ranks other than ``rank`` published, in rank order."""
    found = []
    for other in range(world):
        if other != rank and store.check([_error_key(other)]):
            found.append(store.get(_error_key(other)).decode("utf-8", errors="replace"))
    return found


def _peer_message(rank: int, peers: list[str]) -> str:
    return f"rank {rank} stopped because another rank failed: {'; '.join(peers)}"


class _Watch:
    """This rank's side of the protocol: the watcher thread and who reported what."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._failing = False
        self._reported = False
        self._thread = threading.Thread(target=self._run, name="coordexp-rank-failure-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        setting = None
        while setting is None:  # the process group comes up while the trainer is built
            if self.done.wait(_WATCH_INTERVAL_S):
                return
            setting = _distributed()
        rank, world, store = setting
        while not self.done.wait(_WATCH_INTERVAL_S):
            try:
                peers = _published(store, rank, world) if _count(store, "failures") else []
            except Exception:
                return  # the store is gone: the run is over
            if peers and self.report_peers(rank, store, peers):
                if not self.done.wait(_EXIT_GRACE_S):
                    os._exit(1)  # the main thread is stuck in a collective nothing wakes (NCCL)
                return

    def report_peers(self, rank: int, store: Any, peers: list[str]) -> bool:
        """Print and acknowledge a peer's error, once per rank; False when already done, or when
        this rank is failing itself (its own error is the one it reports)."""
        with self._lock:
            if self._failing or self._reported:
                return False
            self._reported = True
        print(f"[coordexp] {_peer_message(rank, peers)}", file=sys.stderr, flush=True)
        _bump(store, "reported")
        return True

    def claim_own_failure(self) -> bool:
        """Mark this rank as failing; False when it already reported a peer's failure."""
        with self._lock:
            if self._reported:
                return False
            self._failing = True
            return True


def _wait_for_peer_errors(store: Any, rank: int, world: int) -> list[str]:
    deadline = time.monotonic() + _PEER_ERROR_WAIT_S
    while True:
        found = _published(store, rank, world)
        if found or time.monotonic() > deadline:
            return found
        time.sleep(_POLL_S)


def _wait_for_reports(store: Any, world: int) -> None:
    deadline = time.monotonic() + _REPORT_WAIT_S
    while time.monotonic() < deadline and _count(store, "reported") < world:
        time.sleep(_POLL_S)


@contextmanager
def stop_all_ranks_on_error() -> Iterator[None]:
    """Run a multi-rank section so that an exception on one rank ends every rank with it.

    Outside a multi-rank launch (``WORLD_SIZE`` unset or 1) this is a plain ``yield``. Store
    failures while handling an error are swallowed: the original exception always propagates.
    """
    if int(os.environ.get("WORLD_SIZE", "1") or 1) < 2:
        yield
        return
    watch = _Watch()
    try:
        yield
    except BaseException as exc:
        setting = _distributed()
        if setting is None or isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        rank, world, store = setting
        try:
            peers = _wait_for_peer_errors(store, rank, world) if _may_be_a_peers_failure(exc) else []
        except Exception:
            peers = []
        if peers or not watch.claim_own_failure():
            peers = peers or _published(store, rank, world)
            watch.report_peers(rank, store, peers)
            raise RankFailedError(
                f"{_peer_message(rank, peers)} (this rank then got {type(exc).__name__})"
            ) from exc
        line = f"rank {rank}: {_one_line(exc)}"
        print(f"[coordexp] {line}; stopping every rank", file=sys.stderr, flush=True)
        try:
            store.set(_error_key(rank), line)
            _bump(store, "failures")
            _bump(store, "reported")
            _wait_for_reports(store, world)
        except Exception:
            pass
        raise
    finally:
        watch.done.set()


def _may_be_a_peers_failure(exc: BaseException) -> bool:
    """Whether ``exc`` may be the consequence of a peer leaving (a failed collective).

    Any exception from torch.distributed qualifies, and so does any other ``RuntimeError`` (gloo,
    DDP's reducer and accelerate raise collective failures as plain RuntimeErrors) except a
    ``CoordObjectiveError``. A peer's published error is then looked for; a rank's own
    ``ContractViolation``, ``ValueError`` ... is reported as its own without waiting.
    """
    import torch.distributed as dist

    from coordexp.components.coord_loss import CoordObjectiveError

    return isinstance(exc, dist.DistError | RuntimeError) and not isinstance(exc, CoordObjectiveError)
