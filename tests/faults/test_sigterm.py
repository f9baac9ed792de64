"""SIGTERM while ezflow holds workers or segments (issue 15 point 1).

The handler cleans up as Ctrl-C does, then the process ends by SIGTERM (or a
handler the user installed is called instead); it exists only while ezflow
holds something. The script-level case for every start method is
tests/faults/test_faults.py::test_sigterm_to_a_script_leaves_nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from ._kernel import kernel, start_cell

REPO = Path(__file__).resolve().parents[2]

_USER_HANDLER = """
import os, signal, sys, time, numpy as np, ezflow

def mine(signum, frame):
    print("user handler ran", flush=True)
    sys.exit(7)

signal.signal(signal.SIGTERM, mine)

def slow(a):
    time.sleep(30)
    return a

if __name__ == "__main__":
    print("ready", os.getpid(), flush=True)
    ezflow.map(slow, [np.ones(1 << 20) for _ in range(8)], workers=2)
"""


def _segments(pid: int) -> list[str]:
    return [n for n in os.listdir("/dev/shm") if n.startswith(f"ezf_{pid}_") and not n.endswith("_live")]


def _start(script: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        start_new_session=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("ready")
    return proc


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_users_sigterm_handler_is_kept_and_called_after_the_clean_up() -> None:
    pytest.importorskip("numpy")
    proc = _start(_USER_HANDLER)
    try:
        deadline = time.monotonic() + 30
        while len(psutil.Process(proc.pid).children()) < 2 or not _segments(proc.pid):
            assert time.monotonic() < deadline, "no workers or segments appeared"
            time.sleep(0.05)
        workers = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 7, err  # the user's handler decided how to end
        assert "user handler ran" in out
        assert _segments(proc.pid) == []
        time.sleep(0.5)
        assert not [p for p in workers if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


_INSTALLED_ONLY_WHILE_HOLDING = """
import signal, ezflow
print("before", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
ezflow.map(abs, [-1, -2], mode="thread")
print("threads", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
ezflow.map(abs, [-1, -2], workers=2)
print("workers", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
ezflow.shutdown()
print("after shutdown", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
ezflow.map(abs, [-1, -2], workers=2)
print("ignored stays", signal.getsignal(signal.SIGTERM) is signal.SIG_IGN)
ezflow.shutdown()
"""


@pytest.mark.timeout(60)
def test_the_handler_exists_only_while_ezflow_holds_workers() -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_INSTALLED_ONLY_WHILE_HOLDING)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:5] == [
        "before True",
        "threads True",
        "workers False",
        "after shutdown True",
        "ignored stays True",
    ]


_HANDLER_RETURNS = """
import os, signal, sys, time, numpy as np, ezflow

signal.signal(signal.SIGTERM, lambda signum, frame: print("noted", flush=True))

def slow(a):
    time.sleep(30)
    return a

if __name__ == "__main__":
    print("ready", os.getpid(), flush=True)
    try:
        ezflow.map(slow, [np.ones(1 << 20) for _ in range(8)], workers=2)
    except ezflow.StageError as exc:
        print("ended:", exc, flush=True)
    print("still running", flush=True)
"""


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_handler_that_returns_gets_a_run_that_ends_with_a_clear_error() -> None:
    pytest.importorskip("numpy")
    proc = _start(_HANDLER_RETURNS)
    try:
        deadline = time.monotonic() + 30
        while len(psutil.Process(proc.pid).children()) < 2 or not _segments(proc.pid):
            assert time.monotonic() < deadline, "no workers or segments appeared"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "noted" in out and "received SIGTERM" in out and "still running" in out, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


_CELL = """
import os, time, numpy as np, ezflow

def slow(a):
    time.sleep(30)
    return a

print("kernel pid", os.getpid(), flush=True)
ezflow.map(slow, [np.ones(1 << 20) for _ in range(8)], workers=2, progress=False)
"""


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_kernel_shut_down_mid_run_leaves_nothing() -> None:
    pytest.importorskip("numpy")
    with kernel() as (km, kc):
        pid = start_cell(kc, _CELL)
        deadline = time.monotonic() + 60
        while len(psutil.Process(pid).children()) < 2 or not _segments(pid):
            assert time.monotonic() < deadline, "no workers or segments appeared"
            time.sleep(0.05)
        workers = [p.pid for p in psutil.Process(pid).children(recursive=True)]
        kc.stop_channels()
        km.shutdown_kernel()  # what JupyterLab's "Shut Down Kernel" does: a request, then SIGTERM, then SIGKILL
        deadline = time.monotonic() + 5
        while (_segments(pid) or _alive(workers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _segments(pid) == []
        assert _alive(workers) == []


def _alive(pids: list[int]) -> list[int]:
    out = []
    for p in pids:
        try:
            if psutil.Process(p).status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            pass
    return out
