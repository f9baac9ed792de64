"""The registry's clean-up: what a crash left behind, found by name, and nothing left at exit, SIGTERM or fork.

The owner removes what a dead worker made but never sent (`_reap`); the first
use in any process removes the segments of owners that are dead
(`sweep_stale`); at exit, on SIGTERM and in a forked child this process leaves
nothing behind. It shares the registry's part of the state (registry.py) and
sits below it.
"""

from __future__ import annotations

import os

from .._core import sigterm as _sigterm
from .._core.forks import at_fork
from . import kept as _kept
from . import owner as _owner
from .segments import PREFIX, SHM_DIR, S, _alive, _listdir, _parse, _unlink


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
        if here and owner == S.pid:
            # this pid's earlier life (nothing of ours exists yet), else ours
            if not S.owned and not S.ready:
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
        if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit() and int(parts[0]) != S.pid:
            if _owner.judge(SHM_DIR, int(parts[0]), int(parts[1])) is False and _owner._lock_free(
                os.path.join(SHM_DIR, name)
            ):
                _unlink(name)
    return gone


def _reap(all_mine: bool = False) -> None:
    """Unlink segments named for this process that it never received: their creator died."""
    for name in _listdir():
        ids = _parse(name)
        if ids is None or ids[0] != S.pid:
            continue
        with S.lock:
            known = name in S.owned
        if known and not all_mine:
            continue
        if all_mine or (ids[1] != S.pid and not _alive(ids[1])):
            _unlink(name)


def _at_exit() -> None:
    """Leave nothing in /dev/shm: our segments, and what we made for our owner and kept."""
    with S.lock:
        names = list(S.owned)
        S.owned.clear()
        S.free.clear()
        prov = S.prov.take_all()
    for name in names + prov:
        _unlink(name)
    _reap(all_mine=True)
    _owner.release_liveness(SHM_DIR)
    _owner.stop_watcher()


def _on_sigterm() -> None:
    """Unlink every segment named for this owner now, taking no lock (the main thread may hold one)."""
    S.disabled = "the process is ending (SIGTERM)"  # other threads make no new segment from now on
    for name in _listdir():
        ids = _parse(name)
        if ids is not None and ids[0] == S.pid:
            _unlink(name)
    _owner.let_go_now(SHM_DIR, S.pid)


def _after_fork_child() -> None:
    for m in list(S.maps.values()):
        if m.fd >= 0:
            try:
                os.close(m.fd)  # the parent's descriptor and its flock stay the parent's
            except OSError:
                pass
    for fd in (S.wake_r, S.wake_w):
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
    _kept.unmap_inherited()
    _owner.after_fork_child()
    S.after_fork()


def _before_fork() -> None:
    S.fork_guard.acquire()


def _after_fork_parent() -> None:
    S.fork_guard.release()



_sigterm.register(lambda: bool(S.owned), _on_sigterm)
at_fork(before=_before_fork, after_in_parent=_after_fork_parent, after_in_child=_after_fork_child)
