"""Shared-memory segments: names, making, writing and mapping them, and this process's state.

    ezf_<owner>_<creator>_<n>_<pidns>   a segment; the owner unlinks it (owner.py names it)
    S                                   what this process knows: segments it owns, maps, pools
    _Mapping                            one segment mapped here; every view's base

Segments are POSIX shared memory (``_posixshmem``), not
``multiprocessing.shared_memory``: no resource tracker, no per-segment file
descriptor in the owner, and a name that says who owns it. Everything here
is below the registry (`registry`): it makes and maps, and decides nothing.
"""

from __future__ import annotations

import collections
import itertools
import mmap
import os
import threading
import warnings
import weakref
from typing import Any

try:  # POSIX only; elsewhere sharing is off and everything is pickled
    import _posixshmem  # type: ignore[import-not-found]  # CPython-private, no stubs
    import fcntl
except ImportError:  # pragma: no cover - Windows
    _posixshmem = None
    fcntl = None  # type: ignore[assignment]

from . import owner as _owner
from . import worker_parent
from .provisional import Provisional

DEFAULT_THRESHOLD = 1 << 20
"""Automatic sharing moves result arrays of at least this many bytes (1 MiB)."""


PREFIX = "ezf_"


# kept.py: keeps a mapping whose views are gone, and drops those of unlinked segments
keeper: Any = None
forgetter: Any = None


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


class _State:
    """This process's shared-memory state, in one object: a forked child starts it afresh.

    Who may touch what (each part has one owner module; the others call it):
    - ``owned``, ``free``, ``free_bytes``, ``idle``, ``active``, ``keep_until``, ``reaper``,
      ``wake_*``, ``ready``, ``counter``: registry.py (and its cleanup.py) only, under ``lock`` (the reaper
      thread reads ``idle``/``free`` sizes to pick its timeout: a stale read costs one wake-up).
      Other modules call its functions (`lend`, `adopt`, `stage_started`, ...).
    - ``released``: finalizers append (a deque append is atomic, no lock); registry drains it.
    - ``prov``: a `Provisional`, with its own leaf lock; finalizers never wait on it.
    - ``maps``: mapping.py, under ``map_lock`` when it makes one (`remember` for a new one).
    - ``kept*``: kept.py only, under ``map_lock``; finalizers append to ``kept_new``/``kept_gone``.
    - ``pid``, ``disabled``, ``epoch``: plain values other modules read; ``disabled`` is set
      by `_disable` (and SIGTERM), ``epoch`` by a worker's result scope (`next_epoch`).
    Lock order: ``map_lock`` before ``lock`` or ``fork_guard``; ``lock`` before ``fork_guard``;
    the provisional lock inside any of them, and nothing inside it.
    """

    def __init__(self) -> None:
        self.counter = itertools.count()
        self.disabled: str | None = None
        self.warned = False
        self.libc: Any = None
        self.after_fork()

    def after_fork(self) -> None:
        """Start afresh in a new process (what a forked child inherited is its parent's)."""
        self.pid = os.getpid()
        self.lock = threading.Lock()  # the registry; never taken by a finalizer
        self.fork_guard = threading.Lock()  # no fork while we hold a flocked fd not yet recorded
        self.map_lock = threading.Lock()  # one mapping per segment (taken before lock or fork_guard)
        self.maps: weakref.WeakValueDictionary[tuple[str, bool], Any] = weakref.WeakValueDictionary()
        self.owned: dict[str, _Seg] = {}  # segments this process owns (its pid comes first in the name)
        self.free: dict[int, list[str]] = {}  # size -> free owned segments (only while a run is active)
        self.free_bytes = 0
        self.idle: dict[str, tuple[float, float]] = {}  # owned, no holds: (next check, delay) until others let go
        self.released: collections.deque = collections.deque()  # names whose hold ended (finalizers append)
        self.prov = Provisional()  # made here for another owner (its own lock; provisional.py)
        self.active = 0  # running StageLinks: free segments are pooled while > 0 ...
        self.keep_until = 0.0  # ... and until this time (monotonic) after the last one ended
        self.epoch = 0  # a worker's result message count: which foreign views are current
        self.ready = False
        self.wake_r = self.wake_w = -1
        self.reaper: threading.Thread | None = None
        self.kept: collections.OrderedDict = collections.OrderedDict()  # mappings nothing views (kept.py)
        self.kept_new: collections.deque = collections.deque()  # ... as finalizers leave them
        self.kept_gone: collections.deque = collections.deque()  # names we unlinked: drop their mappings
        self.kept_bytes = 0
        self.kept_check = 0.0

    def remember(self, m: Any) -> None:
        """A new mapping made outside mapping.py (share()): the one views of its segment use."""
        with self.map_lock:
            self.maps[(m.name, m.private)] = m

    def next_epoch(self) -> None:
        """A worker sent a result message: views of foreign segments made before it are stale."""
        self.epoch += 1


S = _State()


def _np() -> Any:
    import numpy

    return numpy


def _owner_pid() -> int:
    """The process that will own what this one creates: a worker's parent, or itself."""
    return worker_parent() or S.pid


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
    if forgetter is not None:
        forgetter(name)
    try:
        _posixshmem.shm_unlink("/" + name)
    except (FileNotFoundError, AttributeError, TypeError):
        pass
    except OSError:
        pass


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
    S.disabled = reason


def _warn_once(reason: str) -> None:
    if S.warned:
        return
    S.warned = True
    warnings.warn(
        f"ezflow: shared memory cannot be used ({reason}); arrays, DataFrames and Arrow data are "
        "pickled through the pipe instead: correct, but slower. Give /dev/shm more room "
        "(Docker: run with --shm-size=2g or more), or pass share_arrays=False to "
        "stop trying.",
        SharedMemoryWarning,
        stacklevel=3,
    )


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
    if S.libc is None:
        import ctypes

        lib = ctypes.CDLL(None, use_errno=True)
        lib.mmap.restype = ctypes.c_void_p
        lib.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
        lib.munmap.restype = ctypes.c_int
        lib.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
        lib.madvise.restype = ctypes.c_int
        lib.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        S.libc = (lib, ctypes.get_errno, ctypes.c_void_p(-1).value)
    return S.libc


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

    def __init__(
        self, name: str, addr: int, length: int, private: bool, auto: bool, role: str, fd: int, ino: int = 0
    ) -> None:
        self.name = name
        self.addr = addr
        self.length = length
        self.private = private  # copy-on-write: our writes stay here
        self.auto = auto  # moved by automatic sharing (receivers map it copy-on-write)
        self.role = role  # "own" | "foreign" | "prov" (made here, owned by our parent)
        self.fd = fd  # foreign/prov: held open for the shared flock
        self.epoch = S.epoch
        self.__array_interface__ = {
            "data": (addr, False),
            "shape": (length,),
            "typestr": "|u1",
            "version": 3,
        }
        f = weakref.finalize(self, _unmapped, name, addr, length, fd, role, S.pid, private, ino)
        f.atexit = False  # views may outlive the interpreter's atexit: never unmap under them

    def root(self) -> Any:
        return _np().asarray(self)


def _unmapped(name: str, addr: int, length: int, fd: int, role: str, pid: int, private: bool, ino: int) -> None:
    # A finalizer: no locks here (it may run inside any code, on any thread).
    try:
        _unmap(name, addr, length, fd, role, pid, private, ino)
    except KeyboardInterrupt:
        # Ctrl-C landed while this finalizer ran in the main thread: Python would print it as an
        # exception ignored in a finalizer and go on, and the run would not stop. Deliver it again,
        # from another thread a moment later: delivered now, it would land in the finalizer's own
        # machinery, and be dropped there. (What was left undone here is undone by the owner's
        # end: it unlinks what it owns.)
        import _thread

        _thread.start_new_thread(_interrupt_soon, ())


def _interrupt_soon() -> None:
    import _thread
    import time

    time.sleep(0.005)
    _thread.interrupt_main()


def _unmap(name: str, addr: int, length: int, fd: int, role: str, pid: int, private: bool, ino: int) -> None:
    if pid != os.getpid():
        _munmap(addr, length)
        return  # an inherited copy in a forked child: only the child's mapping goes
    keep = keeper is not None and ino != 0  # kept for the segment's next use here (kept.py)
    if role == "own" and name not in S.owned:
        keep = False  # unnamed already (shutdown()): nothing will use it again
    if role == "prov":
        unlink, given = S.prov.unmapped(name)
        keep = keep and given  # else it is unlinked now, or soon
        if unlink:
            _unlink(name)
    elif role == "foreign" and keep:
        try:
            keep = os.fstat(fd).st_nlink > 0  # not if its owner unlinked it already
        except OSError:
            keep = False
    if keep:
        keeper(name, private, addr, length, ino)
    else:
        _munmap(addr, length)
    if role == "own":
        S.released.append(name)
        _wake()
        return
    try:
        if keep:  # the kept mapping holds the open file, and so the flock: unlock it
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)  # lets go of our shared flock
    except OSError:
        pass


def _wake() -> None:
    if S.wake_w >= 0:
        try:
            os.write(S.wake_w, b"\0")
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
