"""An owner killed outright, and owners in other PID namespaces (issue 15, points 2 and 8).

A SIGKILLed script or kernel runs no clean-up of its own: its watcher
process removes its segments within seconds, with no later ezflow call. A
reaper in another PID namespace (a container sharing /dev/shm) never takes a
live owner's segments, and does take a dead one's.
"""

from __future__ import annotations

import gc
import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import ezflow
from ezflow._transport import owner as _owner
from ezflow._transport import shm as _shm

from ._kernel import kernel, start_cell

START_METHODS = ["fork", "spawn", "forkserver"]
REPO = Path(__file__).resolve().parents[2]


def _left(pid: int) -> list[str]:
    return sorted(n for n in os.listdir(_shm.SHM_DIR) if n.startswith(f"ezf_{pid}_"))


def _wait_empty(pid: int, seconds: float) -> list[str]:
    deadline = time.monotonic() + seconds
    while _left(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _left(pid)


def _cleanup(pid: int) -> None:
    for n in _left(pid):  # the leak guard must not blame this test's own process
        try:
            os.unlink(os.path.join(_shm.SHM_DIR, n))
        except FileNotFoundError:
            pass


_SCRIPT = """
import os, sys, time, numpy as np, ezflow

def slow(a):
    time.sleep(30)
    return a

if __name__ == "__main__":
    kept = ezflow.share(np.ones(1 << 20))  # shared by the owner itself, outside any run
    it = ezflow.imap(slow, [np.ones(1 << 20) for _ in range(8)], workers=2, start_method=sys.argv[1])
    print("ready", flush=True)
    next(it)
"""


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("start_method", START_METHODS)
def test_sigkilled_script_leaves_no_segment(start_method: str) -> None:
    pytest.importorskip("numpy")
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_SCRIPT), start_method],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 30
        while len([n for n in _left(proc.pid) if not n.endswith("_live")]) < 3:
            assert time.monotonic() < deadline, f"no segments in flight: {_left(proc.pid)}"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        left = _wait_empty(proc.pid, 5)  # only wait: no other ezflow call
        assert left == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _cleanup(proc.pid)


_CELL = """
import time, numpy as np, ezflow

def slow(a):
    time.sleep(30)
    return a

kept = ezflow.share(np.ones(1 << 20))
print("kernel pid", __import__("os").getpid(), flush=True)
ezflow.map(slow, [np.ones(1 << 20) for _ in range(8)], workers=2, progress=False)
"""


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sigkilled_kernel_leaves_no_segment() -> None:
    pytest.importorskip("numpy")
    pid = -1
    try:
        with kernel() as (_km, kc):
            pid = start_cell(kc, _CELL)  # not waited for: the kernel is killed while it runs
            deadline = time.monotonic() + 60
            while len([n for n in _left(pid) if not n.endswith("_live")]) < 3:
                assert time.monotonic() < deadline, f"no segments in flight: {_left(pid)}"
                time.sleep(0.05)
            os.kill(pid, signal.SIGKILL)  # what the OOM killer or a crashed server does
            assert _wait_empty(pid, 5) == []
    finally:
        if pid > 0:
            _cleanup(pid)


def _unshare() -> list[str]:
    exe = shutil.which("unshare")
    if exe is None or sys.platform != "linux":
        pytest.skip("needs util-linux unshare (Linux)")
    probe = subprocess.run([exe, "-p", "-f", "--mount-proc", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a PID namespace here: {probe.stderr.decode().strip()}")
    return [exe, "-p", "-f", "--mount-proc"]


_SWEEP = "from ezflow._transport import shm; print(shm.sweep_stale())"


@pytest.mark.timeout(60)
def test_reaper_in_another_pid_namespace_keeps_a_live_owners_segments() -> None:
    np = pytest.importorskip("numpy")
    cmd = _unshare()
    a = ezflow.share(np.arange(1 << 18, dtype=np.float64))
    mine = [n for n in _left(os.getpid()) if not n.endswith("_live")]
    assert mine, "share() made no segment"
    # the same pid, dead in that namespace: a pid check there would call us dead
    done = subprocess.run([*cmd, sys.executable, "-c", _SWEEP], capture_output=True, text=True, timeout=30, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert set(mine) <= set(_left(os.getpid()))
    assert float(a[12345]) == 12345.0
    b = ezflow.map(lambda x: float(x.sum()), [a], workers=1, progress=False)  # still usable by workers
    assert b == [float(np.arange(1 << 18).sum())]
    del a
    gc.collect()  # the finished run's reference cycle still holds the array
    ezflow.shutdown()
    assert _wait_empty(os.getpid(), 5) == []


_KILLED_IN_NS = """
import os, signal, numpy as np, ezflow
from ezflow._transport import owner
a = ezflow.share(np.ones(1 << 18))
print(os.getpid(), flush=True)
owner._watcher.kill()  # as when the whole container is killed: no watcher survives
owner._watcher.wait()
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.timeout(60)
def test_dead_owner_of_another_pid_namespace_is_swept() -> None:
    pytest.importorskip("numpy")
    cmd = _unshare()
    before = set(os.listdir(_shm.SHM_DIR))
    # sh stays pid 1 of the namespace (init ignores its own SIGKILL); python is pid 2
    script = f"{shlex.quote(sys.executable)} -c {shlex.quote(textwrap.dedent(_KILLED_IN_NS))}; true"
    done = subprocess.run([*cmd, "sh", "-c", script], capture_output=True, text=True, timeout=30, cwd=REPO)
    inner = int(done.stdout.split()[0])
    theirs = sorted(
        n
        for n in set(os.listdir(_shm.SHM_DIR)) - before
        if n.startswith(f"ezf_{inner}_") and not n.endswith(f"_{_owner.NAMESPACE}")
    )
    try:
        assert theirs, "the namespaced owner left nothing to sweep (its watcher survived?)"
        assert all(_owner.parse(n) is None or _owner.parse(n)[2] != _owner.NAMESPACE for n in theirs)
        swept = _shm.sweep_stale()
        assert set(theirs) - {n for n in theirs if n.endswith("_live")} <= set(swept)
        assert not (set(theirs) & set(os.listdir(_shm.SHM_DIR)))  # its lock file too
    finally:
        for n in theirs:
            try:
                os.unlink(os.path.join(_shm.SHM_DIR, n))
            except FileNotFoundError:
                pass


def test_segment_names_carry_owner_and_namespace() -> None:
    np = pytest.importorskip("numpy")
    a = ezflow.share(np.zeros(1 << 18))
    names = [n for n in _left(os.getpid()) if not n.endswith("_live")]
    assert names
    for n in names:
        ids = _owner.parse(n)
        assert ids is not None and ids[0] == os.getpid() and ids[2] == _owner.NAMESPACE
    assert _owner.liveness_name(os.getpid()) in _left(os.getpid())
    del a
    gc.collect()
    ezflow.shutdown()
    assert _wait_empty(os.getpid(), 5) == []  # nothing owned: lock file and watcher are gone
