"""The import task's work runs at a lowered CPU priority in a thread of its own; the worker
child's own priority (for its later tasks) is unchanged."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from worker.tasks import IMPORT_NICE, at_low_priority


@pytest.mark.skipif(sys.platform != "linux", reason="nice per thread is Linux's")
def test_import_work_runs_niced_and_the_worker_keeps_its_priority() -> None:
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen: list[int] = []
    at_low_priority(lambda: seen.append(
        os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
    assert seen == [max(IMPORT_NICE, before)]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before


def test_a_failure_in_the_import_reaches_the_task() -> None:
    def boom() -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        at_low_priority(boom)
