"""The owner's registry: which segments are used, lent or free; pooling and reaping.

    _create -> hold (used) --views gone, nobody else flocks it--> free (pooled while runs go on,
                                                                   POOL_LINGER s after) or unlinked
    lent to a worker for a result --adopted back--> used

A reaper thread frees segments whose last view died outside ezflow's calls
(finalizers only append to ``S.released`` and wake it: they take no lock).
Other modules change the registry only through its functions (`lend`,
`settle_lent`, `take_for_use`, `forget_owned`, `adopt`, `stage_started`,
`stage_ended`, `drain_released`), all under ``S.lock``. What a crash leaves
behind, and leaving nothing at exit, SIGTERM and fork, is cleanup.py's.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Iterator
from typing import Any

from .._core import sigterm as _sigterm
from . import kept as _kept
from . import owner as _owner
from . import when_flushing
from .cleanup import _at_exit, _reap, sweep_stale
from .segments import (
    POOL_LINGER,
    POOL_MAX,
    SHM_DIR,
    S,
    _check_space,
    _disable,
    _owner_pid,
    _posixshmem,
    _raise_fd_limit,
    _Seg,
    _size_class,
    _Unavailable,
    _unlink,
    _wake,
)

_local = threading.local()  # per thread: where `adopt` counts what comes back (`counting_adopted`)


def _init() -> None:
    """First use in this process: clean up after dead owners, arrange our own clean-up."""
    if S.ready:
        return
    with S.lock:
        if S.ready:
            return
        if _posixshmem is None:
            _disable("POSIX shared memory is not available on this platform")
        sweep_stale()
        S.ready = True
    _raise_fd_limit()
    import atexit
    from multiprocessing import util

    atexit.register(_at_exit)
    util.Finalize(None, _at_exit, exitpriority=100)  # worker processes skip atexit


def _create(nbytes: int) -> tuple[str, int, int]:
    """Make a new segment; return (name, size, fd open for writing)."""
    if S.disabled:
        raise _Unavailable(S.disabled)
    _init()
    size = _size_class(nbytes)
    _check_space(size)
    owner = _owner_pid()
    if owner == S.pid:  # ours to clean up, even if we are killed outright
        _owner.hold_liveness(SHM_DIR, owner)
        _owner.ensure_watcher(SHM_DIR, owner)
        _sigterm.arm()
    while True:
        name = _owner.segment_name(owner, S.pid, next(S.counter))
        try:
            fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
            break
        except FileExistsError:
            continue
        except OSError as exc:
            _disable(f"cannot create a segment in {SHM_DIR}: {exc.strerror or exc}")
            raise _Unavailable(S.disabled) from exc
    try:
        os.ftruncate(fd, size)
    except OSError as exc:
        os.close(fd)
        _unlink(name)
        raise _Unavailable(f"cannot size a segment: {exc.strerror or exc}") from exc
    return name, size, fd


def _hold_new(name: str, size: int) -> None:
    with S.lock:
        S.owned[name] = _Seg(size, "used", 1)
    _ensure_reaper()


def _release(names: Any) -> None:
    if names:
        S.released.extend(names)
        _wake()


def stage_started() -> None:
    """A process stage began: free segments are pooled while any runs."""
    with S.lock:
        S.active += 1


def stage_ended() -> None:
    """A process stage ended: after the last one, free segments stay POOL_LINGER s more."""
    with S.lock:
        S.active -= 1
        last = S.active == 0
        if last:
            S.keep_until = time.monotonic() + POOL_LINGER
    if last:  # the reaper ends the lingering
        _ensure_reaper()
        _wake()


def lend(size: int, count: int) -> list[str]:
    """Take up to `count` free segments of `size` to lend to a worker for its results."""
    out = []
    with S.lock:
        for _ in range(count):
            name = _take_free(size)
            if name is None:
                break
            S.owned[name].state = "lent"
            out.append(name)
    return out


def settle_lent(names: Any) -> None:
    """A piece is answered: lent segments it did not use for a result go back to the pool."""
    with S.lock:
        for name in names:
            seg = S.owned.get(name)
            if seg is not None and seg.state == "lent":  # else used for a result: adopted
                _pool_or_unlink(name, seg)


def take_for_use(size: int) -> str | None:
    """A free segment of `size` to use here, held once; None if the pool has none."""
    with S.lock:
        name = _take_free(size)
        if name is not None:
            S.owned[name].state = "used"
            S.owned[name].holds = 1
        return name


def owns(name: str) -> bool:
    """True while this process owns the segment (shutdown() unlinks and forgets them)."""
    return name in S.owned  # one dict lookup: atomic, as the old reads were


def forget_owned(name: str) -> None:
    """The caller unlinks this owned segment: stop tracking it."""
    with S.lock:
        S.owned.pop(name, None)


def drain_released() -> None:
    """Account for the holds that finalizers ended (cheap when there are none)."""
    if S.released:
        _drain()


@contextlib.contextmanager
def counting_adopted(sink: list[int]) -> Iterator[None]:
    """Within this block (this thread), the size of each segment adopted back is appended to `sink`."""
    _local.sink = sink
    try:
        yield
    finally:
        _local.sink = None


def adopt(name: str, size: int, hold: bool) -> None:
    """A segment of ours arrived (a worker's result, or one we lent): count this hold."""
    with S.lock:
        seg = S.owned.get(name)
        sink = getattr(_local, "sink", None)
        if seg is None:
            seg = S.owned[name] = _Seg(size, "used", 0)
            if sink is not None:
                sink.append(size)
        elif seg.state == "lent":
            seg.state = "used"
            if sink is not None:
                sink.append(seg.size)
        elif seg.state == "free":  # pragma: no cover - a reference outlived its holds
            if name in S.free.get(seg.size, ()):
                S.free[seg.size].remove(name)
                S.free_bytes -= seg.size
            seg.state = "used"
        S.idle.pop(name, None)
        if hold:
            seg.holds += 1
        elif seg.holds <= 0:
            S.idle[name] = (0.0, 0.0)
    _ensure_reaper()


def _take_free(size: int) -> str | None:
    names = S.free.get(size)
    while names:
        name = names.pop()
        seg = S.owned.get(name)
        if seg is not None and seg.state == "free":
            S.free_bytes -= seg.size
            return name
    return None


def _exclusive(name: str) -> bool | None:
    """True if no other process holds a shared flock on it; None if it is gone."""
    with S.fork_guard:  # the descriptor it opens must not leak into a fork
        return _owner._lock_free(os.path.join(SHM_DIR, name))


def _drain() -> None:
    """Account for ended holds; pool or unlink segments nobody views any more."""
    if not S.released and not S.idle:
        return
    now = time.monotonic()
    with S.lock:
        while S.released:
            name = S.released.popleft()
            seg = S.owned.get(name)
            if seg is None:
                continue
            seg.holds -= 1
            if seg.holds <= 0 and seg.state == "used":
                S.idle[name] = (0.0, 0.0)
        for name, (when, delay) in list(S.idle.items()):
            if when > now:
                continue
            seg = S.owned.get(name)
            if seg is None or seg.holds > 0 or seg.state != "used":
                S.idle.pop(name, None)
                continue
            ok = _exclusive(name)
            if ok is False:  # another process still views it: look again later
                delay = min(0.25, max(0.01, 2 * delay))
                S.idle[name] = (now + delay, delay)
                continue
            S.idle.pop(name, None)
            _pool_or_unlink(name, seg, keep=bool(ok))


def _pool_or_unlink(name: str, seg: _Seg, keep: bool = True) -> None:
    """A segment nobody uses: keep it for reuse while pooling has room, else remove it (holding _lock)."""
    if keep and _pooling() and S.free_bytes + seg.size <= _pool_max():
        seg.state = "free"
        S.free.setdefault(seg.size, []).append(name)
        S.free_bytes += seg.size
    else:
        del S.owned[name]
        _unlink(name)


def _pooling() -> bool:
    return S.active > 0 or time.monotonic() < S.keep_until


def _pool_max() -> int:
    try:
        st = os.statvfs(SHM_DIR)
        return min(POOL_MAX, st.f_blocks * st.f_frsize // 4)
    except OSError:
        return POOL_MAX


def flush_pool() -> None:
    """Unlink the free segments kept for reuse (``ezflow.shutdown()``)."""
    S.keep_until = 0.0
    _reap()  # results that stopped workers made for us and never sent
    _flush_pool()
    _unname_held()
    with S.map_lock:
        _kept.settle()  # the mappings kept of what we unlinked
    _let_go()


def _unname_held() -> None:
    """Take out of /dev/shm the names of segments only views here still hold (``shutdown()``).

    Results the caller keeps (a loop variable after an interrupted cell, say)
    stay valid: a mapping outlives its name, and the memory goes with the
    last view. Without a name nothing can reference them any more, so a
    later run sends their data again (`pickler._may_reference`). Not while
    a run is active (a reference may be on its way to a worker), and not for
    ``share()``d arrays: those are one memory in every process on purpose.
    """
    if S.active:
        return
    for (name, _private), m in list(S.maps.items()):
        if m.role != "own" or not m.auto:
            continue
        with S.lock:
            seg = S.owned.get(name)
            if seg is None or seg.state != "used":
                continue
        if _exclusive(name) is False:
            continue  # another process views it: its owner's usual clean-up decides
        with S.lock:
            S.owned.pop(name, None)
            S.idle.pop(name, None)
        _unlink(name)


def _let_go() -> None:
    """Owning nothing any more: drop the liveness lock file and the watcher process."""
    with S.lock:
        holding = bool(S.owned) or S.prov.holding()
    if not holding:
        _owner.release_liveness(SHM_DIR)
        _owner.stop_watcher()
        _sigterm.disarm()


def _flush_pool() -> None:
    with S.lock:
        for names in S.free.values():
            for name in names:
                seg = S.owned.get(name)
                if seg is not None and seg.state == "free":
                    del S.owned[name]
                    _unlink(name)
        S.free.clear()
        S.free_bytes = 0


def _ensure_reaper() -> None:
    """Start the thread that frees segments whose last view died outside ezflow's calls."""
    if S.reaper is not None:
        return
    with S.lock:
        if S.reaper is not None:
            return
        r, w = os.pipe()
        os.set_blocking(w, False)
        S.wake_r, S.wake_w = r, w
        S.reaper = threading.Thread(target=_reap_loop, args=(r,), name="ezflow-shm-reaper", daemon=True)
        S.reaper.start()


def _reap_loop(r: int) -> None:
    while True:
        timeout = None
        if S.idle:
            soonest = min(t for t, _ in tuple(S.idle.values()))
            timeout = max(0.005, soonest - time.monotonic())
        if S.free and S.active == 0:
            linger = max(0.005, S.keep_until - time.monotonic())
            timeout = linger if timeout is None else min(timeout, linger)
        try:
            ready, _, _ = select.select([r], [], [], timeout)
            if ready:
                os.read(r, 4096)
        except (OSError, ValueError):
            return
        if r != S.wake_r:
            return  # forked or shut down
        try:
            _drain()
            if S.free and not _pooling():
                _flush_pool()
            if not S.owned:
                _let_go()
            for name in S.prov.take_unlinks():  # what finalizers could not unlink themselves
                _unlink(name)
            if _kept.has_gone():  # mappings kept of segments we unlinked: their memory goes now
                with S.map_lock:
                    _kept.settle()
        except Exception:  # pragma: no cover - keep freeing whatever happens
            pass


when_flushing(flush_pool)
