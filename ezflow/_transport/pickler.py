"""ezflow's pickler: shared arrays travel as references, big ones are shared on the way.

    a task (parent)   --_sending(threshold)--> big input arrays written to segments, referenced
    a result (worker) --result_scope(opts)---> big result arrays written to lent spares or new segments

Only this pickler (used by `serialize.dumps` inside a sharing scope) writes
references. Everything else that pickles a shared array (``pickle.dumps``,
multiprocessing, Dask) sees an ordinary numpy array and carries its data,
so a reference can never reach a process that cannot open it.
"""

from __future__ import annotations

import contextlib
import contextvars
import copyreg
import io
import os
import pickle
import sys
import threading
from collections.abc import Iterator
from typing import Any

from .._core.forks import at_fork
from . import kept as _kept
from .byvalue import dill_pickler
from .mapping import _attach, _unshared
from .registry import _create, _release
from .segments import (
    _MV,
    _RO,
    _SHARED,
    S,
    _contiguous_bytes,
    _Mapping,
    _np,
    _posixshmem,
    _root,
    _size_class,
    _Unavailable,
    _unlink,
    _warn_once,
)
from .share import _alloc_here

_by_value: contextvars.ContextVar[bool] = contextvars.ContextVar("ezflow_shm_by_value", default=False)
_local = threading.local()  # per thread: the pickling scope in force (`_sending`, `result_scope`)


def _after_fork_in_child() -> None:
    global _local
    _local = threading.local()  # a scope of the parent's is not this process's


at_fork(after_in_child=_after_fork_in_child)


class _Attempt:
    """The segments one pickling attempt made or used, to keep or to undo."""

    __slots__ = ("made", "nbytes", "prov", "spares")

    def __init__(self) -> None:
        self.made: list[str] = []  # new segments written for auto-shared arrays
        self.spares: list[tuple[int, str]] = []  # lent spares written (worker)
        self.prov: list[str] = []  # this process's provisional segments referenced (worker)
        self.nbytes = 0  # array bytes sent through shared memory


class _Ctx:
    """Where automatic sharing happens: a worker sending a result, or the owner sending a task."""

    def __init__(self, threshold: int | None, spares: Any = (), owner: bool = False) -> None:
        self.threshold = threshold
        self.spares = sorted((size, name) for name, size in spares)
        self.owner = owner
        self.kept: _Attempt | None = None  # the last attempt that succeeded

    def spare(self, nbytes: int) -> tuple[str, int] | None:
        need = _size_class(nbytes)
        for i, (size, name) in enumerate(self.spares):
            if need <= size <= 2 * need:
                del self.spares[i]
                return name, size
        return None

    def undo(self, attempt: _Attempt) -> None:
        if self.owner:
            _release(attempt.made)
        else:
            for name in attempt.made:
                _unlink(name)
            self.spares = sorted(self.spares + attempt.spares)
            for name in S.prov.dropped(attempt.prov):
                _unlink(name)

    def keep(self, attempt: _Attempt) -> None:
        if self.kept is not None and not self.owner:
            self.undo(self.kept)  # only the last message pickled is sent
        self.kept = attempt

    def commit(self) -> None:
        """The message was sent: what it carries now belongs to its receiver."""
        kept, self.kept = self.kept, None
        if kept is None or self.owner:
            return
        for name in S.prov.sent(kept.prov):
            _unlink(name)

    def discard(self) -> None:
        kept, self.kept = self.kept, None
        if kept is not None:
            self.undo(kept)


class _Reducer:
    """reducer_override for ezflow's picklers: shared arrays become references."""

    ctx: _Ctx | None
    attempt: _Attempt

    def _setup(self, ctx: _Ctx | None) -> None:
        np = sys.modules.get("numpy")  # not imported: there is no array to share (and no need to import it)
        self._nd = np.ndarray if np is not None else None
        self.ctx = ctx
        self.threshold = ctx.threshold if ctx is not None else None
        self.attempt = _Attempt()
        self._skip: set[int] = set()

    def reducer_override(self, obj: Any) -> Any:
        t = type(obj)
        if t is self._nd:
            if id(obj) in self._skip:
                return NotImplemented
            m = _root(obj)
            if m is not None and self._may_reference(m):
                return self._ref(obj, m, obj.dtype, obj.shape, obj.strides, 0)
            if self.threshold is not None and obj.nbytes >= self.threshold and obj.nbytes and not obj.dtype.hasobject:
                return self._auto(obj)
            return NotImplemented
        if t is memoryview:
            m = _root(obj)
            if m is not None and self._may_reference(m) and obj.contiguous:
                flat = _np().frombuffer(obj.cast("B") if obj.format != "B" or obj.ndim != 1 else obj, _np().uint8)
                flags = _MV | (_RO if obj.readonly else 0)
                return self._ref(flat, m, flat.dtype, flat.shape, flat.strides, flags)
        return NotImplemented

    def _may_reference(self, m: _Mapping) -> bool:
        if m.private:
            return False  # our copy-on-write view may differ from the segment
        if m.role == "own" and m.name not in S.owned:
            return False  # its name was taken out of /dev/shm (shutdown()): nobody can open it
        ctx = self.ctx
        if ctx is not None and not ctx.owner and m.role == "foreign" and m.epoch != S.epoch:
            # a view kept from an earlier item: its owner may have let it go; send the data
            return False
        return True

    def _ref(self, obj: Any, m: _Mapping, dtype: Any, shape: tuple, strides: tuple, flags: int) -> tuple:
        offset = obj.__array_interface__["data"][0] - m.addr
        if not m.auto:
            flags |= _SHARED
            if not obj.flags.writeable:
                flags |= _RO
        if m.role == "prov" and self.ctx is not None and not self.ctx.owner:
            if S.prov.sending(m.name):
                self.attempt.prov.append(m.name)
        self.attempt.nbytes += obj.nbytes
        return (_attach, (m.name, offset, dtype, shape, strides, flags))

    def _auto(self, obj: Any) -> Any:
        ctx = self.ctx
        assert ctx is not None
        if not (obj.flags.c_contiguous or obj.flags.f_contiguous):
            obj = _np().ascontiguousarray(obj)
        data, strides = _contiguous_bytes(obj)
        spare = None if ctx.owner else ctx.spare(obj.nbytes)
        try:
            if spare is not None:
                name, size = spare
                self.attempt.spares.append((size, name))
                fd = _posixshmem.shm_open("/" + name, os.O_RDWR, 0o600)
            elif ctx.owner:
                name, size, fd, _ = _alloc_here(obj.nbytes)
                self.attempt.made.append(name)
            else:
                name, size, fd = _create(obj.nbytes)
                self.attempt.made.append(name)
            try:
                _kept.give_back(name, *_kept.write(fd, name, data))  # kept for the segment's next use
            finally:
                os.close(fd)
        except (_Unavailable, OSError) as exc:
            self._skip.add(id(obj))
            if ctx.owner:
                _warn_once(str(exc))
                return (_identity, (obj,))
            return (_unshared, (str(exc), obj))
        self.attempt.nbytes += obj.nbytes
        return (_attach, (name, 0, obj.dtype, obj.shape, strides, 0))


def _identity(obj: Any) -> Any:
    return obj


class _Pickler(_Reducer, pickle.Pickler):
    pass


def engaged() -> bool:
    """True inside ezflow's process transport: pickle with references to shared memory.

    Only there is the receiver known to be a process on this machine that
    ezflow runs (a worker, or the parent); everywhere else a shared array is
    pickled with its data.
    """
    return getattr(_local, "ctx", None) is not None and not _by_value.get()


@contextlib.contextmanager
def _sending(threshold: int | None) -> Iterator[_Ctx]:
    ctx = _Ctx(threshold, owner=True)
    prev = getattr(_local, "ctx", None)
    _local.ctx = ctx
    try:
        yield ctx
    finally:
        _local.ctx = prev


def _run_attempt(obj: Any, dill: bool = False) -> bytes:
    ctx = getattr(_local, "ctx", None)
    buf = io.BytesIO()
    if dill:
        reducer = _Reducer()
        reducer._setup(ctx)
        p = dill_pickler(buf, reducer.reducer_override)
    else:
        p = reducer = _Pickler(buf, 5)
        reducer._setup(ctx)
    try:
        p.dump(obj)
    except BaseException:
        if ctx is not None:
            ctx.undo(reducer.attempt)
        raise
    if ctx is not None:
        ctx.keep(reducer.attempt)
    return buf.getvalue()


def last_attempt() -> Any:
    """What the latest pickling in this scope made (for `drop_attempt`)."""
    ctx = getattr(_local, "ctx", None)
    return ctx.kept if ctx is not None else None


def drop_attempt(attempt: Any) -> None:
    """A pickling was superseded by another of the same object: let go of what it made."""
    ctx = getattr(_local, "ctx", None)
    if ctx is not None and attempt is not None and attempt is not ctx.kept:
        ctx.undo(attempt)


def pickle_dumps(obj: Any) -> bytes:
    """Pickle (protocol 5) with shared arrays as references; automatic sharing if in a scope."""
    return _run_attempt(obj)


def dill_dumps(obj: Any) -> bytes:
    """dill by value (recurse=True), with shared arrays as references."""
    return _run_attempt(obj, dill=True)


@contextlib.contextmanager
def by_value() -> Iterator[None]:
    """Within this block ezflow pickles shared arrays with their data (for a remote receiver)."""
    token = _by_value.set(True)
    try:
        yield
    finally:
        _by_value.reset(token)


def _reduce_memoryview(view: memoryview) -> Any:
    # Only for a memoryview of shared memory (share(bytes)) pickled outside ezflow: carry the data.
    if _root(view) is None:
        raise TypeError("cannot pickle 'memoryview' object")
    return (_memoryview_of, (view.tobytes(), view.readonly))


def _memoryview_of(data: bytes, readonly: bool) -> memoryview:
    return memoryview(data) if readonly else memoryview(bytearray(data))


@contextlib.contextmanager
def result_scope(opts: tuple | None) -> Iterator[None]:
    """Around pickling and sending one result message in a worker.

    ``opts`` is what the parent put in the task: (threshold or None, spares).
    Arrays of at least ``threshold`` bytes are written into a lent spare or
    a new segment; once the message is sent, the parent owns them.
    """
    threshold, spares = opts if opts else (None, ())
    ctx = _Ctx(threshold, spares)
    _local.ctx = ctx
    try:
        yield
    except BaseException:
        ctx.discard()
        raise
    else:
        ctx.commit()
    finally:
        _local.ctx = None
        S.next_epoch()



copyreg.pickle(memoryview, _reduce_memoryview)
