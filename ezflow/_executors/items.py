"""What every worker runs: apply one stage to one piece of items.

The same code runs in a worker process, a worker thread and (per item) an
async task, so every mode has the same semantics. A piece's outcome is
compact, one entry per item:

    kind      values[i]                     pass-through item
    map       fn(item)                      the item itself
    filter    bool(pred(item))              True (kept)
    flat_map  list(fn(item))                [item]

plus ``errs``: ``(position, exception, traceback_text, attempts)`` for each
failed item (its ``values`` slot is None). Items that are a `Failure` from
an earlier stage, or for which ``when`` is false, pass through untouched.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from .._core.errors import Failure, pack_exception

__all__ = ["Runtime", "build_runtime", "run_piece", "close_runtime"]

# A stage function that calls sys.exit() fails its item; it must not end the worker.
_CAUGHT = (Exception, SystemExit)


class Runtime:
    """A stage as a worker holds it: the ready callable and its rules."""

    __slots__ = ("kind", "call", "instance", "when", "retries", "retry_on", "backoff", "pack", "limiter")

    def __init__(
        self,
        kind: str,
        call: Callable[[Any], Any],
        instance: Any,
        when: Callable[[Any], bool] | None,
        retries: int,
        retry_on: tuple[type[BaseException], ...],
        backoff: float,
        pack: bool,
        limiter: Any = None,
    ) -> None:
        self.kind = kind
        self.call = call
        self.instance = instance
        self.when = when
        self.retries = retries
        self.retry_on = retry_on
        self.backoff = backoff
        self.pack = pack  # exceptions must be made picklable (process workers)
        self.limiter = limiter


def build_runtime(
    kind: str,
    fn: Any,
    is_class: bool,
    when: Callable[[Any], bool] | None,
    retries: int,
    retry_on: tuple[type[BaseException], ...],
    backoff: float,
    pack: bool,
    limiter: Any = None,
) -> Runtime:
    """Make a worker's runtime; a class stage is instantiated here, in the worker."""
    instance = fn() if is_class else None
    call = instance if is_class else fn
    if is_class and not callable(call):
        raise TypeError(f"instances of {fn.__name__} are not callable: define __call__(self, item)")
    return Runtime(kind, call, instance, when, retries, retry_on, backoff, pack, limiter)


def close_runtime(rt: Runtime) -> None:
    """Call a class stage's ``close()`` when its worker is done with it."""
    close = getattr(rt.instance, "close", None)
    if callable(close):
        close()


def _error(rt: Runtime, exc: BaseException, attempts: int, pos: int) -> tuple:
    if rt.pack:
        exc, tb = pack_exception(exc)
    else:
        import traceback

        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return (pos, exc, tb, attempts)


def _passthrough(kind: str, item: Any) -> Any:
    if kind == "map":
        return item
    if kind == "filter":
        return True
    return [item]


def _apply(rt: Runtime, item: Any) -> Any:
    if rt.limiter is not None:
        rt.limiter.acquire()
    out = rt.call(item)
    if rt.kind == "filter":
        return bool(out)
    if rt.kind == "flat_map":
        return list(out)
    return out


def run_piece(rt: Runtime, items: list, special: bool) -> tuple[list, list, float, int]:
    """Apply the stage to every item; return (values, errs, busy_seconds, retries).

    ``special`` says the piece may hold pass-through items, or the stage has
    rules (when, retries, a rate limit) that need the per-item path.
    """
    t0 = time.perf_counter()
    if not special and rt.kind == "map" and not rt.retries and rt.when is None and rt.limiter is None:
        values, errs = _fast_map(rt, items)
        return values, errs, time.perf_counter() - t0, 0
    values = []
    errs = []
    retried = 0
    kind = rt.kind
    when = rt.when
    for pos, item in enumerate(items):
        if item.__class__ is Failure:
            values.append(_passthrough(kind, item))
            continue
        if when is not None:
            try:
                go = when(item)
            except _CAUGHT as exc:
                errs.append(_error(rt, exc, 1, pos))
                values.append(None)
                continue
            if not go:
                values.append(_passthrough(kind, item))
                continue
        attempt = 1
        while True:
            try:
                values.append(_apply(rt, item))
                break
            except _CAUGHT as exc:
                if attempt <= rt.retries and isinstance(exc, rt.retry_on):
                    retried += 1
                    if rt.backoff:
                        time.sleep(rt.backoff * (2 ** (attempt - 1)))
                    attempt += 1
                    continue
                errs.append(_error(rt, exc, attempt, pos))
                values.append(None)
                break
    return values, errs, time.perf_counter() - t0, retried


def _fast_map(rt: Runtime, items: list) -> tuple[list, list]:
    # The hot loop of tiny tasks: no per-item checks. After an exception the
    # same iterator resumes with the next item, so no item runs twice.
    values: list = []
    errs: list = []
    append = values.append
    call = rt.call
    it = iter(items)
    while True:
        try:
            for item in it:
                append(call(item))
            return values, errs
        except _CAUGHT as exc:
            errs.append(_error(rt, exc, 1, len(values)))
            append(None)
