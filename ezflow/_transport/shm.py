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

This module is the front of shared memory for the rest of ezflow; the
work is done in rooms of one job each:

    segments.py  names, making, writing, mapping; this process's state (S)
    registry.py  the owner's registry: used / lent / free, pooling, reaper
    cleanup.py   what dead owners left (by name); nothing left at exit, fork, SIGTERM
    mapping.py   views here: map a segment once, rebuild arrays from references
    share.py     share()
    pickler.py   the pickler that writes references (serialize builds on it)
    link.py      StageLink: a process stage's side of it, in the parent
    owner.py     liveness locks and the watcher that cleans up after a killed owner

The owner unlinks; a creator that is not the owner (a worker writing a
result) hands its segment over by sending it.
"""

from __future__ import annotations

from .cleanup import sweep_stale
from .link import StageLink, stage_threshold
from .pickler import by_value, engaged, result_scope
from .registry import flush_pool
from .segments import DEFAULT_THRESHOLD, PREFIX, SHM_DIR, SharedMemoryWarning
from .share import share

__all__ = [
    "DEFAULT_THRESHOLD",
    "PREFIX",
    "SHM_DIR",
    "SharedMemoryWarning",
    "StageLink",
    "by_value",
    "engaged",
    "flush_pool",
    "result_scope",
    "share",
    "stage_threshold",
    "sweep_stale",
]
