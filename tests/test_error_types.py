"""A failed item raises an exception of the original type that is also an `ezflow.TaskError`.

`except ValueError`, `except MyError` and `except ezflow.TaskError` all catch it, in every
mode and through every public entry point; the original stays ``__cause__``; the combined
exception pickles (rebuilt from the original exception object, never from text).
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap
import traceback

import pytest

import ezflow
from ezflow._core.errors import Failure, task_error


class RecordError(Exception):
    """A user exception whose __init__ takes required arguments."""

    def __init__(self, record_id: int, field: str) -> None:
        super().__init__(record_id, field)
        self.record_id = record_id
        self.field = field


class SlottedError(Exception):
    __slots__ = ("code",)

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class FinalError(Exception):
    """Refuses subclasses, as a `@final` class enforced at run time would."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        raise TypeError("FinalError cannot be subclassed")


class NeedsNew(Exception):
    """A __new__ with required arguments: the combined class must not call it."""

    def __new__(cls, a: int, b: int) -> NeedsNew:
        return super().__new__(cls, a, b)

    def __init__(self, a: int, b: int) -> None:
        super().__init__(a, b)
        self.a = a


def fail_on_3(x: int) -> int:
    if x == 3:
        raise ValueError(f"bad value {x}")
    return x


def record_fails(x: int) -> int:
    if x == 2:
        raise RecordError(x, "price")
    return x


def missing_key(x: int) -> int:
    return {}[f"key-{x}"]  # KeyError


def _error(exc: BaseException, item: object = 42, index: int = 3) -> ezflow.TaskError:
    return task_error(Failure(item, index, "parse", exc, "worker traceback text"))


# -- the combined class, without processes ------------------------------------------------


@pytest.mark.parametrize(
    "original",
    [
        ValueError("bad"),
        KeyError("k"),
        FileNotFoundError(errno.ENOENT, "No such file", "/data/x"),
        RecordError(7, "price"),
        SlottedError(5),
        NeedsNew(1, 2),
        StopIteration(4),
        *([ExceptionGroup("several", [ValueError(1)])] if sys.version_info >= (3, 11) else []),  # noqa: F821
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
        ezflow.WorkerDied(-9, "parse"),
        ezflow.ItemTimeout("slow"),
        ezflow.MemoryLimitExceeded("parse", 3, "42", 10, 5),
    ],
    ids=lambda e: type(e).__name__,
)
def test_the_error_is_both_the_original_type_and_a_task_error(original):
    err = _error(original)
    assert isinstance(err, ezflow.TaskError) and isinstance(err, type(original))
    assert type(err).__name__ == f"TaskError({type(original).__name__})"
    assert err.__cause__ is original
    assert (err.stage, err.index, err.item, err.traceback) == ("parse", 3, 42, "worker traceback text")
    assert err.args == original.args  # code reading e.args[0] (a KeyError's key) keeps working
    assert str(err).startswith("stage 'parse' failed on item 3 (42): " + type(original).__name__)
    assert repr(err) == f"{type(err).__name__}({str(err)!r})"
    # the same class for the same original class: built once, cached
    assert type(_error(original)) is type(err)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err) and str(back) == str(err) and back.index == 3
    assert type(back.__cause__) is type(original)


def test_the_originals_own_attributes_are_kept():
    err = _error(FileNotFoundError(errno.ENOENT, "No such file", "/data/x"))
    assert (err.errno, err.strerror, err.filename) == (errno.ENOENT, "No such file", "/data/x")
    err = _error(RecordError(7, "price"))
    assert (err.record_id, err.field) == (7, "price")
    assert _error(SlottedError(5)).code == 5
    assert _error(StopIteration(4)).value == 4
    assert _error(NeedsNew(1, 2)).a == 1
    if sys.version_info >= (3, 11):
        group = ExceptionGroup("several", [ValueError(1)])  # noqa: F821 - Python 3.11+
        assert _error(group).exceptions[0].args == (1,)


def test_a_key_error_message_is_not_quoted_twice():
    err = _error(KeyError("price"))
    assert str(err) == "stage 'parse' failed on item 3 (42): KeyError: 'price'"
    assert err.args == ("price",)


@pytest.mark.parametrize("original", [FinalError("no"), KeyboardInterrupt()], ids=["final-class", "not-an-Exception"])
def test_a_class_that_cannot_be_combined_falls_back_to_plain_task_error(original):
    err = _error(original)
    assert type(err) is ezflow.TaskError
    assert err.__cause__ is original
    assert "failed on item 3 (42)" in str(err)
    assert type(pickle.loads(pickle.dumps(err))) is ezflow.TaskError


def test_a_nested_runs_error_keeps_both_types():
    inner = _error(ValueError("deep"), item=1, index=0)
    outer = task_error(Failure(2, 5, "outer", inner, ""))
    assert isinstance(outer, ValueError) and isinstance(outer, ezflow.TaskError)
    assert outer.stage == "outer" and outer.__cause__ is inner


def _check_in_child(data: bytes, q: multiprocessing.Queue) -> None:
    err = pickle.loads(data)
    q.put((type(err).__name__, isinstance(err, ValueError), isinstance(err, ezflow.TaskError), err.index, str(err)))


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_the_combined_error_crosses_processes(start_method):
    err = _error(ValueError("bad"))
    ctx = multiprocessing.get_context(start_method)
    q = ctx.Queue()
    p = ctx.Process(target=_check_in_child, args=(pickle.dumps(err), q))
    p.start()
    try:
        got = q.get(timeout=60)
    finally:
        p.join(60)
        q.close()
        q.join_thread()
    assert got == ("TaskError(ValueError)", True, True, 3, str(err))


# -- every mode, every entry point ----------------------------------------------------------


def _entries(mode):
    fn = mode.fn(fail_on_3)
    return {
        "map": lambda: ezflow.map(fn, range(6), progress=False, workers=2, **mode),
        "imap": lambda: list(ezflow.imap(fn, range(6), progress=False, workers=2, **mode)),
        "collect": lambda: ezflow.Flow(range(6)).map(fn, workers=2, **mode).collect(progress=False),
        "iteration": lambda: [x for x in ezflow.Flow(range(6)).map(fn, workers=2, **mode)],
        "wait": lambda: ezflow.Flow(range(6)).map(fn, workers=2, **mode).start(progress=False).wait(timeout=120),
    }


@pytest.mark.parametrize("entry", ["map", "imap", "collect", "iteration", "wait"])
def test_except_the_original_type_catches_it_everywhere(mode, entry):
    call = _entries(mode)[entry]
    with pytest.raises(ValueError, match=r"stage 'fail_on_3' failed on item 3 \(3\): ValueError: bad value 3") as info:
        call()
    err = info.value
    assert isinstance(err, ezflow.TaskError)
    assert (err.stage, err.index, err.item) == ("fail_on_3", 3, 3)
    assert type(err.__cause__) is ValueError and str(err.__cause__) == "bad value 3"
    assert "fail_on_3" in err.traceback  # the worker's traceback text
    text = "".join(traceback.format_exception(err))
    assert "noqa" not in text  # no lint comment of ours shows in a user's traceback
    assert "bad value 3" in text


def test_a_user_exception_class_is_caught_by_its_own_name(mode):
    with pytest.raises(RecordError) as info:
        ezflow.map(mode.fn(record_fails), range(5), progress=False, workers=2, **mode)
    assert isinstance(info.value, ezflow.TaskError)
    assert (info.value.record_id, info.value.field, info.value.index) == (2, "price", 2)


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_key_error_through_a_process_stage(start_method):
    try:
        ezflow.map(missing_key, [1], progress=False, start_method=start_method)
    except KeyError as err:
        assert err.args == ("key-1",)
        assert isinstance(err, ezflow.TaskError)
        assert "KeyError: 'key-1'" in str(err)
    else:
        raise AssertionError("no KeyError")


def nested_thread_map(x: int) -> list[int]:
    return ezflow.map(fail_on_3, [x], mode="thread", progress=False)


def test_a_combined_error_raised_inside_a_worker_travels_back():
    # the inner map's error (a combined class) is pickled in the worker and rebuilt in the parent
    with pytest.raises(ValueError) as info:
        ezflow.map(nested_thread_map, [3], progress=False, start_method="spawn")
    outer = info.value
    assert isinstance(outer, ezflow.TaskError) and outer.stage == "nested_thread_map"
    inner = outer.__cause__
    assert isinstance(inner, ezflow.TaskError) and isinstance(inner, ValueError) and inner.stage == "fail_on_3"


def test_the_handles_submit_future_raises_the_original_type():
    handle = ezflow.Flow().map(fail_on_3, mode="thread", errors="return").start(progress=False)
    try:
        with pytest.raises(ValueError) as info:
            handle.submit(3).result(timeout=60)
        assert isinstance(info.value, ezflow.TaskError)
    finally:
        handle.close()
        handle.wait(timeout=60)


# -- how pytest and IPython show it ---------------------------------------------------------

USER_TEST = textwrap.dedent(
    """
    import ezflow

    def parse(x):
        raise ValueError(f"bad {x}")

    def test_parse():
        ezflow.map(parse, [7], mode="thread", progress=False)
    """
)


def test_pytest_shows_the_stage_item_and_original(tmp_path):
    path = tmp_path / "test_user.py"
    path.write_text(USER_TEST)
    env = {k: v for k, v in os.environ.items() if k != "EZFLOW_FULL_TRACEBACK"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(path)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )
    out = proc.stdout
    assert "E       ezflow.TaskError(ValueError): stage 'parse' failed on item 0 (7): ValueError: bad 7" in out, out
    assert 'raise ValueError(f"bad {x}")' in out  # the worker's line, from the remote traceback
    assert "noqa" not in out and "_engine" not in out


def test_ipython_shows_the_stage_item_and_original(tmp_path):
    pytest.importorskip("IPython")
    code = "import ezflow\ndef parse(x):\n    raise ValueError(f'bad {x}')\nezflow.map(parse, [7], mode='thread', progress=False)\n"
    path = tmp_path / "cell.ipy"
    path.write_text(code)
    env = {k: v for k, v in os.environ.items() if k != "EZFLOW_FULL_TRACEBACK"}
    proc = subprocess.run(
        [sys.executable, "-m", "IPython", "--colors=NoColor", "--no-banner", str(path)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert "TaskError(ValueError): stage 'parse' failed on item 0 (7): ValueError: bad 7" in out, out
    assert "noqa" not in out
