"""``WarnOnce``: the one warn-once registry of the guards, the collator, the pipeline and the monitor."""

from __future__ import annotations

import logging
import threading
import warnings

import pytest

from coordexp.diagnostics import WarnOnce


def test_each_ident_warns_once_until_reset() -> None:
    once = WarnOnce()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert once.warn(("key", "rule"), "first", RuntimeWarning)
        assert not once.warn(("key", "rule"), "again", RuntimeWarning)
        assert once.warn(("key", "other"), "another kind")
    assert [(str(w.message), w.category) for w in caught] == [
        ("first", RuntimeWarning),
        ("another kind", UserWarning),
    ]
    assert once.seen(("key", "rule")) and not once.seen("never")
    once.reset()
    assert not once.seen(("key", "rule"))
    with pytest.warns(RuntimeWarning, match="after reset"):
        assert once.warn(("key", "rule"), "after reset", RuntimeWarning)


def test_stacklevel_counts_from_the_caller() -> None:
    def caller() -> None:
        WarnOnce().warn("x", "here", stacklevel=2)  # as warnings.warn(stacklevel=2) would: our caller

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        caller()  # this line
    assert caught[0].filename == __file__


def test_log_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    once = WarnOnce()
    logger = logging.getLogger("coordexp.test_warn_once")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        assert once.log("disk", logger, "cannot write %s", "x")
        assert not once.log("disk", logger, "cannot write %s", "y")
    assert [r.getMessage() for r in caplog.records] == ["cannot write x"]


def test_threads_racing_on_one_ident_warn_exactly_once() -> None:
    once = WarnOnce()
    start = threading.Barrier(8)
    results: list[bool] = []
    lock = threading.Lock()

    def race() -> None:
        start.wait()
        first = once.first("kind")
        with lock:
            results.append(first)

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
