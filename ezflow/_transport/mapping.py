"""Views of segments in this process: map a segment once, rebuild arrays from references.

    reference (name, offset, dtype, shape, strides, flags) --_attach--> ndarray on a _Mapping

A worker maps data moved by automatic sharing copy-on-write (as private as
a pickled copy); ``share()``d data is one memory in every process. A
process other than the owner holds a shared flock on each segment it
views, so the owner knows when nobody does.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

from . import kept as _kept
from .registry import _init, adopt
from .segments import _MV, _RO, _SHARED, S, _Mapping, _mmap, _np, _parse, _posixshmem, _warn_once, fcntl


def _map_segment(name: str, private: bool, auto: bool) -> Any:
    """Return the mapping of a segment here (one per segment and kind), or a private copy's root."""
    key = (name, private)
    m = S.maps.get(key)
    if m is None:
        _init()
        with S.map_lock:
            m = S.maps.get(key)
            if m is None:
                m = _new_mapping(name, private, auto)
                if type(m) is not _Mapping:
                    return m
                S.maps[key] = m
                return m
    m.epoch = S.epoch
    if not auto:
        m.auto = False
    return m


def _new_mapping(name: str, private: bool, auto: bool) -> Any:
    ids = _parse(name)
    own = ids is not None and ids[0] == S.pid
    guard = contextlib.nullcontext() if own else S.fork_guard  # our flocked fd must reach _maps
    with guard:
        try:
            fd = _posixshmem.shm_open("/" + name, os.O_RDWR, 0o600)
        except FileNotFoundError:
            raise RuntimeError(
                f"shared array segment {name!r} no longer exists: the process that owned it "
                "ended, or it was sent somewhere it cannot be opened (another host)"
            ) from None
        try:
            st = os.fstat(fd)
            size = st.st_size
            if not own:
                _lock_shared(fd)
            try:
                rec = _kept.take(name, private, st.st_ino, size)
                addr = _mmap(fd, size, private) if rec is None else rec.addr
            except OSError:
                # out of address space or of mappings: a private copy still works
                data = _read_copy(fd, size)
                os.close(fd)
                if own:
                    adopt(name, size, hold=False)
                return data
        except BaseException:
            os.close(fd)
            raise
        if own:
            os.close(fd)
            adopt(name, size, hold=True)
            return _Mapping(name, addr, size, private, auto, "own", -1, st.st_ino)
        return _Mapping(name, addr, size, private, auto, "prov" if name in S.prov else "foreign", fd, st.st_ino)


def _lock_shared(fd: int) -> None:
    # The owner takes an exclusive lock only for a moment, to test that nobody views it.
    for _ in range(200):
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            time.sleep(0.005)
    fcntl.flock(fd, fcntl.LOCK_SH)


def _read_copy(fd: int, size: int) -> Any:
    buf = _np().empty(size, _np().uint8)
    view = memoryview(buf)
    done = 0
    while done < size:
        n = os.preadv(fd, [view[done:]], done)
        if n <= 0:
            break
        done += n
    return buf


def _attach(name: str, offset: int, dtype: Any, shape: tuple, strides: tuple, flags: int) -> Any:
    """Rebuild a view from a reference (what unpickling a shared array calls)."""
    ids = _parse(name)
    own = ids is not None and ids[0] == S.pid
    # data moved by automatic sharing is copy-on-write in a worker: as private as a pickled copy
    private = not (flags & _SHARED) and not own
    m = _map_segment(name, private, auto=not (flags & _SHARED))
    np = _np()
    root = m.root() if type(m) is _Mapping else m
    arr = np.ndarray(shape, dtype, buffer=root, offset=offset, strides=strides)
    if flags & _RO:
        arr.flags.writeable = False
    if flags & _MV:
        view = memoryview(arr)
        return view.toreadonly() if flags & _RO else view
    return arr


def _containing(addr: int, nbytes: int) -> tuple[_Mapping, int] | None:
    """The mapping here that holds [addr, addr + nbytes), and the offset in it, if any.

    For buffers whose owner chain Python cannot walk (a pyarrow Buffer made
    from a view of a segment): the address says where they lie.
    """
    if not S.maps:
        return None
    maps: list[Any] = []
    for _ in range(8):  # another thread may map a segment meanwhile: look again
        try:
            maps = list(S.maps.values())
            break
        except RuntimeError:
            continue
    for m in maps:
        if type(m) is _Mapping and m.addr <= addr and addr + nbytes <= m.addr + m.length:
            return m, addr - m.addr
    return None


def _unshared(reason: str, obj: Any) -> Any:
    """A worker could not share this array (unpickled in the parent: warn once, use it)."""
    _warn_once(reason)
    return obj
