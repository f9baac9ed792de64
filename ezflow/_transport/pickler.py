"""ezflow's pickler: shared buffers travel as references, big ones are shared on the way.

    a task (parent)   --_sending(threshold)--> big input arrays written to segments, referenced
    a result (worker) --result_scope(opts)---> big result arrays written to lent spares or new segments
    any other pickle-5 buffer (pandas' Arrow columns, pyarrow Tables, ...)
                      --buffer_callback-------> the same, out of band: `Pickled.buffers` lists
                                                the references, in the order loads wants them

numpy arrays are caught whole (``reducer_override``: dtype, shape and strides
travel with the reference); every other object that hands pickle a
``PickleBuffer`` (protocol 5, PEP 574) has each big buffer written once
into a segment, or referenced where it already lies in one, and mapped on
the other side as a memoryview (read-only where the source was).

Only this pickler (used by `serialize.dumps` inside a sharing scope) writes
references. Everything else that pickles a shared array (``pickle.dumps``,
multiprocessing, Dask) sees an ordinary numpy array and carries its data,
so a reference can never reach a process that cannot open it.
"""

import contextlib
import contextvars
import copyreg
import os
import pickle
import sys
import threading
from collections.abc import Iterator
from typing import Any, NamedTuple

from .._core.forks import at_fork
from . import kept as _kept
from .byvalue import dill_pickler
from .frames import Gather, MainScan
from .mapping import _attach, _containing, _unshared
from .registry import _create, _release, owns
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
        self.buffers: list[tuple[str, int, int, int]] = []  # out-of-band references, in pickling order
        self.unshared: str | None = None  # why a big buffer went in band (the parent warns)

    def buffer_callback(self, pb: pickle.PickleBuffer) -> bool:
        """Decide where one pickle-5 buffer goes: False sends it out of band, as a reference.

        It goes out of band when it lies in a segment already (a Table a
        worker returned, passed on to the next stage: no copy at all), or
        is at least the threshold and can be written into one.
        """
        if self._nd is None:
            return True
        try:
            raw = pb.raw()  # 1-D bytes; BufferError if not contiguous
        except BufferError:
            return True
        n = raw.nbytes
        if not n:
            return True
        readonly = _RO if raw.readonly else 0
        flat = _np().frombuffer(raw, _np().uint8)
        found = _containing(flat.__array_interface__["data"][0], n)
        if found is not None and self._may_reference(found[0]):
            m, offset = found
            self._note_prov(m)
            self.attempt.nbytes += n
            self.buffers.append((m.name, offset, n, _MV | readonly | (0 if m.auto else _SHARED)))
            return False
        if self.threshold is None or n < self.threshold:
            return True
        try:
            name = self._write_segment(flat, n)
        except (_Unavailable, OSError) as exc:
            if self.ctx is not None and self.ctx.owner:
                _warn_once(str(exc))
            else:
                self.unshared = str(exc)
            return True
        self.attempt.nbytes += n
        self.buffers.append((name, 0, n, _MV | readonly))
        return False

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
        if m.role == "own" and not owns(m.name):
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
        self._note_prov(m)
        self.attempt.nbytes += obj.nbytes
        return (_attach, (m.name, offset, dtype, shape, strides, flags))

    def _note_prov(self, m: _Mapping) -> None:
        if m.role == "prov" and self.ctx is not None and not self.ctx.owner:
            if S.prov.sending(m.name):
                self.attempt.prov.append(m.name)

    def _auto(self, obj: Any) -> Any:
        if not (obj.flags.c_contiguous or obj.flags.f_contiguous):
            obj = _np().ascontiguousarray(obj)
        data, strides = _contiguous_bytes(obj)
        try:
            name = self._write_segment(data, obj.nbytes)
        except (_Unavailable, OSError) as exc:
            self._skip.add(id(obj))
            if self.ctx is not None and self.ctx.owner:
                _warn_once(str(exc))
                return (_identity, (obj,))
            return (_unshared, (str(exc), obj))
        self.attempt.nbytes += obj.nbytes
        return (_attach, (name, 0, obj.dtype, obj.shape, strides, 0))

    def _write_segment(self, data: Any, nbytes: int) -> str:
        """Write uint8 `data` into a lent spare, a pooled or a new segment; return its name."""
        ctx = self.ctx
        assert ctx is not None
        spare = None if ctx.owner else ctx.spare(nbytes)
        if spare is not None:
            name, size = spare
            self.attempt.spares.append((size, name))
            fd = _posixshmem.shm_open("/" + name, os.O_RDWR, 0o600)
        elif ctx.owner:
            name, size, fd, _ = _alloc_here(nbytes)
            self.attempt.made.append(name)
        else:
            name, size, fd = _create(nbytes)
            self.attempt.made.append(name)
        try:
            _kept.give_back(name, *_kept.write(fd, name, data))  # kept for the segment's next use
        finally:
            os.close(fd)
        return name


def _identity(obj: Any) -> Any:
    return obj


class _Pickler(_Reducer, pickle.Pickler):
    def __init__(self, file: Any, ctx: _Ctx | None) -> None:
        self._setup(ctx)
        super().__init__(file, 5, buffer_callback=self.buffer_callback)


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


class Pickled(NamedTuple):
    """A pickle and the out-of-band buffers it refers to (``pickle.loads(data, buffers=...)``)."""

    data: memoryview | Gather  # Gather: the pickler's writes as they came (frames.py)
    buffers: list[tuple[str, int, int, int]]  # (segment, offset, nbytes, flags) each
    unshared: str | None  # why a big buffer went in band after all (the receiver warns once)
    names_main: bool = False  # the pickle may name something of __main__ (frames.py)


def _run_attempt(obj: Any, dill: bool = False, head: bytes = b"", gather: bool = False) -> Pickled:
    ctx = getattr(_local, "ctx", None)
    buf = Gather() if gather else MainScan()
    buf.write(head)
    if dill:
        reducer = _Reducer()
        reducer._setup(ctx)
        p = dill_pickler(buf, reducer.reducer_override, reducer.buffer_callback)
    else:
        p = reducer = _Pickler(buf, ctx)
    try:
        p.dump(obj)
    except BaseException:
        if ctx is not None:
            ctx.undo(reducer.attempt)
        raise
    finally:
        # the memo holds every object pickled (pandas' combined copy of each Arrow column
        # too), and the pickler sits in a cycle with its own buffer_callback: let them go now
        p.clear_memo()
    if ctx is not None:
        ctx.keep(reducer.attempt)
    return Pickled(buf.pickled(), reducer.buffers, reducer.unshared, buf.names_main)


def last_attempt() -> Any:
    """What the latest pickling in this scope made (for `drop_attempt`)."""
    ctx = getattr(_local, "ctx", None)
    return ctx.kept if ctx is not None else None


def drop_attempt(attempt: Any) -> None:
    """A pickling was superseded by another of the same object: let go of what it made."""
    ctx = getattr(_local, "ctx", None)
    if ctx is not None and attempt is not None and attempt is not ctx.kept:
        ctx.undo(attempt)


def pickle_dumps(obj: Any, head: bytes = b"", gather: bool = False) -> Pickled:
    """Pickle (protocol 5) after `head`, with shared buffers as references; automatic sharing if in a scope.

    `gather`: the pickle as its parts (`frames.Gather`), to be written with writev.
    """
    return _run_attempt(obj, head=head, gather=gather)


def dill_dumps(obj: Any, head: bytes = b"") -> Pickled:
    """dill by value (recurse=True) after `head`, with shared buffers as references."""
    return _run_attempt(obj, dill=True, head=head)


def buffers_of(refs: list[tuple[str, int, int, int]], unshared: str | None) -> list[memoryview]:
    """Map the out-of-band buffers a `Pickled` refers to, for ``pickle.loads(..., buffers=)``."""
    if unshared is not None:
        _warn_once(unshared)
    np = _np()
    return [_attach(name, offset, np.uint8, (n,), (1,), flags) for name, offset, n, flags in refs]


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
