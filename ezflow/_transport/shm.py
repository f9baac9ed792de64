"""Shared memory: numpy arrays and byte buffers cross processes without a copy.

    owner process (runs the flow)                         worker process
    ----------------------------                          --------------
    share(a) -> a view of segment S                       _attach(ref) maps S: a view of
    task items ---- pickled: a ref (name, dtype, ...) -->   the same pages, and a shared
                                                            flock on S while it is viewed
    + spare segments lent for the results <---------------  (auto-shared data: mapped
                                                             copy-on-write)
    adopt T, the result's segment  <--- ref to T ------   a big result array is written
    (T's name says: owner = this process)                   into a spare or a new T
    registry: S, T used / free / lent; a segment whose
    views are all gone is pooled (during a run) or unlinked,
    once no other process holds a shared flock on it

Only ezflow's own pickler (`pickle_dumps`, used by `_serialize.dumps` when
shared memory is in play) writes references. Everything else that pickles
a shared array (``pickle.dumps``, multiprocessing, Dask) sees an ordinary
numpy array and carries its data, so a reference can never reach a process
that cannot open it.

Segments are POSIX shared memory (``_posixshmem``), not
``multiprocessing.shared_memory``: no resource tracker, no per-segment file
descriptor in the owner, and a name that says who owns it:
``ezf_<owner pid>_<creator pid>_<n>``. The owner unlinks; a creator that is
not the owner (a worker writing a result) hands its segment over by sending
it. What a crash leaves behind is found by name: the owner removes what a
dead worker made but never sent, and the first use of this module in any
process removes the segments of owners that are dead.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import copyreg
import io
import itertools
import mmap
import os
import pickle
import select
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from typing import Any

try:  # POSIX only; elsewhere sharing is off and everything is pickled
    import _posixshmem  # type: ignore[import-not-found]  # CPython-private, no stubs
    import fcntl
except ImportError:  # pragma: no cover - Windows
    _posixshmem = None
    fcntl = None  # type: ignore[assignment]

from .._core import sigterm as _sigterm
from . import owner as _owner

__all__ = [
    "DEFAULT_THRESHOLD",
    "SharedMemoryWarning",
    "StageLink",
    "by_value",
    "dill_dumps",
    "engaged",
    "pickle_dumps",
    "result_scope",
    "share",
    "stage_threshold",
    "sweep_stale",
]

DEFAULT_THRESHOLD = 1 << 20
"""Automatic sharing moves result arrays of at least this many bytes (1 MiB)."""

PREFIX = "ezf_"
SHM_DIR = "/dev/shm"
POOL_MAX = 1 << 30  # free segments kept for reuse, at most (bytes)
# Free segments outlive the run by this long, so that the next run (a notebook
# cell run again, a loop of calls) reuses their pages instead of making and
# zeroing new ones: 2-3x the throughput on big arrays. shutdown() frees them now.
POOL_LINGER = 30.0
PIECE_BYTES = 8 << 20  # array bytes a piece of a process stage carries, about, once they are big
_PAGE = mmap.PAGESIZE

# flags of a reference
_SHARED = 1  # made by share(): one memory in every process (else: copy-on-write in workers)
_RO = 2  # a read-only view
_MV = 4  # rebuild as a memoryview (bytes, bytearray)


class SharedMemoryWarning(RuntimeWarning):
    """Shared memory could not be used; data is pickled through the pipe instead."""


class _Unavailable(Exception):
    """No segment can be made now (no /dev/shm, or not enough room)."""


# -- process state (reset in a forked child) ---------------------------------

_PID = os.getpid()
_lock = threading.Lock()  # the registry; never taken by a finalizer
_fork_guard = threading.Lock()  # no fork while we hold a flocked fd not yet recorded
_map_lock = threading.Lock()  # one mapping per segment (taken before _lock or _fork_guard)
_counter = itertools.count()
_maps: weakref.WeakValueDictionary[tuple[str, bool], _Mapping] = weakref.WeakValueDictionary()
_owned: dict[str, _Seg] = {}  # segments this process owns (its pid comes first in the name)
_free: dict[int, list[str]] = {}  # size -> free owned segments (only while a run is active)
_free_bytes = 0
_idle: dict[str, tuple[float, float]] = {}  # owned, no holds: (next check, delay) until others let go
_released: collections.deque = collections.deque()  # names whose hold ended (finalizers append)
_prov: dict[str, str] = {}  # made here for another owner: "mine" | "pending" | "given" | "dead"
_active = 0  # running StageLinks: free segments are pooled while > 0 ...
_keep_until = 0.0  # ... and until this time (monotonic) after the last one ended
_epoch = 0  # a worker's result message count: which foreign views are current
_tls = threading.local()
_by_value: contextvars.ContextVar[bool] = contextvars.ContextVar("ezflow_shm_by_value", default=False)
_disabled: str | None = None
_warned = False
_ready = False
_wake_r = _wake_w = -1
_reaper: threading.Thread | None = None
_libc: Any = None


def _np() -> Any:
    import numpy

    return numpy


# -- names and processes -------------------------------------------------------


def _owner_pid() -> int:
    """The process that will own what this one creates: a worker's parent, or itself."""
    worker = sys.modules.get("ezflow._executors.worker")
    owner = getattr(worker, "OWNER", None)
    return owner if owner else _PID


def _parse(name: str) -> tuple[int, int] | None:
    """(owner, creator) of a segment of this PID namespace (pids mean nothing across one)."""
    ids = _owner.parse(name)
    if ids is None or ids[2] not in (None, _owner.NAMESPACE):
        return None
    return ids[0], ids[1]


def _alive(pid: int) -> bool:
    return bool(_owner.judge(SHM_DIR, pid, None))


def _listdir() -> list[str]:
    try:
        return [n for n in os.listdir(SHM_DIR) if n.startswith(PREFIX)]
    except OSError:
        return []


def _unlink(name: str) -> None:
    try:
        _posixshmem.shm_unlink("/" + name)
    except (FileNotFoundError, AttributeError, TypeError):
        pass
    except OSError:
        pass


def sweep_stale() -> list[str]:
    """Remove segments whose owner process is dead (a killed process group); return their names.

    An owner in another PID namespace (a container sharing /dev/shm) is
    judged by its liveness lock, never by a pid that means nothing here.
    """
    gone = []
    dead: dict[tuple[int, int | None], bool] = {}
    lives = []
    for name in _listdir():
        if name.endswith("_" + _owner.LIVE):
            lives.append(name)
            continue
        ids = _owner.parse(name)
        if ids is None:
            continue
        owner, _creator, ns = ids
        here = ns is None or ns == _owner.NAMESPACE
        if here and owner == _PID:
            # this pid's earlier life (nothing of ours exists yet), else ours
            if not _owned and not _ready:
                _unlink(name)
                gone.append(name)
            continue
        key = (owner, ns)
        if key not in dead:
            dead[key] = _owner.judge(SHM_DIR, owner, ns) is False
        if dead[key]:
            _unlink(name)
            gone.append(name)
    for name in lives:  # a dead owner's lock file, once its lock is free
        parts = name[len(PREFIX) :].split("_")
        if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit() and int(parts[0]) != _PID:
            if _owner.judge(SHM_DIR, int(parts[0]), int(parts[1])) is False and _owner._lock_free(
                os.path.join(SHM_DIR, name)
            ):
                _unlink(name)
    return gone


def _reap(all_mine: bool = False) -> None:
    """Unlink segments named for this process that it never received: their creator died."""
    for name in _listdir():
        ids = _parse(name)
        if ids is None or ids[0] != _PID:
            continue
        with _lock:
            known = name in _owned
        if known and not all_mine:
            continue
        if all_mine or (ids[1] != _PID and not _alive(ids[1])):
            _unlink(name)


def _init() -> None:
    """First use in this process: clean up after dead owners, arrange our own clean-up."""
    global _ready
    if _ready:
        return
    with _lock:
        if _ready:
            return
        if _posixshmem is None:
            _disable("POSIX shared memory is not available on this platform")
        sweep_stale()
        _ready = True
    _raise_fd_limit()
    import atexit
    from multiprocessing import util

    atexit.register(_at_exit)
    util.Finalize(None, _at_exit, exitpriority=100)  # worker processes skip atexit


def _raise_fd_limit() -> None:
    # A process viewing segments of another owner keeps one descriptor per segment.
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, ValueError, OSError):
        pass


def _disable(reason: str) -> None:
    global _disabled
    _disabled = reason


def _warn_once(reason: str) -> None:
    global _warned
    if _warned:
        return
    _warned = True
    warnings.warn(
        f"ezflow: shared memory cannot be used ({reason}); numpy arrays are pickled "
        "through the pipe instead: correct, but slower. Give /dev/shm more room "
        "(Docker: run with --shm-size=2g or more), or pass share_arrays=False to "
        "stop trying.",
        SharedMemoryWarning,
        stacklevel=3,
    )


# -- segments ------------------------------------------------------------------


def _size_class(n: int) -> int:
    """Round a size up so that similar sizes reuse the same segments (<= 12.5% slack)."""
    n = max(n, 1)
    n = -(-n // _PAGE) * _PAGE
    if n <= 16 * _PAGE:
        return n
    step = 1 << (n.bit_length() - 4)
    return -(-n // step) * step


def _space_limit() -> int | None:
    value = os.environ.get("EZFLOW_SHM_SIZE")
    if not value:
        return None
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    value = value.strip().upper().rstrip("B")
    scale = units.get(value[-1:], 1)
    try:
        return int(float(value.rstrip("KMG")) * scale)
    except ValueError:
        return None


def _check_space(size: int) -> None:
    limit = _space_limit()
    if limit is not None:  # behave as if /dev/shm were this big (tests, Docker rehearsal)
        used = 0
        for name in _listdir():
            try:
                used += os.stat(os.path.join(SHM_DIR, name)).st_blocks * 512
            except OSError:
                pass
        if used + size > limit:
            raise _Unavailable(f"/dev/shm is too small: {size >> 20} MiB more would pass EZFLOW_SHM_SIZE")
        return
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return
    free = st.f_bavail * st.f_frsize
    reserve = min(64 << 20, st.f_blocks * st.f_frsize // 20)  # leave room for everyone else
    if free - size < reserve:
        raise _Unavailable(
            f"/dev/shm is too small: {free >> 20} MiB free of {(st.f_blocks * st.f_frsize) >> 20} MiB"
        )


def _create(nbytes: int) -> tuple[str, int, int]:
    """Make a new segment; return (name, size, fd open for writing)."""
    if _disabled:
        raise _Unavailable(_disabled)
    _init()
    size = _size_class(nbytes)
    _check_space(size)
    owner = _owner_pid()
    if owner == _PID:  # ours to clean up, even if we are killed outright
        _owner.hold_liveness(SHM_DIR, owner)
        _owner.ensure_watcher(SHM_DIR, owner)
        _sigterm.arm()
    while True:
        name = _owner.segment_name(owner, _PID, next(_counter))
        try:
            fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
            break
        except FileExistsError:
            continue
        except OSError as exc:
            _disable(f"cannot create a segment in {SHM_DIR}: {exc.strerror or exc}")
            raise _Unavailable(_disabled) from exc
    try:
        os.ftruncate(fd, size)
    except OSError as exc:
        os.close(fd)
        _unlink(name)
        raise _Unavailable(f"cannot size a segment: {exc.strerror or exc}") from exc
    return name, size, fd


def _contiguous_bytes(arr: Any) -> tuple[Any, tuple[int, ...]]:
    """Return (uint8 view of arr's memory, strides arr will have) for a C- or F-contiguous array."""
    if arr.flags.c_contiguous:
        flat = arr.reshape(-1)
    else:  # F-contiguous: its transpose is C-contiguous, same memory
        flat = arr.T.reshape(-1)
    return flat.view(_np().uint8), arr.strides


def _write(fd: int, data: Any, name: str) -> None:
    """Write a uint8 array at the start of a segment; ENOSPC becomes _Unavailable."""
    view = memoryview(data)
    done = 0
    total = len(view)
    try:
        while done < total:
            done += os.pwrite(fd, view[done : done + (1 << 30)], done)
    except OSError as exc:
        raise _Unavailable(f"/dev/shm is full ({exc.strerror or exc})") from exc


def _c() -> Any:
    global _libc
    if _libc is None:
        import ctypes

        lib = ctypes.CDLL(None, use_errno=True)
        lib.mmap.restype = ctypes.c_void_p
        lib.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
        lib.munmap.restype = ctypes.c_int
        lib.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
        _libc = (lib, ctypes.get_errno, ctypes.c_void_p(-1).value)
    return _libc


def _mmap(fd: int, length: int, private: bool) -> int:
    # ctypes, not mmap.mmap: a mmap object keeps a duplicate descriptor per segment
    lib, errno, failed = _c()
    flags = mmap.MAP_PRIVATE if private else mmap.MAP_SHARED
    addr = lib.mmap(None, length, mmap.PROT_READ | mmap.PROT_WRITE, flags, fd, 0)
    if addr is None or addr == failed:
        err = errno()
        raise OSError(err, os.strerror(err))
    return addr


def _munmap(addr: int, length: int) -> None:
    try:
        _c()[0].munmap(addr, length)
    except Exception:  # interpreter shutdown
        pass


class _Seg:
    """An owned segment, as the owner's registry sees it."""

    __slots__ = ("holds", "size", "state")

    def __init__(self, size: int, state: str, holds: int) -> None:
        self.size = size
        self.state = state  # "used" | "free" | "lent"
        self.holds = holds  # live mappings here + pieces in flight that carry it


class _Mapping:
    """One segment mapped into this process: the base of every view of it here."""

    __slots__ = (
        "__array_interface__", "__weakref__", "addr", "auto", "epoch", "fd", "length", "name", "private", "role"
    )

    def __init__(self, name: str, addr: int, length: int, private: bool, auto: bool, role: str, fd: int) -> None:
        self.name = name
        self.addr = addr
        self.length = length
        self.private = private  # copy-on-write: our writes stay here
        self.auto = auto  # moved by automatic sharing (receivers map it copy-on-write)
        self.role = role  # "own" | "foreign" | "prov" (made here, owned by our parent)
        self.fd = fd  # foreign/prov: held open for the shared flock
        self.epoch = _epoch
        self.__array_interface__ = {
            "data": (addr, False),
            "shape": (length,),
            "typestr": "|u1",
            "version": 3,
        }
        f = weakref.finalize(self, _unmapped, name, addr, length, fd, role, _PID)
        f.atexit = False  # views may outlive the interpreter's atexit: never unmap under them

    def root(self) -> Any:
        return _np().asarray(self)


def _unmapped(name: str, addr: int, length: int, fd: int, role: str, pid: int) -> None:
    # A finalizer: no locks here (it may run inside any code, on any thread).
    _munmap(addr, length)
    if pid != os.getpid():
        return  # an inherited copy in a forked child: only the child's mapping goes
    if role == "own":
        _released.append(name)
        _wake()
        return
    if role == "prov":
        state = _prov.get(name)
        if state == "mine":
            _prov.pop(name, None)
            _unlink(name)
        elif state == "pending":
            _prov[name] = "dead"
        elif state == "given":
            _prov.pop(name, None)
    try:
        os.close(fd)  # lets go of our shared flock
    except OSError:
        pass


def _wake() -> None:
    if _wake_w >= 0:
        try:
            os.write(_wake_w, b"\0")
        except OSError:
            pass


def _root(obj: Any) -> _Mapping | None:
    """The mapping an array or memoryview views, if any."""
    nd = _np().ndarray
    for _ in range(64):
        t = type(obj)
        if t is _Mapping:
            return obj
        if t is nd or isinstance(obj, nd):
            obj = obj.base
        elif t is memoryview:
            obj = obj.obj
        else:
            return None
    return None


# -- the owner's registry --------------------------------------------------------


def _hold_new(name: str, size: int) -> None:
    with _lock:
        _owned[name] = _Seg(size, "used", 1)
    _ensure_reaper()


def _release(names: Any) -> None:
    if names:
        _released.extend(names)
        _wake()


def _take_free(size: int) -> str | None:
    global _free_bytes
    names = _free.get(size)
    while names:
        name = names.pop()
        seg = _owned.get(name)
        if seg is not None and seg.state == "free":
            _free_bytes -= seg.size
            return name
    return None


def _exclusive(name: str) -> bool | None:
    """True if no other process holds a shared flock on it; None if it is gone."""
    with _fork_guard:
        try:
            fd = _posixshmem.shm_open("/" + name, os.O_RDWR, 0o600)
        except FileNotFoundError:
            return None
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False
        finally:
            os.close(fd)


def _drain() -> None:
    """Account for ended holds; pool or unlink segments nobody views any more."""
    if not _released and not _idle:
        return
    now = time.monotonic()
    with _lock:
        while _released:
            name = _released.popleft()
            seg = _owned.get(name)
            if seg is None:
                continue
            seg.holds -= 1
            if seg.holds <= 0 and seg.state == "used":
                _idle[name] = (0.0, 0.0)
        for name, (when, delay) in list(_idle.items()):
            if when > now:
                continue
            seg = _owned.get(name)
            if seg is None or seg.holds > 0 or seg.state != "used":
                _idle.pop(name, None)
                continue
            ok = _exclusive(name)
            if ok is False:  # another process still views it: look again later
                delay = min(0.25, max(0.01, 2 * delay))
                _idle[name] = (now + delay, delay)
                continue
            _idle.pop(name, None)
            _pool_or_unlink(name, seg, keep=bool(ok))


def _pool_or_unlink(name: str, seg: _Seg, keep: bool = True) -> None:
    """A segment nobody uses: keep it for reuse while pooling has room, else remove it (holding _lock)."""
    global _free_bytes
    if keep and _pooling() and _free_bytes + seg.size <= _pool_max():
        seg.state = "free"
        _free.setdefault(seg.size, []).append(name)
        _free_bytes += seg.size
    else:
        del _owned[name]
        _unlink(name)


def _pooling() -> bool:
    return _active > 0 or time.monotonic() < _keep_until


def _pool_max() -> int:
    try:
        st = os.statvfs(SHM_DIR)
        return min(POOL_MAX, st.f_blocks * st.f_frsize // 4)
    except OSError:
        return POOL_MAX


def flush_pool() -> None:
    """Unlink the free segments kept for reuse (``ezflow.shutdown()``)."""
    global _keep_until
    _keep_until = 0.0
    _reap()  # results that stopped workers made for us and never sent
    _flush_pool()
    _let_go()


def _let_go() -> None:
    """Owning nothing any more: drop the liveness lock file and the watcher process."""
    with _lock:
        holding = bool(_owned) or any(s in ("mine", "pending") for s in _prov.values())
    if not holding:
        _owner.release_liveness(SHM_DIR)
        _owner.stop_watcher()
        _sigterm.disarm()


def _flush_pool() -> None:
    global _free_bytes
    with _lock:
        for names in _free.values():
            for name in names:
                seg = _owned.get(name)
                if seg is not None and seg.state == "free":
                    del _owned[name]
                    _unlink(name)
        _free.clear()
        _free_bytes = 0


def _ensure_reaper() -> None:
    """Start the thread that frees segments whose last view died outside ezflow's calls."""
    global _reaper, _wake_r, _wake_w
    if _reaper is not None:
        return
    with _lock:
        if _reaper is not None:
            return
        r, w = os.pipe()
        os.set_blocking(w, False)
        _wake_r, _wake_w = r, w
        _reaper = threading.Thread(target=_reap_loop, args=(r,), name="ezflow-shm-reaper", daemon=True)
        _reaper.start()


def _reap_loop(r: int) -> None:
    while True:
        timeout = None
        if _idle:
            soonest = min(t for t, _ in tuple(_idle.values()))
            timeout = max(0.005, soonest - time.monotonic())
        if _free and _active == 0:
            linger = max(0.005, _keep_until - time.monotonic())
            timeout = linger if timeout is None else min(timeout, linger)
        try:
            ready, _, _ = select.select([r], [], [], timeout)
            if ready:
                os.read(r, 4096)
        except (OSError, ValueError):
            return
        if r != _wake_r:
            return  # forked or shut down
        try:
            _drain()
            if _free and not _pooling():
                _flush_pool()
            if not _owned:
                _let_go()
        except Exception:  # pragma: no cover - keep freeing whatever happens
            pass


def _at_exit() -> None:
    """Leave nothing in /dev/shm: our segments, and what we made for our owner and kept."""
    with _lock:
        names = list(_owned)
        _owned.clear()
        _free.clear()
        prov = [n for n, s in _prov.items() if s in ("mine", "dead", "pending")]
        _prov.clear()
    for name in names + prov:
        _unlink(name)
    _reap(all_mine=True)
    _owner.release_liveness(SHM_DIR)
    _owner.stop_watcher()


def _on_sigterm() -> None:
    """Unlink every segment named for this owner now, taking no lock (the main thread may hold one)."""
    global _disabled
    _disabled = "the process is ending (SIGTERM)"  # other threads make no new segment from now on
    for name in _listdir():
        ids = _parse(name)
        if ids is not None and ids[0] == _PID:
            _unlink(name)
    _owner.let_go_now(SHM_DIR, _PID)


_sigterm.register(lambda: bool(_owned), _on_sigterm)


def _after_fork_child() -> None:
    global _PID, _lock, _fork_guard, _map_lock, _maps, _owned, _free, _free_bytes, _idle, _released, _prov
    global _active, _epoch, _tls, _ready, _wake_r, _wake_w, _reaper, _keep_until
    for m in list(_maps.values()):
        if m.fd >= 0:
            try:
                os.close(m.fd)  # the parent's descriptor and its flock stay the parent's
            except OSError:
                pass
    for fd in (_wake_r, _wake_w):
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
    _owner.after_fork_child()
    _PID = os.getpid()
    _lock = threading.Lock()
    _fork_guard = threading.Lock()
    _map_lock = threading.Lock()
    _maps = weakref.WeakValueDictionary()
    _owned, _free, _free_bytes, _idle, _prov = {}, {}, 0, {}, {}
    _released = collections.deque()
    _active = _epoch = 0
    _keep_until = 0.0
    _tls = threading.local()
    _ready = False
    _wake_r = _wake_w = -1
    _reaper = None


def _before_fork() -> None:
    _fork_guard.acquire()


def _after_fork_parent() -> None:
    _fork_guard.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_parent, after_in_child=_after_fork_child)


# -- mapping a segment ---------------------------------------------------------


def _map_segment(name: str, private: bool, auto: bool) -> Any:
    """Return the mapping of a segment here (one per segment and kind), or a private copy's root."""
    key = (name, private)
    m = _maps.get(key)
    if m is None:
        _init()
        with _map_lock:
            m = _maps.get(key)
            if m is None:
                m = _new_mapping(name, private, auto)
                if type(m) is not _Mapping:
                    return m
                _maps[key] = m
                return m
    m.epoch = _epoch
    if not auto:
        m.auto = False
    return m


def _new_mapping(name: str, private: bool, auto: bool) -> Any:
    ids = _parse(name)
    own = ids is not None and ids[0] == _PID
    guard = contextlib.nullcontext() if own else _fork_guard  # our flocked fd must reach _maps
    with guard:
        try:
            fd = _posixshmem.shm_open("/" + name, os.O_RDWR, 0o600)
        except FileNotFoundError:
            raise RuntimeError(
                f"shared array segment {name!r} no longer exists: the process that owned it "
                "ended, or it was sent somewhere it cannot be opened (another host)"
            ) from None
        try:
            size = os.fstat(fd).st_size
            if not own:
                _lock_shared(fd)
            try:
                addr = _mmap(fd, size, private)
            except OSError:
                # out of address space or of mappings: a private copy still works
                data = _read_copy(fd, size)
                os.close(fd)
                if own:
                    _adopt(name, size, hold=False)
                return data
        except BaseException:
            os.close(fd)
            raise
        if own:
            os.close(fd)
            _adopt(name, size, hold=True)
            return _Mapping(name, addr, size, private, auto, "own", -1)
        return _Mapping(name, addr, size, private, auto, "prov" if name in _prov else "foreign", fd)


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


def _adopt(name: str, size: int, hold: bool) -> None:
    """A segment of ours arrived (a worker's result, or one we lent): count this hold."""
    with _lock:
        seg = _owned.get(name)
        sink = getattr(_tls, "sink", None)
        if seg is None:
            seg = _owned[name] = _Seg(size, "used", 0)
            if sink is not None:
                sink.append(size)
        elif seg.state == "lent":
            seg.state = "used"
            if sink is not None:
                sink.append(seg.size)
        elif seg.state == "free":  # pragma: no cover - a reference outlived its holds
            global _free_bytes
            if name in _free.get(seg.size, ()):
                _free[seg.size].remove(name)
                _free_bytes -= seg.size
            seg.state = "used"
        _idle.pop(name, None)
        if hold:
            seg.holds += 1
        elif seg.holds <= 0:
            _idle[name] = (0.0, 0.0)
    _ensure_reaper()


def _attach(name: str, offset: int, dtype: Any, shape: tuple, strides: tuple, flags: int) -> Any:
    """Rebuild a view from a reference (what unpickling a shared array calls)."""
    ids = _parse(name)
    own = ids is not None and ids[0] == _PID
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


def _unshared(reason: str, obj: Any) -> Any:
    """A worker could not share this array (unpickled in the parent: warn once, use it)."""
    _warn_once(reason)
    return obj


# -- share() -------------------------------------------------------------------


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
    try:
        if arr.flags.c_contiguous or arr.flags.f_contiguous:
            data, strides = _contiguous_bytes(arr)
            _write(fd, data, name)
            addr = _mmap(fd, size, False)
        else:  # copied once, straight into the segment
            try:
                os.posix_fallocate(fd, 0, max(arr.nbytes, 1))
            except OSError as exc:
                raise _Unavailable(f"/dev/shm is full ({exc.strerror or exc})") from exc
            addr = _mmap(fd, size, False)
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
    m = _Mapping(name, addr, size, False, False, role, fd)
    _maps[(name, False)] = m
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
    if _owner_pid() == _PID:
        _drain()
        size = _size_class(nbytes)
        with _lock:
            name = _take_free(size)
            if name is not None:
                _owned[name].state = "used"
                _owned[name].holds = 1
        if name is not None:
            try:
                fd = _posixshmem.shm_open("/" + name, os.O_RDWR, 0o600)
                return name, size, fd, "own"
            except OSError:
                with _lock:
                    _owned.pop(name, None)
        name, size, fd = _create(nbytes)
        _hold_new(name, size)
        return name, size, fd, "own"
    # a worker: the parent will own it once it is sent there; until then it is ours to clean
    name, size, fd = _create(nbytes)
    _prov[name] = "mine"
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except OSError:
        pass
    return name, size, fd, "prov"


def _forget_alloc(name: str, role: str) -> None:
    if role == "own":
        with _lock:
            _owned.pop(name, None)
    else:
        _prov.pop(name, None)
    _unlink(name)


# -- pickling --------------------------------------------------------------------


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
            for name in attempt.prov:
                if _prov.get(name) == "dead":
                    _prov.pop(name, None)
                    _unlink(name)
                elif _prov.get(name) == "pending":
                    _prov[name] = "mine"

    def keep(self, attempt: _Attempt) -> None:
        if self.kept is not None and not self.owner:
            self.undo(self.kept)  # only the last message pickled is sent
        self.kept = attempt

    def commit(self) -> None:
        """The message was sent: what it carries now belongs to its receiver."""
        kept, self.kept = self.kept, None
        if kept is None or self.owner:
            return
        for name in kept.prov:
            if _prov.get(name) == "dead":
                _prov.pop(name, None)
            elif name in _prov:
                _prov[name] = "given"

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
        ctx = self.ctx
        if ctx is not None and not ctx.owner and m.role == "foreign" and m.epoch != _epoch:
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
            if _prov.get(m.name) == "mine":
                _prov[m.name] = "pending"
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
                _write(fd, data, name)
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
    return getattr(_tls, "ctx", None) is not None and not _by_value.get()


@contextlib.contextmanager
def _sending(threshold: int | None) -> Iterator[_Ctx]:
    ctx = _Ctx(threshold, owner=True)
    prev = getattr(_tls, "ctx", None)
    _tls.ctx = ctx
    try:
        yield ctx
    finally:
        _tls.ctx = prev


def _run_attempt(obj: Any, dill: bool = False) -> bytes:
    ctx = getattr(_tls, "ctx", None)
    buf = io.BytesIO()
    if dill:
        from .serialize import dill_pickler

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
    ctx = getattr(_tls, "ctx", None)
    return ctx.kept if ctx is not None else None


def drop_attempt(attempt: Any) -> None:
    """A pickling was superseded by another of the same object: let go of what it made."""
    ctx = getattr(_tls, "ctx", None)
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


copyreg.pickle(memoryview, _reduce_memoryview)


# -- the worker side ---------------------------------------------------------------


@contextlib.contextmanager
def result_scope(opts: tuple | None) -> Iterator[None]:
    """Around pickling and sending one result message in a worker.

    ``opts`` is what the parent put in the task: (threshold or None, spares).
    Arrays of at least ``threshold`` bytes are written into a lent spare or
    a new segment; once the message is sent, the parent owns them.
    """
    global _epoch
    threshold, spares = opts if opts else (None, ())
    ctx = _Ctx(threshold, spares)
    _tls.ctx = ctx
    try:
        yield
    except BaseException:
        ctx.discard()
        raise
    else:
        ctx.commit()
    finally:
        _tls.ctx = None
        _epoch += 1


# -- the parent side: one per process stage -------------------------------------------


def stage_threshold(value: Any) -> int | None:
    """The byte threshold of a stage's ``share_arrays`` option (None: off).

    The option was checked when the stage was built (`_plan.make_stage`).
    """
    if value is None or value is True:
        return DEFAULT_THRESHOLD
    if value is False:
        return None
    return int(value)


class StageLink:
    """What a process stage's executor does about shared memory, in one place.

    It pickles each task (automatic sharing of big input arrays, spare
    segments lent for the results), keeps what a task carries alive until
    its worker answered, learns from results how many spares to lend, and
    cleans up after dead workers and at the end of the stage.
    """

    def __init__(self, share_arrays: Any) -> None:
        self.threshold = stage_threshold(share_arrays)
        _init()  # first use in this process: clean up after dead owners
        self._lock = threading.Lock()
        self._pieces: dict[int, tuple[int, list[str], list[tuple[str, int]]]] = {}
        self._started = False
        self._ratio = 0.0  # result segments per item
        self._size = 0  # their usual size
        self._item_bytes = 0  # shared array bytes an item carries (to or from the worker)
        self._setup: Any = None  # releases what the stage's own pickling made
        self._closed = False  # after close() a sender thread may still finish pickling one piece

    def dumps_task(self, pid: int, msg: tuple) -> bytes:
        """Pickle a task message, with this stage's sharing options appended."""
        from .serialize import dumps

        global _active
        if not self._started:
            self._started = True
            with _lock:
                _active += 1
        opts: tuple | None = None if self.threshold is None else (self.threshold, ())
        if "numpy" not in sys.modules:  # no arrays here: only the worker's results may share
            return dumps(msg + (opts,), to_worker=True)
        n = len(msg[3])
        auto = None if _disabled else self.threshold
        spares = self._lend(n) if auto is not None else ()
        if spares:
            opts = (self.threshold, spares)
        with _sending(auto) as ctx:
            try:
                data = dumps(msg + (opts,), to_worker=True)
            except BaseException:
                self._settle(spares)
                raise
        kept = ctx.kept
        made = kept.made if kept is not None else []
        if kept is not None and n:
            self._item_bytes = max(kept.nbytes // n, self._item_bytes // 2)
        with self._lock:
            late = self._closed
            if not late:
                self._pieces[pid] = (n, made, list(spares))
        if late:  # the stage already ended: nobody will answer this piece, let go now
            _release(made)
            self._settle(spares)
        return data

    @contextlib.contextmanager
    def setup_scope(self) -> Iterator[None]:
        """Around pickling the stage itself: arrays its function holds are shared too.

        What that makes lives as long as the stage may start a worker (one
        that died is replaced with the same setup message).
        """
        auto = None if _disabled or "numpy" not in sys.modules else self.threshold
        with _sending(auto) as ctx:
            yield
        if ctx.kept is not None and ctx.kept.made:
            self._setup = weakref.finalize(self, _release, list(ctx.kept.made))

    def max_items(self) -> int | None:
        """How many items a piece may carry: few when items carry big arrays.

        A piece is what a worker holds at once: with big arrays in it, more
        items only mean more segments in flight (memory, fresh pages to zero)
        and fewer to reuse, for no saving on per-message cost.
        """
        per_item = self._item_bytes
        if self.threshold is None or per_item < max(self.threshold, PIECE_BYTES // 64):
            return None
        return max(1, PIECE_BYTES // per_item)

    def loads(self, data: bytes) -> Any:
        """Unpickle a worker's message, noting the result segments it carries."""
        from .serialize import loads

        sink: list[int] = []
        _tls.sink = sink
        try:
            msg = loads(data)
        finally:
            _tls.sink = None
        if msg[0] == "result":
            with self._lock:
                rec = self._pieces.get(msg[1])
            if rec is not None and rec[0]:
                self._ratio = len(sink) / rec[0]
                if sink:
                    self._size = max(set(sink), key=sink.count)
                    self._item_bytes = max(self._item_bytes, sum(sink) // rec[0])
        return msg

    def done(self, *pids: int) -> None:
        """These pieces are answered (or their worker died): let go of what they carried."""
        for pid in pids:
            with self._lock:
                rec = self._pieces.pop(pid, None)
            if rec is not None:
                _release(rec[1])
                self._settle(rec[2])
        if _released:
            _drain()

    def reap(self) -> None:
        """A worker died: remove segments it made for us and never sent."""
        _reap()

    def close(self) -> None:
        """The stage ended (done, failed or cancelled)."""
        global _active, _keep_until
        with self._lock:
            self._closed = True
            pids = list(self._pieces)
        self.done(*pids)
        if self._setup is not None:
            self._setup()
        _reap()
        if self._started:
            self._started = False
            with _lock:
                _active -= 1
                last = _active == 0
            if last:  # keep the free segments a while for the next run; the reaper ends that
                _keep_until = time.monotonic() + POOL_LINGER
                _ensure_reaper()
                _wake()
        _drain()

    def _lend(self, n_items: int) -> tuple[tuple[str, int], ...]:
        k = int(self._ratio * n_items + 0.5)
        if k <= 0 or not self._size:
            return ()
        _drain()
        out = []
        with _lock:
            for _ in range(k):
                name = _take_free(self._size)
                if name is None:
                    break
                _owned[name].state = "lent"
                out.append((name, self._size))
        return tuple(out)

    def _settle(self, spares: Any) -> None:
        if not spares:
            return
        with _lock:
            for name, size in spares:
                seg = _owned.get(name)
                if seg is None or seg.state != "lent":
                    continue  # used for a result: adopted
                _pool_or_unlink(name, seg)
