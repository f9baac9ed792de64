"""More injected faults (issue 15 point 9): every signal, a tiny /dev/shm, odd items, Ctrl-C in a kernel.

After each case the autouse `no_leaks` guard (tests/conftest.py) checks that
no process and no segment of ours is left; every input is a result or a
Failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import ezflow

from ._kernel import kernel

REPO = Path(__file__).resolve().parents[2]
START_METHODS = ["fork", "spawn", "forkserver"]
SIGNALS = ["SIGKILL", "SIGSEGV", "SIGABRT", "SIGBUS", "SIGTERM", "SIGINT", "exit"]


def _die_by(x: int, how: str) -> int:
    if x == 2:
        if how == "exit":
            os._exit(3)
        import faulthandler

        faulthandler.disable()  # a fatal signal must print nothing of ours
        sig = getattr(signal, how)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)  # workers ignore SIGINT: make it deadly as for any program
        os.kill(os.getpid(), sig)
        time.sleep(5)
    return x + 100


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("start_method", START_METHODS)
@pytest.mark.parametrize("how", SIGNALS)
def test_worker_death_by_every_signal_fails_only_its_item(how: str, start_method: str) -> None:
    import functools

    out = ezflow.map(
        functools.partial(_die_by, how=how),
        range(6),
        workers=2,
        chunksize=1,
        errors="return",
        start_method=start_method,
        progress=False,
    )
    assert len(out) == 6
    assert isinstance(out[2], ezflow.Failure) and isinstance(out[2].error, ezflow.WorkerDied)
    assert [out[i] for i in (0, 1, 3, 4, 5)] == [100, 101, 103, 104, 105]


class _Unpicklable:
    def __reduce__(self):
        raise TypeError("this item cannot be pickled")


class _BadError(Exception):
    def __reduce__(self):
        raise TypeError("this exception cannot be pickled")


def _raise_bad(x: int) -> int:
    if x == 1:
        raise _BadError("odd")
    return x


def test_unpicklable_item_fails_alone() -> None:
    out = ezflow.map(abs, [-1, _Unpicklable(), -3], workers=1, errors="return", progress=False)
    assert out[0] == 1 and out[2] == 3
    assert isinstance(out[1], ezflow.Failure)
    assert "cannot be pickled" in str(out[1].error)


def test_unpicklable_exception_keeps_its_name_and_text() -> None:
    out = ezflow.map(_raise_bad, range(3), workers=1, errors="return", progress=False)
    assert out[0] == 0 and out[2] == 2
    assert isinstance(out[1], ezflow.Failure)
    assert "_BadError" in repr(out[1].error) + out[1].traceback and "odd" in out[1].traceback


_TINY_SHM = """
import warnings, numpy as np, ezflow
warnings.simplefilter("always")

def grow(a):
    return np.concatenate([a, a])

if __name__ == "__main__":
    with warnings.catch_warnings(record=True) as caught:
        out = ezflow.map(grow, [np.full(1 << 18, float(i)) for i in range(8)], workers=2, progress=False)
    ok = all(o.shape == (1 << 19,) and o[0] == i for i, o in enumerate(out))
    kinds = {type(w.message).__name__ for w in caught}
    del out
    ezflow.shutdown()
    import os
    left = [n for n in os.listdir("/dev/shm") if n.startswith("ezf_")]
    print("ok", ok, "warned", "SharedMemoryWarning" in kinds, "left", left)
"""


@pytest.mark.timeout(120)
def test_a_tiny_dev_shm_falls_back_to_pipes_and_leaves_nothing() -> None:
    pytest.importorskip("numpy")
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs root and util-linux unshare for a private /dev/shm")
    inner = (
        "mount -t tmpfs -o size=4m tmpfs /dev/shm && "
        f"cd {REPO} && PYTHONPATH={REPO} {sys.executable} -c {_quote(textwrap.dedent(_TINY_SHM))}"
    )
    done = subprocess.run([unshare, "-m", "sh", "-c", inner], capture_output=True, text=True, timeout=120)
    if done.returncode != 0 and "mount" in done.stderr:
        pytest.skip(f"cannot mount a private tmpfs here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok True warned True left []", done.stdout + done.stderr


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


_KERNEL_CELL = """
import time, numpy as np, ezflow

def slow(a):
    time.sleep(30)
    return a

try:
    ezflow.map(slow, [np.ones(1 << 20) for _ in range(8)], workers=2, progress=False)
except KeyboardInterrupt:
    print("interrupted", flush=True)
import gc, os, psutil
gc.collect()
ezflow.shutdown()  # free segments are otherwise kept 30 s for the next run
time.sleep(0.5)
print("children", len(psutil.Process().children()), "segments",
      len([n for n in os.listdir("/dev/shm") if n.startswith(f"ezf_{os.getpid()}_") and not n.endswith("_live")]))
"""


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_interrupt_kernel_stops_everything() -> None:
    pytest.importorskip("numpy")
    texts: list[str] = []
    with kernel() as (km, kc):
        kc.execute_interactive("import ezflow; ezflow.shutdown()", timeout=60)

        def interrupt() -> None:
            time.sleep(3)
            km.interrupt_kernel()  # what "Interrupt kernel" does

        t = threading.Thread(target=interrupt)
        t.start()
        reply = kc.execute_interactive(
            _KERNEL_CELL,
            timeout=60,
            output_hook=lambda m: texts.append(m["content"].get("text", "")) if m["msg_type"] == "stream" else None,
        )
        t.join()
        assert reply["content"]["status"] == "ok", reply["content"]
    out = "".join(texts)
    assert "interrupted" in out
    # busy workers are killed on interrupt; nothing is left once the kept free segments go
    assert "children 0 segments 0" in out, out
