"""What every worker runs: apply one stage to one piece of items.

    steps(rt, items)  --(CALL, item)-->    runner: call fn(item) its own way
    (the rules, once)  <--(ok, value)--     (sync: run_piece here; async: aio.py)
                      --(SLEEP, secs)-->   runner: time.sleep / asyncio.sleep
                      return (values, errs, retried)

The per-item rules (``when``, pass-through of earlier failures, rate,
retries, retry_on, backoff) are written once, in the `steps` generator;
a runner supplies only how to call, sleep and wait (the async runner adds
the timeout to its call). Retry decisions are `rules.ItemRules`'s, the same
object the parent asks about items it saw time out or die. A piece's
outcome is compact, one entry per item:

    kind      values[i]                     pass-through item
    map       fn(item)                      the item itself
    filter    bool(pred(item))              True (kept)
    flat_map  list(fn(item))                [item]

plus ``errs``: an `ItemError` (position, exception, traceback text, attempts) for each
failed item (its ``values`` slot is None). Items that are a `Failure` from
an earlier stage, or for which ``when`` is false, pass through untouched.
A plain map with no rules takes `_fast_map`, which adds nothing per item.
A piece's results sent back while it runs (in parts) are `reporting`'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import Any, TypeVar

from .._core.errors import Failure, pack_exception
from .._plan.chain import Chain
from .limits import TokenBucket
from .port import ItemError
from .rules import ItemRules
from .wire import StageSetup

__all__ = [
    "CALL",
    "PARTIAL_SECONDS",
    "SLEEP",
    "Report",
    "Runtime",
    "build_runtime",
    "build_stage",
    "call_item",
    "close_runtime",
    "error_at",
    "item_failed",
    "report_each",
    "run_items",
    "steps",
]

# A stage function that calls sys.exit() fails its item; it must not end the worker.
_CAUGHT = (Exception, SystemExit)

CALL = 0  # step (CALL, item): the runner calls the stage on item, sends back (ok, value_or_exception)
SLEEP = 1  # step (SLEEP, seconds): the runner waits, sends back None

Step = tuple[int, Any]
Outcome = tuple[list, list, int]  # values, errs, retried
Report = Callable[[list, list, float, int], None]  # values, errs, busy, retries of the items done so far

# A worker running a long piece sends back what is done at least this often
# (~20 messages a second at most): results follow completion, not the cut.
PARTIAL_SECONDS = 0.05

_REPORT_EACH = "__ezflow_report_each__"
F = TypeVar("F", bound=Callable[..., Any])


def report_each(fn: F) -> F:
    """Mark a stage function whose every result goes back as soon as it is done (ezflow.Executor's calls).

    A piece of several calls then never holds a finished call's result while
    a later call in it runs, however long that one turns out to be.
    """
    setattr(fn, _REPORT_EACH, True)
    return fn


class Runtime:
    """A stage as a worker holds it: the ready callable and its rules."""

    __slots__ = ("call", "chain", "instance", "kind", "limiter", "marker", "pack", "report_after", "rules", "when")

    def __init__(
        self,
        kind: str,
        call: Callable[[Any], Any],
        *,
        instance: Any,
        when: Callable[[Any], bool] | None,
        rules: ItemRules,
        pack: bool,
        limiter: TokenBucket | None = None,
    ) -> None:
        self.kind = kind
        self.call = call
        self.instance = instance
        self.when = when
        self.rules = rules
        self.pack = pack  # exceptions must be made picklable (process and dask workers)
        self.limiter = limiter
        self.marker: Any = None  # a process worker's deadline.Marker when the stage has a time limit
        # how long a finished result may wait for the rest of its piece (see `report_each`)
        self.report_after = 0.0 if getattr(call, _REPORT_EACH, False) else PARTIAL_SECONDS
        # fused stages (plan.chain): an error names the step, busy time is split among them
        self.chain: Chain | None = call if isinstance(call, Chain) else None

    @property
    def retries(self) -> int:
        return self.rules.retries


def build_runtime(
    kind: str,
    fn: Any,
    is_class: bool,
    when: Callable[[Any], bool] | None,
    retries: int,
    retry_on: tuple[type[BaseException], ...],
    backoff: float,
    pack: bool,
    limiter: TokenBucket | None = None,
    item_timeout: float | None = None,
) -> Runtime:
    """Make a worker's runtime; a class stage is instantiated here, in the worker."""
    instance = fn() if is_class else None
    call = instance if is_class else fn
    if not callable(call):
        raise TypeError(f"instances of {fn.__name__} are not callable: define __call__(self, item)")
    rules = ItemRules(retries, retry_on, backoff, item_timeout)
    return Runtime(kind, call, instance=instance, when=when, rules=rules, pack=pack, limiter=limiter)


def build_stage(setup: StageSetup) -> Runtime:
    """Build the runtime a `setup_payload` describes (in a worker, or on a dask worker)."""
    s = setup
    return build_runtime(
        s.kind, s.fn, s.is_class, s.when, s.retries, s.retry_on, s.backoff, pack=True, limiter=s.limiter
    )


def close_runtime(rt: Runtime) -> None:
    """Call a class stage's ``close()`` when its worker is done with it."""
    close = getattr(rt.instance, "close", None)
    if callable(close):
        close()


def item_failed(exc: BaseException) -> bool:
    """Return True if an exception an item raised is that item's failure.

    Everything is, but ``KeyboardInterrupt``: it stops the run (see `rules`).
    """
    return not isinstance(exc, KeyboardInterrupt)


def error_at(rt: Runtime, exc: BaseException, attempts: int, pos: int) -> ItemError:
    """The record of an item that failed at `pos` of its piece after `attempts` tries."""
    if rt.pack:
        exc, tb = pack_exception(exc)
    else:
        import traceback

        # traceback survives an exception whose __str__ raises ("<exception str() failed>")
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if rt.chain is not None:
        step, item = rt.chain.take_failure()
        return ItemError(pos, exc, tb, attempts, step, item if step else None)
    return ItemError(pos, exc, tb, attempts)


def _passthrough(kind: str, item: Any) -> Any:
    if kind == "map":
        return item
    if kind == "filter":
        return True
    return [item]


def shape(kind: str, out: Any) -> Any:
    """Turn what the stage function returned into the stage's value."""
    if kind == "filter":
        return bool(out)
    if kind == "flat_map":
        return list(out)
    return out


def steps(rt: Runtime, items: list, tried: int = 0) -> Generator[Step, Any, Outcome]:
    """The per-item rules for one piece, as steps a runner drives.

    ``tried`` is how many tries the piece's (lone) item already had: the
    parent gives back a timed-out or orphaned item with its count, so
    ``retries`` bounds the tries wherever they failed.
    """
    values: list = []
    errs: list = []
    retried = 0
    kind = rt.kind
    when = rt.when
    rules = rt.rules
    limiter = rt.limiter
    marker = rt.marker  # a time limit: say which attempt runs from when (deadline.py)
    for pos, item in enumerate(items):
        if item.__class__ is Failure:
            values.append(_passthrough(kind, item))
            continue
        if when is not None:
            try:
                go = when(item)
            except BaseException as exc:
                if not item_failed(exc):
                    raise
                errs.append(error_at(rt, exc, tried + 1, pos))
                values.append(None)
                continue
            if not go:
                values.append(_passthrough(kind, item))
                continue
        attempt = tried + 1
        if tried:
            retried += 1  # this try is a retry the parent asked for
        while True:
            if limiter is not None:
                wait = limiter.reserve()
                if wait > 0:
                    if marker is not None:
                        marker.idle()  # waiting for the rate is not the item's time
                    yield (SLEEP, wait)
            if marker is not None:
                marker.mark(pos, attempt)
            ok, out = yield (CALL, item)
            if ok:
                values.append(out)
                break
            delay = rules.should_retry(out, attempt)
            if delay is None:
                errs.append(error_at(rt, out, attempt, pos))
                values.append(None)
                break
            retried += 1
            if delay > 0:
                if marker is not None:
                    marker.idle()  # nor is the backoff
                yield (SLEEP, delay)
            attempt += 1
    return values, errs, retried


def call_item(rt: Runtime, item: Any) -> tuple[bool, Any]:
    """The sync runner's call: ``(True, value)`` or ``(False, the item's exception)``."""
    try:
        return True, shape(rt.kind, rt.call(item))
    except BaseException as exc:
        if not item_failed(exc):
            raise
        return False, exc


def run_items(rt: Runtime, items: list, special: bool, tried: int) -> tuple[list, list, float, int]:
    """Apply the stage to every item of a piece at once; return (values, errs, busy_seconds, retries)."""
    t0 = time.perf_counter()
    plain = rt.kind == "map" and not rt.rules.retries and rt.when is None and rt.limiter is None
    try:
        if plain and not special and not tried:
            values, errs = _fast_map(rt, items) if rt.marker is None else _fast_map_marked(rt, items)
            return values, errs, time.perf_counter() - t0, 0
        gen = steps(rt, items, tried)
        try:
            step = next(gen)
            while True:
                if step[0] == CALL:
                    step = gen.send(call_item(rt, step[1]))
                else:
                    time.sleep(step[1])
                    step = gen.send(None)
        except StopIteration as stop:
            values, errs, retried = stop.value
        return values, errs, time.perf_counter() - t0, retried
    finally:
        if rt.marker is not None:
            rt.marker.idle()


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
        except BaseException as exc:
            if not item_failed(exc):
                raise
            errs.append(error_at(rt, exc, 1, len(values)))
            append(None)


def _fast_map_marked(rt: Runtime, items: list) -> tuple[list, list]:
    # _fast_map with a time limit: each item's position goes to the worker's slot
    # (deadline.py), one store of a small int an item, inlined.
    values: list = []
    errs: list = []
    append = values.append
    call = rt.call
    rt.marker.mark(0, 1)  # attempt 1 (a plain map does not retry)
    view = rt.marker.view
    it = enumerate(items)
    while True:
        try:
            for pos, item in it:
                view[1] = pos
                append(call(item))
            return values, errs
        except BaseException as exc:
            if not item_failed(exc):
                raise
            errs.append(error_at(rt, exc, 1, len(values)))
            append(None)
