"""Big pickled items (bytes, lists of strings) reach workers without holding up the others (issue 26 point 4).

A task message bigger than the pipe's buffer is written to its worker's pipe
by a thread of that worker's own (`_executors/backlog.py`), so the sender
goes on feeding the other workers while a busy one has not read yet.
Results stay right and in order, a worker that dies or cannot load its task
loses only its own items, and nothing is left behind.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

import ezflow
from ezflow._executors import backlog

START_METHODS = ["fork", "spawn", "forkserver"]


def _strings(i: int, n: int = 20_000) -> list[str]:
    return [f"item {i} row {j}" for j in range(n)]  # ~400 KB pickled: more than a pipe's buffer


def _summary(items: list[str]) -> tuple[int, str, str]:
    return len(items), items[0], items[-1]


def _slow_summary(items: list[str]) -> tuple[int, str, str]:
    time.sleep(0.05)
    return _summary(items)


def _bytes_len(b: bytes) -> tuple[int, int]:
    return len(b), b[-1]


def _mine() -> list[str]:
    pid = str(os.getpid())
    return [n for n in os.listdir("/dev/shm") if n.startswith(f"ezf_{pid}_")]


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Note every task message written to a worker: (the writing thread's name, its size)."""
    seen: list[tuple[str, int]] = []
    real = backlog.write

    def noting(w, data):
        seen.append((threading.current_thread().name, len(data)))
        real(w, data)

    monkeypatch.setattr(backlog, "write", noting)
    return seen


@pytest.mark.parametrize("start_method", START_METHODS)
def test_lists_of_strings_and_bytes_arrive_whole_and_in_order(start_method: str, writes: list) -> None:
    items = [_strings(i) for i in range(12)]
    got = ezflow.map(_slow_summary, items, workers=2, start_method=start_method, progress=False)
    assert got == [_summary(x) for x in items]
    blobs = [bytes([i]) * (1 << 20) for i in range(12)]
    assert ezflow.map(_bytes_len, blobs, workers=2, start_method=start_method, progress=False) == [
        (1 << 20, i) for i in range(12)
    ]
    big = [name for name, size in writes if size >= backlog.PIPE_ROOM]
    assert big and all(name.startswith("ezflow-write-") for name in big), writes  # never on the sender


def test_small_messages_are_written_by_the_sender(writes: list) -> None:
    assert ezflow.map(abs, range(-1000, 0), workers=2, progress=False) == list(range(1000, 0, -1))
    assert writes and all(size < backlog.PIPE_ROOM for _, size in writes)
    assert not any(name.startswith("ezflow-write-") for name, _ in writes)


def _dies_on_three(items: list[str]) -> tuple[int, str, str]:
    if items[0] == "item 3 row 0":
        os._exit(3)
    time.sleep(0.05)
    return _summary(items)


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_a_worker_dying_with_big_tasks_queued_loses_only_its_item(start_method: str, writes: list) -> None:
    items = [_strings(i) for i in range(10)]
    got = ezflow.map(_dies_on_three, items, workers=2, errors="return", start_method=start_method, progress=False)
    assert isinstance(got[3], ezflow.Failure) and isinstance(got[3].error, ezflow.WorkerDied)
    assert [g for i, g in enumerate(got) if i != 3] == [_summary(x) for i, x in enumerate(items) if i != 3]
    # and the same warm pool serves the next call
    assert ezflow.map(_summary, items[:2], workers=2, start_method=start_method, progress=False) == [
        _summary(x) for x in items[:2]
    ]


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


def test_a_big_task_the_worker_cannot_load_fails_alone(monkeypatch: pytest.MonkeyPatch, writes: list) -> None:
    monkeypatch.setenv("EZFLOW_IN_PARENT", str(os.getpid()))
    items = [b"a" * (1 << 20), _LoadFails(), b"c" * (1 << 20)]
    got = ezflow.map(_bytes_len, items, workers=1, errors="return", chunksize=3, start_method="fork", progress=False)
    assert isinstance(got[1], ezflow.Failure) and isinstance(got[1].error, ValueError)
    assert got[0] == (1 << 20, ord("a")) and got[2] == (1 << 20, ord("c"))


def test_a_cancelled_run_with_big_tasks_queued_leaves_nothing(writes: list) -> None:
    items = (_strings(i) for i in range(1000))
    for n, _ in enumerate(ezflow.imap(_slow_summary, items, workers=2, progress=False)):
        if n == 5:
            break
    assert any(name.startswith("ezflow-write-") for name, _ in writes)
    ezflow.shutdown()
    assert _mine() == []  # (the autouse guard checks processes too)
