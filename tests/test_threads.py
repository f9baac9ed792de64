"""Kept threads for a run's own loops (`_core.threads`): reused, joinable, bounded, fork-safe."""

from __future__ import annotations

import os
import threading
import time

import pytest

import ezflow
from ezflow._core import threads

pytestmark = pytest.mark.timeout(60)


def test_a_finished_loop_leaves_its_thread_for_the_next():
    first = threads.spawn(lambda: None, "ezflow-test-a")
    first.join(5)
    assert not first.is_alive()
    kept = {t.ident for t in threading.enumerate() if t.name == "ezflow-idle"}
    assert first.ident in kept or threads._idle == threads.MAX_IDLE  # parked, unless enough are
    second = threads.spawn(lambda: None, "ezflow-test-b")
    second.join(5)
    assert second.ident in kept  # a kept thread ran it: no thread was started


def test_a_kept_thread_takes_the_loop_name_while_it_runs():
    names = []
    job = threads.spawn(lambda: names.append(threading.current_thread().name), "ezflow-test-named")
    job.join(5)
    assert names == ["ezflow-test-named"]


def test_join_waits_and_a_loop_joining_itself_returns():
    gate = threading.Event()
    box = {}

    def loop():
        gate.wait(5)
        box["job"].join(5)  # its own job: must not wait for itself
        box["ok"] = True

    box["job"] = job = threads.spawn(loop, "ezflow-test-join")
    job.join(0.05)
    assert job.is_alive()
    gate.set()
    job.join(5)
    assert not job.is_alive() and box["ok"]


def test_idle_threads_leave_after_a_while(monkeypatch):
    monkeypatch.setattr(threads, "IDLE_SECONDS", 0.1)
    # threads parked before the patch wait the old time: count only the ones made now
    jobs = [threads.Job(lambda: time.sleep(0.2), f"ezflow-test-idle-{i}") for i in range(3)]
    for job in jobs:
        threading.Thread(target=threads._serve, args=(job,), daemon=True).start()
    for job in jobs:
        job.join(5)
    mine = {job.ident for job in jobs}

    def alive() -> set:
        return mine & {t.ident for t in threading.enumerate()}

    deadline = time.monotonic() + 5
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive()  # nobody handed them a loop: after IDLE_SECONDS they left


def test_runs_reuse_their_loops_threads():
    ezflow.map(abs, range(10), workers=2, progress=False)
    before = {t.ident for t in threading.enumerate()}
    for _ in range(20):
        ezflow.map(abs, range(10), workers=2, progress=False)
    after = {t.ident for t in threading.enumerate()}
    assert len(after - before) <= 1, (before, after)


def test_thread_stages_run_user_code_on_threads_of_their_own():
    ezflow.map(abs, range(4), mode="thread", workers=2, progress=False)
    idents = set(ezflow.map(lambda _: threading.get_ident(), range(40), mode="thread", workers=2, progress=False))
    kept = {t.ident for t in threading.enumerate() if t.name == "ezflow-idle"}
    assert not idents & kept  # a user's threading.local never outlives its stage's run


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_forked_child_starts_with_no_kept_thread():
    threads.spawn(lambda: None, "ezflow-test-fork").join(5)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its idle count must be zero, and a job must still run
        try:
            ok = threads._idle == 0
            box = []
            threads.spawn(lambda: box.append(1), "ezflow-test-child").join(5)
            os.write(w, b"1" if ok and box == [1] else b"0")
        finally:
            os._exit(0)
    os.close(w)
    got = os.read(r, 1)
    os.close(r)
    os.waitpid(pid, 0)
    assert got == b"1"
