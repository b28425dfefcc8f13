"""BackgroundRunner: work off the GUI thread, latest submission wins, errors and cancel handed back."""

from __future__ import annotations

import threading
import time

import pytest

from SAMSegmenterLib.errors import Cancelled
from SAMSegmenterMRML.jobs import BackgroundRunner


def test_results_come_back_in_order_and_a_waiting_job_is_replaced():
    runner = BackgroundRunner()
    release = threading.Event()
    ran = []

    def job(name):
        def work():
            if name == "first":
                release.wait(10)
            ran.append((name, threading.current_thread() is threading.main_thread()))
            return name.upper()

        return work

    runner.submit("first", job("first"))
    time.sleep(0.05)  # "first" is running now
    runner.submit("second", job("second"))
    runner.submit("third", job("third"))  # replaces "second", which never started
    assert runner.busy
    release.set()
    assert runner.wait(10)
    assert not runner.busy
    assert [(f.tag, f.value, f.error) for f in runner.poll()] == [("first", "FIRST", None), ("third", "THIRD", None)]
    assert ran == [("first", False), ("third", False)]
    assert runner.poll() == []


def test_errors_progress_and_cancel_reach_the_main_thread():
    runner = BackgroundRunner()

    def failing():
        raise ValueError("bad prompt")

    runner.submit("fails", failing)
    runner.wait(10)
    (finished,) = runner.poll()
    assert finished.tag == "fails" and isinstance(finished.error, ValueError) and finished.value is None

    started = threading.Event()

    def long_job():
        for done in range(1, 1000):
            runner.report(done, 1000)
            started.set()
            if runner.cancel_requested():
                raise Cancelled("stopped")
            time.sleep(0.01)
        return "finished"

    runner.submit("long", long_job)
    assert started.wait(10)
    runner.cancel()
    runner.wait(10)
    (finished,) = runner.poll()
    assert isinstance(finished.error, Cancelled)
    assert 0 < runner.progress[0] < 1000 and runner.progress[1] == 1000
    runner.submit("again", lambda: "ok")  # a new job starts with the cancel flag cleared
    runner.wait(10)
    assert [(f.value, f.error) for f in runner.poll()] == [("ok", None)]


def test_package_exposes_the_logic_lazily():
    import SAMSegmenterMRML
    from SAMSegmenterMRML import SAMSegmenterLogic
    from SAMSegmenterMRML.logic import SAMSegmenterLogic as direct

    assert SAMSegmenterLogic is direct
    with pytest.raises(AttributeError):
        SAMSegmenterMRML.NoSuchThing  # noqa: B018
