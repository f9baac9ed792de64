"""What runs on a dask worker for a dask stage: build the stage once, run pieces, close it.

    _setup_remote(token, payload) -- builds the runtime now (a class: once per dask worker)
    _run_remote(token, payload, item bytes) -- run_piece() on the cached runtime --> result bytes
    _teardown_remote(token) -- closes this worker's runtime of the stage

These functions travel to the workers by reference (dask pickles them by
name), so this module must import nothing heavy: no dask at import time.
"""

from __future__ import annotations

import collections
import threading
from typing import Any

from .._core.errors import describe, pack_exception, short_repr
from .._transport.serialize import dumps, loads
from .items import Runtime, build_stage, close_runtime
from .reporting import run_piece
from .wire import StageSetup

__all__ = ["_SetupFailed", "_hold", "_run_remote", "_setup_remote", "_teardown_remote"]

_worker_lock = threading.Lock()
_runtimes: dict[tuple[str, str], Runtime] = {}  # (worker address, stage token) -> runtime
# Tokens of stages that ended here: a piece still queued on this worker after a
# cancel must not build the stage again (it would never be closed).
_closed: collections.OrderedDict[str, None] = collections.OrderedDict()
_CLOSED_KEEP = 1024


class _SetupFailed(RuntimeError):
    """The stage could not be built on a dask worker (message says why)."""


def _hold(payload: bytes) -> bytes:
    """Return the stage payload: a task, so dask can recompute it if lost."""
    return payload


def _worker_address() -> str:
    from distributed import get_worker

    return get_worker().address


def _runtime(token: str, payload: bytes) -> Runtime | None:
    key = (_worker_address(), token)
    with _worker_lock:  # one build per worker, even with many threads
        if token in _closed:
            return None
        rt = _runtimes.get(key)
        if rt is not None:
            return rt
        try:
            setup: StageSetup = loads(payload)
        except BaseException as exc:
            raise _SetupFailed(f"loading the stage on a dask worker raised {describe(exc)}") from exc
        try:
            rt = build_stage(setup)
        except BaseException as exc:
            what = short_repr(setup.fn) + ("()" if setup.is_class else "")
            raise _SetupFailed(f"{what} raised {describe(exc)}") from exc
        _runtimes[key] = rt
        return rt


def _setup_remote(token: str, payload: bytes) -> tuple[BaseException, str] | None:
    """Build the stage on this worker now; return the packed error if it fails."""
    try:
        _runtime(token, payload)
    except _SetupFailed as exc:
        return pack_exception(exc.__cause__ or exc)[0], str(exc)
    return None


def _run_remote(token: str, payload: bytes, data: bytes, special: bool, tried: int = 0) -> bytes | None:
    """Run one piece on this worker; return (values, errs, busy, retries) as bytes.

    ``tried``: the tries a lone item already had (its workers kept dying).
    """
    rt = _runtime(token, payload)
    if rt is None:
        return None  # the stage was cancelled while this piece waited in the worker
    values, errs, busy, retries = run_piece(rt, loads(data), special, tried)
    try:
        return dumps((values, errs, busy, retries))
    except Exception:
        from .worker import sendable_result

        values, errs = sendable_result(values, errs)  # what cannot travel fails alone
        return dumps((values, errs, busy, retries))


def _teardown_remote(token: str, dask_worker: Any = None) -> tuple[BaseException, str] | None:
    """Close this worker's runtime of the stage; return the packed error of close()."""
    with _worker_lock:
        _closed[token] = None
        while len(_closed) > _CLOSED_KEEP:
            _closed.popitem(last=False)
        rt = _runtimes.pop((dask_worker.address, token), None)
    if rt is None:
        return None
    try:
        close_runtime(rt)
    except BaseException as exc:
        return pack_exception(exc)
    return None
