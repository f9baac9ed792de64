"""``share()``: put an array (or bytes) in shared memory once, so it crosses to workers by reference."""

from __future__ import annotations

import os
from typing import Any

from . import kept as _kept
from .registry import _create, _drain, _ensure_reaper, _hold_new, _init, forget_owned, take_for_use
from .segments import (
    S,
    _contiguous_bytes,
    _Mapping,
    _mmap,
    _np,
    _owner_pid,
    _posixshmem,
    _root,
    _size_class,
    _Unavailable,
    _unlink,
    _warn_once,
    fcntl,
)


def share(obj: Any) -> Any:
    """Return ``obj`` backed by shared memory, so that it crosses to worker processes without a copy.

    Args:
        obj: a numpy array (any dtype but object, any shape; C- or
            F-contiguous arrays keep their layout, others are copied once
            into a C-contiguous one), ``bytes`` or ``bytearray``.

    Returns:
        For an array, a ``numpy.ndarray`` viewing shared memory (ordinary
        in every way; ``np.array(a)`` or ``a.copy()`` gives a private
        copy). For ``bytes``, a read-only ``memoryview``; for a
        ``bytearray``, a writable one (``bytes`` and ``bytearray`` cannot
        point at memory they do not own). An object that is already shared
        is returned as is. Writes through any view, in any process, are
        seen by every process.

        If shared memory cannot be used (no /dev/shm, or too little room
        in it), warns once with `SharedMemoryWarning` and returns the array
        itself (a memoryview of the bytes): ezflow then pickles it as usual.

    Raises:
        TypeError: ``obj`` is not one of those types, or is an array of
            Python objects.
    """
    np = _np()
    if isinstance(obj, (bytes, bytearray, memoryview)):
        view = memoryview(obj)
        if not view.contiguous:
            raise TypeError("share() needs a contiguous buffer; copy it with bytes(view) first")
        m = _root(view)
        if m is not None and not m.private:
            m.auto = False
            return view
        data = np.frombuffer(view.cast("B") if view.format != "B" or view.ndim != 1 else view, np.uint8)
        out = _share_array(data, readonly=view.readonly)
        if out is data:
            return view
        mv = memoryview(out)
        return mv.toreadonly() if view.readonly else mv
    if not isinstance(obj, np.ndarray):
        raise TypeError(
            f"share() takes a numpy array, bytes or bytearray, got {type(obj).__name__}; "
            "share the arrays inside a container one by one"
        )
    if type(obj) is not np.ndarray and not isinstance(obj, np.memmap):
        raise TypeError(
            f"share() takes a plain numpy.ndarray, got {type(obj).__module__}.{type(obj).__name__}; "
            "share np.asarray(x) (and any parts it has, such as a mask) instead"
        )
    if obj.dtype.hasobject:
        raise TypeError(
            "share() cannot share an array of Python objects (dtype object): its elements "
            "live in this process's memory; convert it to a numeric or string dtype"
        )
    m = _root(obj)
    if m is not None and not m.private and type(obj) is np.ndarray:
        m.auto = False
        return obj
    return _share_array(obj, readonly=not obj.flags.writeable)


def _share_array(arr: Any, readonly: bool) -> Any:
    np = _np()
    try:
        name, size, fd, role = _alloc_here(arr.nbytes)
    except _Unavailable as exc:
        _warn_once(str(exc))
        return arr
    ino = 0
    try:
        if arr.flags.c_contiguous or arr.flags.f_contiguous:
            data, strides = _contiguous_bytes(arr)
            addr, size, ino, _ = _kept.write(fd, name, data)  # once, into a mapping kept from its last use if any
        else:  # copied once, straight into the segment
            try:
                os.posix_fallocate(fd, 0, max(arr.nbytes, 1))
            except OSError as exc:
                raise _Unavailable(f"/dev/shm is full ({exc.strerror or exc})") from exc
            addr = _mmap(fd, size, False)
            ino = os.fstat(fd).st_ino
            strides = None
    except BaseException as exc:
        os.close(fd)
        _forget_alloc(name, role)
        if isinstance(exc, (_Unavailable, OSError)):
            _warn_once(str(exc))
            return arr
        raise
    if role == "own":
        os.close(fd)
        fd = -1
    m = _Mapping(name, addr, size, False, False, role, fd, ino)
    S.remember(m)
    if role == "own":
        _ensure_reaper()  # the registry counted this mapping's hold in _alloc_here
    out = np.ndarray(arr.shape, arr.dtype, buffer=m.root(), offset=0, strides=strides)
    if strides is None:
        np.copyto(out, arr)
    if readonly:
        out.flags.writeable = False
    return out


def _alloc_here(nbytes: int) -> tuple[str, int, int, str]:
    """A segment for this process's own use: (name, size, fd, role)."""
    _init()
    if _owner_pid() == S.pid:
        _drain()
        size = _size_class(nbytes)
        name = take_for_use(size)
        if name is not None:
            try:
                fd = _posixshmem.shm_open("/" + name, os.O_RDWR, 0o600)
                return name, size, fd, "own"
            except OSError:
                forget_owned(name)
        name, size, fd = _create(nbytes)
        _hold_new(name, size)
        return name, size, fd, "own"
    # a worker: the parent will own it once it is sent there; until then it is ours to clean
    name, size, fd = _create(nbytes)
    S.prov.made(name)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except OSError:
        pass
    return name, size, fd, "prov"


def _forget_alloc(name: str, role: str) -> None:
    if role == "own":
        forget_owned(name)
    else:
        S.prov.forget(name)
    _unlink(name)
