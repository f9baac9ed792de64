"""Stopped runs carrying arrays give back every segment (issue 15 point 3).

break out of imap, handle.cancel(), an item error and a KeyboardInterrupt,
repeated per start method: /dev/shm holds nothing of this process afterwards.
"""

from __future__ import annotations

import gc
import os
import signal
import threading
import time

import pytest

import ezflow

START_METHODS = ["fork", "spawn", "forkserver"]
ROUNDS = int(os.environ.get("EZFLOW_STRESS_ROUNDS", "12"))  # the 50: EZFLOW_STRESS_ROUNDS=50


def _mine() -> list[str]:
    pid = str(os.getpid())
    return sorted(
        n for n in os.listdir("/dev/shm") if n.startswith("ezf_") and n.split("_")[1] == pid and not n.endswith("_live")
    )


def _arrays(n: int):
    import numpy as np

    for i in range(n):
        yield np.full(1 << 18, float(i))  # 2 MiB: above the sharing threshold


def _double(a):
    return a * 2


def _fail_at_5(a):
    if a[0] == 5:
        raise ValueError("item 5")
    return a + 1


def _nap(a):
    time.sleep(0.05)
    return a


def _settle() -> list[str]:
    gc.collect()
    ezflow.shutdown()
    deadline = time.monotonic() + 5
    while _mine() and time.monotonic() < deadline:
        time.sleep(0.05)
        gc.collect()
    return _mine()


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("start_method", START_METHODS)
def test_break_cancel_error_interrupt_leave_no_segment(start_method: str) -> None:
    pytest.importorskip("numpy")
    before = _mine()
    for r in range(ROUNDS):
        # an early break out of a two-stage flow
        flow = ezflow.Flow(_arrays(40)).map(_double, workers=2, start_method=start_method).map(
            _double, workers=2, start_method=start_method
        )
        for k, out in enumerate(flow.iter(progress=False)):
            if k == 3:
                break
        del out  # a delivered result views its segment for as long as it is kept
        # cancel() part-way
        h = ezflow.Flow(_arrays(40)).map(_nap, workers=2, start_method=start_method).start(progress=False)
        time.sleep(0.1)
        h.cancel()
        # an item error
        with pytest.raises(ezflow.TaskError):
            ezflow.map(_fail_at_5, _arrays(20), workers=2, start_method=start_method, progress=False)
        # Ctrl-C in the middle of a map
        timer = threading.Timer(0.15, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        try:
            ezflow.map(_nap, _arrays(40), workers=2, start_method=start_method, progress=False)
        except KeyboardInterrupt:
            pass
        finally:
            timer.join()
        del flow, h
        left = sorted(set(_settle()) - set(before))
        assert left == [], f"round {r}: {left}"
