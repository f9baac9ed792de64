"""The plan: a flow is its source plus a tuple of frozen `StageSpec` records.

Specs are plain data, validated when built (so a typo fails at the call
that made it, not deep inside a worker); executors turn them into workers
and queues only when the flow runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._core.env import NUM_CPUS, NUM_THREADS
from .._core.procs import START_METHODS
from .._core.record import record
from .lifespan import check_lifespan
from .options import MAX_SECONDS, check_number, check_support
from .stage_options import StageOptions, declared, refuse_keywords

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["ERRORS", "KINDS", "MODES", "StageSpec", "make_stage"]

MODES = ("process", "thread", "async")
ERRORS = ("raise", "return", "skip")
KINDS = ("map", "filter", "flat_map", "batch", "unbatch")
DEFAULT_ASYNC_WORKERS = 16


@record(frozen=True)
class StageSpec:
    """One stage of a flow, as plain data."""

    kind: str
    fn: Any = None
    name: str = ""
    workers: int = 1
    mode: str = "inline"  # "inline" for batch/unbatch, run in the parent
    when: Callable[[Any], bool] | None = None
    errors: str = "raise"
    ordered: bool = True
    retries: int = 0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    backoff: float = 0.0
    item_timeout: float | None = None  # seconds per attempt of one item
    rate: float | None = None
    burst: int = 1
    chunksize: int | None = None
    start_method: str | None = None
    backend: Any = None
    share_arrays: bool | int | None = None
    size: int = 0  # batch size
    batch_timeout: float | None = None
    is_class: bool = False
    max_tasks_per_worker: int | None = None  # replace a worker process after this many items
    max_memory: int | None = None  # bytes of RSS per worker process (the memory guard)
    # workers=None on a process stage: `workers` is then the most it may get, and in a
    # flow of several such stages the run's CPU budget decides how many run at a time
    auto_workers: bool = False
    # ezflow.Executor's stage: a piece goes to a worker process only when it holds none, so a
    # call starts as soon as any worker is free and never waits in a busy worker's queue
    start_when_free: bool = False
    # workers forked for this stage alone, after the caller set up what they inherit, and
    # stopped at its end (never warm: they hold the caller's memory as it was): ezflow.apply
    private_pool: bool = False


_CO_COROUTINE = 0x80  # inspect.CO_COROUTINE, without importing inspect at start-up


def _is_coroutine_function(fn: Any) -> bool:
    code = getattr(getattr(fn, "__func__", fn), "__code__", None)
    return code is not None and bool(code.co_flags & _CO_COROUTINE)


def _fn_name(fn: Any) -> str:
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return "lambda" if name == "<lambda>" else name


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


def _check_timeout(name: str, value: Any) -> float | None:
    # float("inf") means no timeout, as None does
    return check_number(name, value, low=0.0, low_ok=False, unit="seconds", inf_is_none=True)


def make_stage(kind: str, fn: Any, **options: Unpack[StageOptions]) -> StageSpec:
    """Validate a stage's options and return its spec.

    Options not given take their declared defaults (`StageOptions`).

    Raises:
        TypeError, ValueError: an option is unknown, of the wrong type or out
            of range; the message names the option and the allowed values.
    """
    refuse_keywords(f"Flow.{kind}", options, StageOptions)
    o: dict[str, Any] = {name: opt.default for name, opt in declared(StageOptions).items()}
    o.update(options)
    if not callable(fn):
        raise TypeError(f"{kind}() needs a callable, got {type(fn).__name__} {fn!r}")
    if o["when"] is not None and not callable(o["when"]):
        raise TypeError(f"when must be a callable predicate or None, got {o['when']!r}")
    is_class = isinstance(fn, type)
    is_coro = _is_coroutine_function(fn) or (
        is_class and _is_coroutine_function(fn.__call__)
    )
    mode = o["mode"]
    if mode is None:
        mode = o["mode"] = "async" if is_coro else "process"
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}; got {mode!r}")
    if o["errors"] not in ERRORS:
        raise ValueError(f"errors must be one of {', '.join(map(repr, ERRORS))}; got {o['errors']!r}")
    auto_workers = o["workers"] is None and mode == "process" and o["backend"] is None
    if o["workers"] is None:
        o["workers"] = {"process": NUM_CPUS, "thread": NUM_THREADS}.get(mode, DEFAULT_ASYNC_WORKERS)
    _check_int("workers", o["workers"], 1)
    _check_int("retries", o["retries"], 0)
    if o["chunksize"] is not None:
        _check_int("chunksize", o["chunksize"], 1)
    retry_on = o["retry_on"]
    retry_on = o["retry_on"] = (retry_on,) if isinstance(retry_on, type) else tuple(retry_on)
    if not all(isinstance(t, type) and issubclass(t, BaseException) for t in retry_on):
        raise TypeError(f"retry_on must be exception types, got {retry_on!r}")
    if o["backoff"] is None:
        raise TypeError("backoff must be a number of seconds >= 0, got None")
    o["backoff"] = check_number("backoff", o["backoff"], low=0.0, low_ok=True, unit="seconds") or 0.0
    o["item_timeout"] = _check_timeout("item_timeout", o["item_timeout"])
    # float("inf") means no limit; the slowest rate is one call per MAX_SECONDS
    o["rate"] = check_number(
        "rate", o["rate"], low=1 / MAX_SECONDS, low_ok=True, unit="calls per second", high=None, inf_is_none=True
    )
    _check_int("burst", o["burst"], 1)
    _check_start_method(o["start_method"])
    share = o["share_arrays"]
    if share is not None and not isinstance(share, bool) and (not isinstance(share, int) or share < 0):
        raise ValueError(
            "share_arrays must be True, False, None (the default: arrays of 1 MiB or more) "
            f"or a threshold in bytes >= 0; got {share!r}"
        )
    if o["name"] is None:
        o["name"] = _fn_name(fn)
    if not isinstance(o["name"], str) or not o["name"]:
        raise ValueError(f"name must be a non-empty string, got {o['name']!r}")
    o["max_tasks_per_worker"], o["max_memory"] = check_lifespan(o["max_tasks_per_worker"], o["max_memory"])
    o["ordered"] = bool(o["ordered"])
    check_support(
        o["name"],
        "dask" if o["backend"] is not None else mode,
        {
            "item_timeout": o["item_timeout"] is not None,
            "rate, burst": o["rate"] is not None,
            "coroutine function": is_coro,
            "max_tasks_per_worker": o["max_tasks_per_worker"] is not None,
            "max_memory": o["max_memory"] is not None,
        },
    )
    return StageSpec(kind=kind, fn=fn, is_class=is_class, auto_workers=auto_workers, **o)


def _check_start_method(start_method: str | None) -> None:
    if start_method is None:
        return
    if start_method not in START_METHODS:
        raise ValueError(
            f"start_method must be None or one of {', '.join(map(repr, START_METHODS))}; got {start_method!r}"
        )
    import multiprocessing

    if start_method not in multiprocessing.get_all_start_methods():
        raise ValueError(f"start_method {start_method!r} is not available on this platform")


def make_batch(size: int, timeout: float | None, name: str | None) -> StageSpec:
    """Validate a batch stage's options and return its spec."""
    _check_int("batch size", size, 1)
    timeout = _check_timeout("batch timeout", timeout)
    return StageSpec(kind="batch", name=name or "batch", size=size, batch_timeout=timeout)


def make_unbatch(name: str | None) -> StageSpec:
    """Return the spec of a stage that flattens lists into their items."""
    return StageSpec(kind="unbatch", name=name or "unbatch")
