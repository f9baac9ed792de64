"""Workers that die, Ctrl-C, and what is left behind: real processes and signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import ezflow


def kill_self_on_three(x):
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def exit_on_five(x):
    if x == 5:
        os._exit(7)
    return x * 10


def segfault_on_two(x):
    if x == 2:
        import ctypes
        import faulthandler

        # the worker inherits pytest's faulthandler: without this a passing test
        # prints a "Fatal Python error: Segmentation fault" stack into the log
        faulthandler.disable()
        ctypes.string_at(0)  # reads address 0: SIGSEGV
    return x


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_sigkilled_worker_becomes_failure_and_others_complete(start_method):
    got = ezflow.map(
        kill_self_on_three, range(40), errors="return", start_method=start_method, progress=False
    )
    assert [g for i, g in enumerate(got) if i != 3] == [i for i in range(40) if i != 3]
    f = got[3]
    assert isinstance(f, ezflow.Failure) and isinstance(f.error, ezflow.WorkerDied)
    assert f.index == 3 and "SIGKILL" in str(f.error) and "memory" in str(f.error)
    assert f.error.exitcode == -signal.SIGKILL


def test_worker_exit_code_is_reported():
    got = ezflow.map(exit_on_five, range(10), errors="return", progress=False)
    assert isinstance(got[5], ezflow.Failure)
    assert "code 7" in str(got[5].error)
    assert got[:5] == [0, 10, 20, 30, 40]


def test_segfault_raises_task_error_naming_item():
    with pytest.raises(ezflow.TaskError) as info:
        ezflow.map(segfault_on_two, range(6), progress=False)
    assert info.value.index == 2
    assert isinstance(info.value.__cause__, ezflow.WorkerDied)
    assert "SIGSEGV" in str(info.value)


def test_dead_worker_in_a_big_chunk_only_fails_its_item():
    # tiny items travel in large pieces; the piece is re-run item by item
    got = ezflow.map(kill_self_on_three, range(5000), errors="return", progress=False)
    bad = [i for i, g in enumerate(got) if isinstance(g, ezflow.Failure)]
    assert bad == [3]
    assert got[4999] == 4999


def test_pool_recovers_after_deaths():
    ezflow.map(kill_self_on_three, range(10), errors="return", progress=False)
    assert ezflow.map(abs, range(-5, 5), progress=False) == [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]


def _run_script(code: str, sig_after: float | None = None, timeout: float = 60) -> tuple[int, str, float]:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    t_sig = None
    if sig_after is not None:
        # wait for the script to say it is running
        line = proc.stdout.readline()
        assert "running" in line, line
        time.sleep(sig_after)
        t_sig = time.monotonic()
        proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=timeout)
    took = time.monotonic() - t_sig if t_sig else 0.0
    return proc.returncode, out, took


INTERRUPT_SCRIPT = """
import os, sys, time, threading
import psutil, ezflow

def slow(x):
    time.sleep(30)
    return x

def children():
    return [p for p in psutil.Process().children(recursive=True)
            if "forkserver" not in " ".join(p.cmdline()) and "resource_tracker" not in " ".join(p.cmdline())]

if __name__ == "__main__":
    print("running", flush=True)
    t0 = time.monotonic()
    try:
        ezflow.map(slow, range(100), mode=sys.argv[1] if len(sys.argv) > 1 else "{mode}",
                   start_method="{start_method}", progress=False)
    except KeyboardInterrupt:
        print("interrupted after", round(time.monotonic() - t0, 2), flush=True)
    t1 = time.monotonic()
    ezflow.shutdown()
    deadline = time.monotonic() + 3
    while children() and time.monotonic() < deadline:
        time.sleep(0.05)
    print("children", len(children()), flush=True)
    # only this script's own segments: other ezflow processes may share the machine
    print("shm", sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"ezf_{{os.getpid()}}_")), flush=True)
    print("next", ezflow.map(abs, [-1, -2], mode="{mode}", start_method="{start_method}", progress=False), flush=True)
"""


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_ctrl_c_stops_process_map_fast_and_cleanly(start_method):
    code = INTERRUPT_SCRIPT.format(mode="process", start_method=start_method)
    rc, out, took = _run_script(code, sig_after=1.0)
    assert "interrupted after" in out, out
    assert "children 0" in out, out
    assert "shm []" in out, out
    assert "next [1, 2]" in out, out
    assert rc == 0, out
    # "within about a second": the script also starts a new pool and prints after it
    assert took < 10, took


def test_ctrl_c_stops_thread_map():
    code = INTERRUPT_SCRIPT.format(mode="thread", start_method="fork")
    rc, out, took = _run_script(code, sig_after=0.5)
    assert "interrupted after" in out, out
    assert "next [1, 2]" in out, out


def test_worker_exits_when_parent_is_killed():
    code = """
    import os, time, ezflow
    def slow(x):
        time.sleep(60)
    if __name__ == "__main__":
        import threading
        threading.Thread(target=lambda: ezflow.map(slow, range(4), progress=False), daemon=True).start()
        time.sleep(1.0)
        import psutil
        print("running", [p.pid for p in psutil.Process().children()], flush=True)
        time.sleep(60)
    """
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    pids = [int(p) for p in line.split("[", 1)[1].rstrip("]\n").split(",") if p.strip()]
    assert pids, line
    proc.kill()
    proc.wait()
    import psutil

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(psutil.pid_exists(p) for p in pids):
        time.sleep(0.1)
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"workers outlived a SIGKILLed parent: {alive}"


def test_stopping_iteration_early_stops_workers():
    import itertools

    it = ezflow.imap(lambda x: x, itertools.count(), progress=False)
    assert list(itertools.islice(it, 10)) == list(range(10))
    it.close()  # a generator closed early cancels the run


def test_error_in_source_is_raised_with_note():
    def source():
        yield 1
        yield 2
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone") as info:
        ezflow.map(abs, source(), progress=False)
    assert any("source" in n for n in getattr(info.value, "__notes__", []))


def _load_only_in(pid):
    if os.getpid() != pid:
        raise ImportError("this function cannot be loaded in a worker")
    return _Unloadable()


class _Unloadable:
    """A stage function that pickles, but whose loading fails in any other process."""

    def __call__(self, x):
        return x

    def __reduce__(self):
        return (_load_only_in, (os.getpid(),))


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_function_a_worker_cannot_load_fails_the_run_with_stage_error(start_method):
    with pytest.raises(ezflow.StageError, match="could not be set up in a worker.*ImportError"):
        ezflow.map(_Unloadable(), range(20), workers=2, start_method=start_method, progress=False)
    assert ezflow.map(abs, [-1, -2], workers=2, start_method=start_method, progress=False) == [1, 2]
