"""What the Executor base owns, seen through real executors and through a backend written in a test.

    an item that cannot be sent     -> fails alone (process and dask stages), its neighbours run
    a worker dies inside a piece    -> the piece runs again item by item; only the killer fails
    a bug in an executor's thread   -> fails the run (never a hang); Cancelled ends it quietly
"""

from __future__ import annotations

import os
import threading

import pytest

import ezflow
from ezflow._core.errors import Cancelled, StageError
from ezflow._executors import _BACKENDS, Executor
from ezflow._executors.items import build_runtime
from ezflow._executors.port import Chunk, Piece
from ezflow._executors.reporting import run_piece
from ezflow._plan.spec import make_stage


def tag(x):
    return x * 10 if isinstance(x, int) else "ran"


def exit_on_13(x):
    if x == 13:
        os._exit(3)
    return x


def _generator():
    yield 1


@pytest.mark.no_thread("a thread stage runs in this process: it sends nothing")
@pytest.mark.no_async("an async stage runs in this process: it sends nothing")
def test_unsendable_item_fails_alone(mode):
    items = [*range(6), _generator(), *range(7, 12)]
    got = ezflow.map(mode.fn(tag), items, chunksize=4, errors="return", progress=False, **mode)
    assert got[:6] == [x * 10 for x in range(6)]
    assert got[7:] == [x * 10 for x in range(7, 12)]
    failure = got[6]
    assert isinstance(failure, ezflow.Failure) and failure.index == 6
    assert isinstance(failure.error, TypeError) and "cannot be sent" in str(failure.error)


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_dead_workers_piece_is_split_and_only_the_killer_fails(start_method):
    flow = ezflow.Flow(range(30)).map(
        exit_on_13, workers=2, chunksize=10, errors="return", start_method=start_method
    )
    got = flow.collect()
    assert [g for i, g in enumerate(got) if i != 13] == [i for i in range(30) if i != 13]
    f = got[13]
    assert isinstance(f, ezflow.Failure) and isinstance(f.error, ezflow.WorkerDied) and f.index == 13
    assert "code 3" in str(f.error)
    stage = flow.stats.stages[0]
    assert stage.errors == 1 and stage.items_out == 29


# -- a backend written against the base, as a new one would be ----------------


class OneThread(Executor):
    """Every piece runs on one thread of this process: the whole backend."""

    calls: list[str] = []

    def setup(self) -> None:
        spec = self.spec
        if spec.fn is broken:
            raise self._setup_error(ValueError("no model here"))
        self.rt = build_runtime(
            spec.kind, spec.fn, spec.is_class, spec.when, spec.retries, spec.retry_on, spec.backoff, pack=False
        )
        self._spawn(self._work, "one")

    def _work(self) -> None:
        while (piece := self.port.take()) is not None:
            if piece.items[0] == "bug":
                raise RuntimeError("a bug in the backend")
            self.port.done(piece, *run_piece(self.rt, piece.items, piece.chunk.special))


def broken(x):
    return x


@pytest.fixture
def one_thread(monkeypatch):
    monkeypatch.setitem(_BACKENDS, "thread", lambda: OneThread)


def test_a_backend_is_one_class_against_the_base(one_thread):
    assert ezflow.map(tag, range(100), mode="thread", progress=False) == [x * 10 for x in range(100)]
    flow = ezflow.Flow(range(20)).map(tag, mode="thread").filter(lambda v: v % 20 == 0, mode="thread")
    assert flow.collect() == list(range(0, 200, 20))


def test_the_base_fails_the_run_on_a_bug_in_a_backend_thread(one_thread):
    with pytest.raises(RuntimeError, match="a bug in the backend"):
        ezflow.map(tag, [1, "bug", 3], mode="thread", progress=False)


def test_the_base_names_the_stage_that_cannot_start(one_thread):
    message = r"stage 'broken' could not start: <function broken .*> raised ValueError: no model here"
    with pytest.raises(StageError, match=message):
        ezflow.map(broken, [1], mode="thread", progress=False)


# -- the base's rules on a port that records what it is told ---------------------


class RecordingPort:
    def __init__(self) -> None:
        self.done_: list[tuple[Piece, list, list]] = []
        self.given: list[Piece] = []
        self.failed: list[tuple[BaseException, bool]] = []

    def take(self, room=None):
        raise Cancelled

    def done(self, piece, values, errs, busy, retries=0):
        self.done_.append((piece, values, list(errs)))

    def give_back(self, pieces):
        self.given.extend(pieces)

    def fail(self, exc, *, late=False, blame=False):
        self.failed.append((exc, late))

    def set_capacity(self, workers, pieces):
        pass

    def wake(self):
        pass


def _executor(port: RecordingPort) -> Executor:
    spec = make_stage("map", tag, mode="thread")
    return Executor(spec, port)


def test_worker_death_splits_a_piece_and_fails_a_lone_item():
    port = RecordingPort()
    ex = _executor(port)
    chunk = Chunk(0, range(5), list(range(5)))
    running, queued = Piece(chunk, 0, [0, 1, 2]), Piece(chunk, 3, [3, 4])
    ex._worker_died([running, queued], ezflow.WorkerDied(-9, "s"))
    assert port.done_ == []
    assert [(p.start, p.items, p.isolated) for p in port.given] == [
        (0, [0], True), (1, [1], True), (2, [2], True), (3, [3, 4], False)
    ]
    err = ezflow.WorkerDied(-9, "s")
    ex._worker_died([port.given[1]], err)
    (piece, values, errs), = port.done_
    assert piece.start == 1 and values == [None] and [e[:4] for e in errs] == [(0, err, "", 1)]


def test_the_guard_ends_quietly_on_cancel_and_fails_the_run_on_a_bug():
    port = RecordingPort()
    ex = _executor(port)
    ended = threading.Event()

    def cancelled() -> None:
        port.take()

    def bug() -> None:
        raise KeyError("oops")

    ex._spawn(cancelled, "a", after=ended.set)
    ex.join(5)
    assert ended.is_set() and port.failed == [] and not ex.broken
    ex._spawn(bug, "b")
    ex.join(5)
    assert [type(e) for e, _ in port.failed] == [KeyError] and ex.broken


def test_close_failure_is_late_and_names_close():
    port = RecordingPort()
    _executor(port)._close_failed(OSError("flush failed"), "Traceback ...")
    (err, late), = port.failed
    assert late and isinstance(err, StageError) and "close() raised OSError: flush failed" in str(err)
    assert isinstance(err.__cause__, OSError)


def test_the_behavioural_suite_runs_on_every_backend():
    # A new backend in _executors._BACKENDS must join the `mode` fixture: the suite is its contract.
    from conftest import MODES, Mode

    from ezflow._executors import _BACKENDS

    covered = {Mode(p.values[0]).kind for p in MODES}
    assert covered == set(_BACKENDS), f"the mode fixture covers {sorted(covered)}, the backends are {sorted(_BACKENDS)}"


def test_the_setup_payload_is_a_named_record():
    from ezflow._executors.wire import StageSetup
    from ezflow._executors.worker import setup_payload
    from ezflow._transport.serialize import loads

    spec = ezflow.Flow([1]).map(abs, retries=2, mode="process")._stages[0]
    setup = loads(setup_payload(spec))
    assert type(setup) is StageSetup
    assert (setup.kind, setup.fn, setup.is_class, setup.retries, setup.limiter) == ("map", abs, False, 2, None)
    lam = ezflow.Flow([1]).map(lambda x: x + 1, mode="process")._stages[0]  # by value (dill), same record
    assert type(loads(setup_payload(lam))) is StageSetup
