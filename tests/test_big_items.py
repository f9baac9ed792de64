"""Big pickled items (bytes, lists of strings) reach workers without holding up the others (issue 26 point 4).

A task message bigger than the pipe's buffer goes through a shared-memory
segment and the pipe carries its name (`_transport/spill.py`): results stay
right and in order, a worker that dies or cannot load its task loses only
its own items, and nothing is left in /dev/shm.
"""

from __future__ import annotations

import os

import pytest

import ezflow
from ezflow._transport import link

START_METHODS = ["fork", "spawn", "forkserver"]


def _strings(i: int, n: int = 20_000) -> list[str]:
    return [f"item {i} row {j}" for j in range(n)]  # ~400 KB pickled: above the spill size


def _summary(items: list[str]) -> tuple[int, str, str]:
    return len(items), items[0], items[-1]


def _bytes_len(b: bytes) -> tuple[int, int]:
    return len(b), b[-1]


def _mine() -> list[str]:
    pid = str(os.getpid())
    return [n for n in os.listdir("/dev/shm") if n.startswith(f"ezf_{pid}_")]


@pytest.fixture
def spills(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the task messages that went through a segment."""
    sizes: list[int] = []
    real = link.spill

    def counting(data: bytes):
        sizes.append(len(data))
        return real(data)

    monkeypatch.setattr(link, "spill", counting)
    return sizes


@pytest.mark.parametrize("start_method", START_METHODS)
def test_lists_of_strings_and_bytes_arrive_whole_and_in_order(start_method: str, spills: list[int]) -> None:
    items = [_strings(i) for i in range(12)]
    got = ezflow.map(_summary, items, workers=2, start_method=start_method, progress=False)
    assert got == [_summary(x) for x in items]
    blobs = [bytes([i]) * (1 << 20) for i in range(12)]
    assert ezflow.map(_bytes_len, blobs, workers=2, start_method=start_method, progress=False) == [
        (1 << 20, i) for i in range(12)
    ]
    assert spills and min(spills) >= link.SPILL_BYTES  # the big pieces went through segments
    ezflow.shutdown()
    assert _mine() == []


def test_small_messages_keep_the_pipe(spills: list[int]) -> None:
    assert ezflow.map(abs, range(-1000, 0), workers=2, progress=False) == list(range(1000, 0, -1))
    assert spills == [] or min(spills) >= link.SPILL_BYTES


def test_share_arrays_false_keeps_big_items_in_the_pipe(spills: list[int]) -> None:
    items = [_strings(i) for i in range(4)]
    assert ezflow.map(_summary, items, workers=2, share_arrays=False, progress=False) == [_summary(x) for x in items]
    assert spills == []


def _dies_on_three(items: list[str]) -> tuple[int, str, str]:
    if items[0] == "item 3 row 0":
        os._exit(3)
    return _summary(items)


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_a_worker_dying_with_big_tasks_queued_loses_only_its_item(start_method: str, spills: list[int]) -> None:
    items = [_strings(i) for i in range(10)]
    got = ezflow.map(_dies_on_three, items, workers=2, errors="return", start_method=start_method, progress=False)
    assert isinstance(got[3], ezflow.Failure) and isinstance(got[3].error, ezflow.WorkerDied)
    assert [g for i, g in enumerate(got) if i != 3] == [_summary(x) for i, x in enumerate(items) if i != 3]
    assert spills
    ezflow.shutdown()
    assert _mine() == []


class _LoadFails:
    """Pickles here with a big payload; cannot be loaded in a worker."""

    def __init__(self) -> None:
        self.payload = b"x" * (1 << 20)

    def __reduce__(self):
        return (_explode, (self.payload,))


def _explode(payload: bytes) -> object:
    if os.environ.get("EZFLOW_IN_PARENT") == str(os.getpid()):
        return "loaded"
    raise ValueError("cannot load here")


def test_a_big_task_the_worker_cannot_load_fails_alone(monkeypatch: pytest.MonkeyPatch, spills: list[int]) -> None:
    monkeypatch.setenv("EZFLOW_IN_PARENT", str(os.getpid()))
    items = [b"a" * (1 << 20), _LoadFails(), b"c" * (1 << 20)]
    got = ezflow.map(_bytes_len, items, workers=1, errors="return", chunksize=3, start_method="fork", progress=False)
    assert isinstance(got[1], ezflow.Failure) and isinstance(got[1].error, ValueError)
    assert got[0] == (1 << 20, ord("a")) and got[2] == (1 << 20, ord("c"))
    assert spills
    ezflow.shutdown()
    assert _mine() == []


def _slow_summary(items: list[str]) -> tuple[int, str, str]:
    import time

    time.sleep(0.05)
    return _summary(items)


def test_a_cancelled_run_with_spilled_tasks_leaves_nothing(spills: list[int]) -> None:
    items = (_strings(i) for i in range(1000))
    for n, _ in enumerate(ezflow.imap(_slow_summary, items, workers=2, progress=False)):
        if n == 5:
            break
    assert spills
    ezflow.shutdown()
    assert _mine() == []


def test_without_shared_memory_a_busy_worker_does_not_hold_up_the_other(monkeypatch: pytest.MonkeyPatch) -> None:
    """share_arrays=False: big messages go by the pipe, written off the sender's thread (backlog.py)."""
    from ezflow._executors import backlog

    threads: list[str] = []
    real = backlog.write

    def noting(w, data):
        import threading

        threads.append(threading.current_thread().name)
        real(w, data)

    monkeypatch.setattr(backlog, "write", noting)
    items = [_strings(i, 40_000) for i in range(8)]
    got = ezflow.map(_slow_summary, items, workers=2, share_arrays=False, progress=False)
    assert got == [_summary(x) for x in items]
    assert any(name.startswith("ezflow-write-") for name in threads), threads
