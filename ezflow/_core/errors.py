"""What a failed item becomes: `TaskError` (raised), `Failure` (returned).

A worker exception keeps its type: the worker pickles the exception object
itself and its formatted traceback text; the parent attaches that text as
the exception's ``__cause__`` (a `RemoteTraceback`, as
``concurrent.futures`` does) and raises `TaskError` from the original.
Only an exception that cannot be pickled at all is replaced, by a
`RemoteError` that keeps its type name and message.
"""

from __future__ import annotations

import builtins
import pickle
import reprlib
import signal
import threading
import types
from typing import Any

__all__ = [
    "Cancelled",
    "Failure",
    "ItemTimeout",
    "MemoryLimitExceeded",
    "RemoteError",
    "RemoteTraceback",
    "StageError",
    "TaskError",
    "WorkerDied",
    "task_error",
]

class _ShortRepr(reprlib.Repr):
    """reprlib's short repr, which for bytes would first build the whole repr (a 20 MB item: 0.1 s)."""

    def repr_bytes(self, x: Any, level: int) -> str:
        return self._cut(x)

    def repr_bytearray(self, x: Any, level: int) -> str:
        return f"bytearray({self._cut(bytes(x[: self.maxstring]), len(x))})"

    def repr_memoryview(self, x: Any, level: int) -> str:
        return f"<memoryview of {x.nbytes:,} bytes>"

    def _cut(self, x: bytes, n: int | None = None) -> str:
        n = len(x) if n is None else n
        if n <= self.maxstring:
            return builtins.repr(x)
        head = builtins.repr(x[: self.maxstring // 2])
        return f"{head}...<{n:,} bytes>"


_short = _ShortRepr()
_short.maxstring = 60
_short.maxother = 60
_short.maxlist = 6
_short.maxtuple = 6
_short.maxdict = 4


def short_repr(obj: Any) -> str:
    """Return a repr of an item short enough for an error message."""
    try:
        return _short.repr(obj)
    except Exception:  # a broken __repr__ must not hide the real error
        return f"<{type(obj).__name__} object>"


def describe(exc: BaseException) -> str:
    """Return ``"TypeName: message"``, even for an exception whose ``__str__`` raises."""
    try:
        msg = str(exc)
    except BaseException as e:  # an item's odd exception must not hide the report of it
        msg = f"<str() of the exception raised {type(e).__name__}>"
    return f"{type(exc).__name__}: {msg}"


def _safe_repr(exc: BaseException) -> str:
    try:
        return repr(exc)
    except BaseException:
        return f"<{describe(exc)}>"


class Cancelled(Exception):
    """The run was stopped before it ended: the panel's Stop button, `handle.cancel()`, `ezflow.shutdown()`.

    A blocked `collect()` / `map()` raises it, and so does a loop over
    `imap()` or `Flow.iter()`; ``results`` holds the results delivered
    before the stop (in order, as far as they got; empty for a loop, whose
    body already had them). Inside the engine, the same class wakes threads
    blocked on a channel of a stopped run.
    """

    def __init__(self, message: str = "the run was cancelled", results: list[Any] | None = None) -> None:
        super().__init__(message)
        self.results: list[Any] = [] if results is None else results


class StageError(RuntimeError):
    """A stage could not start: its function or class failed to load or build."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(f"stage {stage!r} could not start: {message}")
        self.stage = stage


class RemoteTraceback(Exception):
    """The traceback text of an exception raised in a worker."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb.rstrip()}\n"""'


class RemoteError(Exception):
    """Stands for a worker exception that could not be pickled."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message

    def __reduce__(self) -> tuple:
        return (RemoteError, (self.type_name, self.message))


class WorkerDied(RuntimeError):
    """A worker process ended while it held an item."""

    def __init__(self, exitcode: int | None, stage: str = "") -> None:
        self.exitcode = exitcode
        self.stage = stage
        super().__init__(describe_exit(exitcode, stage))

    def __reduce__(self) -> tuple:
        return (WorkerDied, (self.exitcode, self.stage))


class ItemTimeout(TimeoutError):
    """An item ran longer than its stage's ``item_timeout``."""


class MemoryLimitExceeded(MemoryError):
    """An item pushed its worker process past the stage's ``max_memory``; the worker was stopped.

    Attributes:
        stage: the stage's name.
        index: the item's position in the source.
        item: a short repr of the item.
        peak_rss: the worker's resident memory (bytes) when it was stopped.
        limit: the stage's ``max_memory`` in bytes.
    """

    def __init__(self, stage: str, index: int, item: str, peak_rss: int, limit: int) -> None:
        self.stage = stage
        self.index = index
        self.item = item
        self.peak_rss = peak_rss
        self.limit = limit
        super().__init__(
            f"item {index} ({item}) of stage {stage!r} took its worker process to {format_bytes(peak_rss)} "
            f"resident memory, over max_memory={format_bytes(limit)}, on a fresh worker; the worker was stopped"
        )

    def __reduce__(self) -> tuple:
        return (MemoryLimitExceeded, (self.stage, self.index, self.item, self.peak_rss, self.limit))


def format_bytes(n: float) -> str:
    """Format a size in bytes compactly, in decimal units: 512 B, 3.1 MB, 2.0 GB."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def describe_exit(exitcode: int | None, stage: str = "") -> str:
    """Say how a worker process ended, with the likely cause."""
    where = f" of stage {stage!r}" if stage else ""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = ""
        if -exitcode == signal.SIGKILL:
            hint = " (the OS may have killed it for lack of memory)"
        elif -exitcode == signal.SIGSEGV:
            hint = " (a crash in native code)"
        return f"worker process{where} died from {name}{hint}"
    return f"worker process{where} exited unexpectedly with code {exitcode}"


class Failure:
    """An item that failed, standing in the results in place of its value.

    Attributes:
        item: the input the failing stage received.
        index: the item's position in the source.
        stage: the failing stage's name.
        error: the exception, with its original type.
        traceback: the worker's traceback text.
        attempts: how many times the item was tried.
    """

    __slots__ = ("attempts", "error", "index", "item", "stage", "traceback")

    def __init__(
        self,
        item: Any,
        index: int,
        stage: str,
        error: BaseException,
        traceback: str = "",
        attempts: int = 1,
    ) -> None:
        self.item = item
        self.index = index
        self.stage = stage
        self.error = error
        self.traceback = traceback
        self.attempts = attempts

    def __repr__(self) -> str:
        return (
            f"Failure(stage={self.stage!r}, index={self.index}, "
            f"item={short_repr(self.item)}, error={_safe_repr(self.error)})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Failure):
            return NotImplemented
        mine = (self.index, self.stage, type(self.error), describe(self.error))
        return mine == (other.index, other.stage, type(other.error), describe(other.error))

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple:
        return (Failure, (self.item, self.index, self.stage, self.error, self.traceback, self.attempts))

    def to_error(self) -> TaskError:
        """Return the `TaskError` (of the original exception's type) that ``errors="raise"`` raises."""
        return task_error(self)


class TaskError(Exception):
    """An item failed in a stage run with ``errors="raise"``.

    What ezflow raises is also an instance of the original exception's class
    (``except ValueError`` catches a worker's ValueError): `task_error` builds
    a class deriving from both, once per original class. The original
    exception is ``__cause__``; its own ``__cause__`` holds the worker's
    traceback text.

    Attributes:
        stage, index, item, traceback, attempts: as on `Failure`.
        failure: the `Failure` record itself.
    """

    def __init__(self, failure: Failure) -> None:
        self._fill(failure)
        self.args = (self._message,)

    def _fill(self, failure: Failure) -> None:
        self.failure = failure
        self.stage = failure.stage
        self.index = failure.index
        self.item = failure.item
        self.traceback = failure.traceback
        self.attempts = failure.attempts
        err = failure.error
        tries = f" after {failure.attempts} attempts" if failure.attempts > 1 else ""
        self._message = (
            f"stage {failure.stage!r} failed on item {failure.index} "
            f"({short_repr(failure.item)}){tries}: {describe(err)}"
        )
        self.__cause__ = err

    def __str__(self) -> str:
        # explicit: a combined class would otherwise take the original's __str__ (KeyError quotes it)
        return self._message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._message!r})"

    def __reduce__(self) -> tuple:
        # the combined class is made again on the other side from the original exception; the
        # message travels too: some picklers lose an original's text (tblib, which dask installs,
        # brings a UnicodeDecodeError back with an empty str())
        return (_task_error_again, (self.failure, self._message))


# original exception class -> the class deriving from TaskError and it (None: cannot be combined)
_COMBINED: dict[type, type | None] = {}
_COMBINED_LOCK = threading.Lock()
# set on an exception by the machinery, never part of what the original carried
_NOT_COPIED = frozenset({"__notes__", "__traceback__", "__context__", "__cause__", "__suppress_context__"})


def task_error(failure: Failure) -> TaskError:
    """Return the exception ``errors="raise"`` raises for `failure`: a `TaskError` of the original type.

    The instance derives from `TaskError` and from the original exception's
    class, carries the original's attributes (``args``, ``errno``, its own
    fields), and keeps the original as ``__cause__``. Where that class
    cannot be combined (it forbids subclasses, its layout or metaclass
    refuses a second base, it is not an `Exception`), a plain `TaskError`.
    """
    err = failure.error
    cls = _combined(type(err))
    if cls is not None:
        try:
            return cls(failure)
        except Exception:  # an original whose state will not copy: the plain record still says it all
            pass
    return TaskError(failure)


def _task_error_again(failure: Failure, message: str) -> TaskError:
    err = task_error(failure)
    err._message = message
    if type(err) is TaskError:
        err.args = (message,)
    return err


def _combined(cause: type) -> type | None:
    if issubclass(cause, TaskError):
        return cause  # a nested run's error: already both
    with _COMBINED_LOCK:
        if cause in _COMBINED:
            return _COMBINED[cause]
        made = _make_combined(cause) if issubclass(cause, Exception) else None
        _COMBINED[cause] = made
        return made


def _native_new(cls: type) -> Any:
    """The C-level ``__new__`` Python allows for `cls`: its primary base chain's, past Python ``__new__`` methods."""
    base = cls.__base__ or BaseException
    for klass in base.__mro__:  # the chain that decides the instance's layout
        new = vars(klass).get("__new__")
        if new is not None and type(new) is type(BaseException.__new__):
            return new
    return BaseException.__new__


def _make_combined(cause: type) -> type | None:
    name = f"TaskError({cause.__name__})"
    alloc: list[Any] = []

    def __new__(cls: type, failure: Failure) -> Any:
        # the original's own __new__ is skipped, like its __init__: it may need arguments we do not have
        try:
            return alloc[0](cls, *failure.error.args)
        except Exception:
            return alloc[0](cls)

    def __init__(self: Any, failure: Failure) -> None:
        _copy_state(failure.error, self)
        self._fill(failure)

    try:
        cls = type(cause)(name, (TaskError, cause), {"__new__": __new__, "__init__": __init__, "__module__": "ezflow"})
    except Exception:  # final classes, layout or metaclass conflicts: a plain TaskError instead
        return None
    cls.__qualname__ = name
    alloc.append(_native_new(cls))
    return cls


def _copy_state(src: BaseException, dst: BaseException) -> None:
    dst.args = src.args
    for klass in type(src).__mro__:
        if klass in (BaseException, object):
            continue
        for attr, value in vars(klass).items():
            # C fields (OSError.errno, StopIteration.value) and __slots__ entries
            if attr not in _NOT_COPIED and isinstance(value, (types.MemberDescriptorType, types.GetSetDescriptorType)):
                if attr in ("__dict__", "__weakref__"):
                    continue
                try:
                    setattr(dst, attr, getattr(src, attr))
                except (AttributeError, TypeError):
                    pass  # an unset slot or a read-only field
    state = getattr(src, "__dict__", None)
    if state:
        dst.__dict__.update({k: v for k, v in state.items() if k not in _NOT_COPIED})


def pack_exception(exc: BaseException) -> tuple[BaseException, str]:
    """Return a picklable exception of the same type, and its traceback text."""
    import traceback

    from .trim import skip_internal

    tb = "".join(traceback.format_exception(type(exc), exc, skip_internal(exc.__traceback__)))
    try:
        pickle.loads(pickle.dumps(exc, protocol=5))
        exc.__traceback__ = None  # frames do not pickle; the text keeps them
        exc.__context__ = None
        exc.__cause__ = None
        return exc, tb
    except Exception:
        pass
    try:
        import dill

        dill.loads(dill.dumps(exc))
        exc.__traceback__ = None
        return exc, tb
    except Exception:
        return RemoteError(type(exc).__qualname__, describe(exc).partition(": ")[2]), tb


def attach_traceback(exc: BaseException, tb: str) -> BaseException:
    """Chain the worker's traceback text to ``exc`` so tracebacks show it."""
    if tb and exc.__cause__ is None:
        exc.__cause__ = RemoteTraceback(tb)
    return exc
