"""Mappings kept after their last view is gone: the next use of the same segment maps nothing.

    last view gone --_unmapped (a finalizer)--> S.kept_new --settle--> S.kept (oldest dropped first)
    a reference to the segment again (same inode) --take--> the same address: no mmap, no page faults
    writing a segment (a task's input, a result, share()) --write--> a memcpy into a kept shared mapping

Segments are reused all run long (the owner's pool): mapping one of 8 MiB
afresh costs about 0.3 ms of page faults and unmapping it as much again,
and ``pwrite`` into it about twice a memcpy into mapped pages. A kept
mapping holds no flock: the owner pools, rewrites or unlinks the segment as
if it were gone.

A private (copy-on-write) mapping may hold pages this process wrote: those
are dropped (``MADV_DONTNEED``; /proc/self/pagemap says which) before it is
kept, so a later item sees the segment's data, never a stale copy. Where
/proc/self/pagemap cannot be read, private mappings are not kept. A kept
mapping of a segment its owner unlinked would hold its memory: the owner
drops its own at once (`forget`), other processes look for theirs twice a
second, and a worker with nothing to do drops them all (`drop_all`).
"""

from __future__ import annotations

import collections
import os
import time
from typing import Any

from . import segments as _segments
from . import when_flushing, when_idle
from .segments import _PAGE, SHM_DIR, S, _c, _mmap, _munmap, _np, _parse, _write

KEEP_COUNT = 64  # kept mappings per process, at most ...
KEEP_BYTES = 1 << 30  # ... and their bytes (a run cycles through its pool of segments)
CHECK_EVERY = 0.5  # seconds between looks for segments of other owners that are gone

_MADV_DONTNEED = 4
_MADV_POPULATE_WRITE = 23  # Linux 5.14

_Rec = collections.namedtuple("_Rec", "addr length ino ready")  # ready: every page mapped writable


def release(name: str, private: bool, addr: int, length: int, ino: int) -> None:
    """The last view of a mapping is gone: keep the mapping (a finalizer: takes no lock)."""
    if private and not _clean(addr, length):
        _munmap(addr, length)
        return
    S.kept_new.append((name, private, _Rec(addr, length, ino, False)))


def take(name: str, private: bool, ino: int, length: int) -> Any:
    """Return a kept mapping of this segment (a `_Rec`), now the caller's, or None (holding S.map_lock)."""
    settle()
    rec = S.kept.pop((name, private), None)
    if rec is None:
        return None
    S.kept_bytes -= rec.length
    if rec.ino != ino or rec.length != length:  # another segment by that name: not ours to view
        _munmap(rec.addr, rec.length)
        return None
    return rec


def put(name: str, private: bool, addr: int, length: int, ino: int, ready: bool = False) -> None:
    """Keep a mapping nothing views (holding S.map_lock)."""
    key = (name, private)
    old = S.kept.pop(key, None)
    if old is not None:
        S.kept_bytes -= old.length
        _munmap(old.addr, old.length)
    S.kept[key] = _Rec(addr, length, ino, ready)
    S.kept_bytes += length
    _trim()


def has_gone() -> bool:
    """True if segments we unlinked still have kept mappings to drop (`settle`)."""
    return bool(S.kept_gone)


def forget(name: str) -> None:
    """The owner unlinked this segment: drop its kept mappings at the next `settle` (takes no lock)."""
    S.kept_gone.append(name)


def settle() -> None:
    """Take in what finalizers kept; drop mappings of segments that are gone (holding S.map_lock)."""
    while S.kept_new:
        name, private, rec = S.kept_new.popleft()
        put(name, private, *rec)
    while S.kept_gone:
        name = S.kept_gone.popleft()
        for private in (False, True):
            _drop((name, private))
    now = time.monotonic()
    if S.kept and now >= S.kept_check:
        S.kept_check = now + CHECK_EVERY
        for key, rec in list(S.kept.items()):
            ids = _parse(key[0])
            if ids is not None and ids[0] == S.pid:
                continue  # ours: we drop it when we unlink it
            try:
                gone = os.stat(os.path.join(SHM_DIR, key[0])).st_ino != rec.ino
            except OSError:
                gone = True
            if gone:
                _drop(key)


def drop_all() -> None:
    """Unmap every kept mapping (a worker with nothing to do, ``shutdown()``)."""
    with S.map_lock:
        settle()
        for key in list(S.kept):
            _drop(key)


def unmap_inherited() -> None:
    """In a forked child: the kept mappings it inherited are its parent's to keep."""
    for _name, _private, rec in list(S.kept_new):
        _munmap(rec.addr, rec.length)
    for rec in list(S.kept.values()):
        _munmap(rec.addr, rec.length)


def write(fd: int, name: str, data: Any) -> tuple[int, int, int, bool]:
    """Write uint8 `data` at the start of segment `name` (open as `fd`).

    Returns (address of a shared mapping of the whole segment, its size,
    its inode, whether all its pages are mapped): the caller makes it a
    view's base or gives it back (`give_back`). The data goes in with a
    memcpy once every page is mapped: a mapping is populated first
    (``MADV_POPULATE_WRITE``, which says "no room" where a write to mapped
    memory would be a SIGBUS); where that fails, with ``pwrite``, which
    reports a full /dev/shm as an error.
    """
    st = os.fstat(fd)
    with S.map_lock:
        rec = take(name, False, st.st_ino, st.st_size)
    addr = None if rec is None else rec.addr
    try:
        if addr is None:
            addr = _mmap(fd, st.st_size, False)
        ready = (rec is not None and rec.ready) or _c()[0].madvise(addr, st.st_size, _MADV_POPULATE_WRITE) == 0
        if ready:
            _np().copyto(_view(addr, len(data)), data)
        else:
            _write(fd, data, name)
    except BaseException:
        if addr is not None:
            _munmap(addr, st.st_size)
        raise
    return addr, st.st_size, st.st_ino, ready


def give_back(name: str, addr: int, length: int, ino: int, ready: bool) -> None:
    """Keep a shared mapping `write` returned and nothing views."""
    with S.map_lock:
        put(name, False, addr, length, ino, ready)


class _Raw:
    __slots__ = ("__array_interface__",)

    def __init__(self, addr: int, length: int) -> None:
        self.__array_interface__ = {"data": (addr, False), "shape": (length,), "typestr": "|u1", "version": 3}


def _view(addr: int, length: int) -> Any:
    return _np().asarray(_Raw(addr, length))


def _drop(key: tuple[str, bool]) -> None:
    rec = S.kept.pop(key, None)
    if rec is not None:
        S.kept_bytes -= rec.length
        _munmap(rec.addr, rec.length)


def _trim() -> None:
    while S.kept and (len(S.kept) > KEEP_COUNT or S.kept_bytes > KEEP_BYTES):
        _drop(next(iter(S.kept)))


def _clean(addr: int, length: int) -> bool:
    """Drop the pages this process wrote in a private mapping; False if it cannot tell which."""
    np = _np()
    first, n = addr // _PAGE, length // _PAGE
    try:
        fd = os.open("/proc/self/pagemap", os.O_RDONLY)
        try:
            raw = os.pread(fd, n * 8, first * 8)
        finally:
            os.close(fd)
        if len(raw) != n * 8:
            return False
        e = np.frombuffer(raw, np.uint64)
        one = np.uint64(1)
        # present (bit 63) but not a page of the segment (bit 61), or swapped out (bit 62): our own copy
        ours = (((e >> np.uint64(63)) & ~(e >> np.uint64(61))) | (e >> np.uint64(62))) & one
        pages = np.flatnonzero(ours)
        if not len(pages):
            return True
        cuts = np.flatnonzero(np.diff(pages) != 1)
        starts = np.concatenate((pages[:1], pages[cuts + 1]))
        ends = np.concatenate((pages[cuts], pages[-1:])) + 1
        lib = _c()[0]
        for s, t in zip(starts.tolist(), ends.tolist()):
            if lib.madvise(addr + s * _PAGE, (t - s) * _PAGE, _MADV_DONTNEED) != 0:
                return False
        return True
    except Exception:  # no /proc, or the interpreter is shutting down: do not keep it
        return False


_segments.keeper = release
_segments.forgetter = forget
when_idle(drop_all)
when_flushing(drop_all)
