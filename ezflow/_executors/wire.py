"""The worker protocol: one named record per message between a process stage and its workers.

    parent (process.py, recycle.py, pool.py)          worker process (worker.py)
    Setup(token, payload, want_ready, timed) ----->   build the stage (a class: instantiated here)
                                             <-----   Ready(token) if want_ready | SetupFailed(token, error, tb)
    Task(piece_id, token, items, special,    ----->   run_piece()
         tried, share)                       <-----   Partial(piece_id, values, errs, busy, retries)*
                                                      (the first items' results, while the rest run)
                                             <-----   Result(piece_id, values, errs, busy, retries)
                                             <-----   Unloadable(error, tb): the task did not unpickle here
    Teardown(token, want_reply)              ----->   close() a class stage
                                             <-----   Closed(token, error, tb) if want_reply
    Exit()                                   ----->   return

Every message is one pickle on the worker's pipe, answered in order (one
answer per task, after any number of partial ones: a Partial carries the
results of the next items of the task being run, a Result those of the
rest). Records are NamedTuples, built and read by field name and
told apart by type (``type(msg) is Result``). On the pipe they travel as
plain tuples tagged with a small int (`encode` / `decode`): pickling a
record by its class costs an import lookup at each end, about 2 µs a
message, while the tag came out at +0.8 µs for a task, nothing for a
result, and 7 bytes shorter than the old string opcodes. A failed item is a
`port.ItemError` inside Result.errs and does pickle by its class: about 1 µs
more per failed item (next to ~100 µs for its traceback), nothing for a
clean piece. ``token`` names a stage: one pool of workers serves stage after
stage, and a worker keeps one runtime per token.
"""

from typing import Any, NamedTuple

from .port import ItemError

__all__ = [
    "Closed",
    "Exit",
    "Partial",
    "Ready",
    "Result",
    "Setup",
    "SetupFailed",
    "StageSetup",
    "Task",
    "Teardown",
    "Unloadable",
    "answered_piece",
    "decode",
    "encode",
]


class StageSetup(NamedTuple):
    """What a worker needs to build a stage: Setup's payload, pickled once per stage (by its class)."""

    kind: str  # "map" | "filter" | "flat_map"
    fn: Any
    is_class: bool
    when: Any  # Callable[[Any], bool] | None
    retries: int
    retry_on: tuple[type[BaseException], ...]
    backoff: float
    limiter: Any  # a TokenBucket shared by the stage's workers, or None


class Setup(NamedTuple):
    """Build stage `token` from `payload` (`worker.setup_payload`); answer Ready if `want_ready`."""

    token: int
    payload: bytes
    want_ready: bool  # a class is built before input is read: the parent waits for it
    timed: bool = False  # the stage has a time limit per item: mark each attempt in the slot (deadline.py)


class Ready(NamedTuple):
    """Stage `token` is built."""

    token: int


class SetupFailed(NamedTuple):
    """Stage `token` could not be built: the exception and the worker's traceback text."""

    token: int
    error: BaseException
    tb: str


class Task(NamedTuple):
    """Run `items` (a piece) through stage `token`."""

    piece_id: int
    token: int
    items: list[Any]
    special: bool  # the items may hold Failure records from an earlier stage
    tried: int  # attempts a lone item already had (a retried piece)
    share: tuple[Any, ...] | None = None  # how the result may use shared memory (the stage link's options)


class Result(NamedTuple):
    """The answer to a task: one value per item; each failed item an `ItemError` in `errs`."""

    piece_id: int
    values: list[Any]
    errs: list[ItemError]
    busy: float | tuple[float, ...]  # seconds of work (fused stages, plan.chain: per step)
    retries: int


class Partial(NamedTuple):
    """Results of the task's next items, sent while it runs on (`items.PARTIAL_SECONDS`); the Result has the rest."""

    piece_id: int
    values: list[Any]
    errs: list[ItemError]
    busy: float | tuple[float, ...]
    retries: int


class Unloadable(NamedTuple):
    """The task that was due next did not unpickle in the worker: why."""

    error: BaseException
    tb: str


class Teardown(NamedTuple):
    """Stage `token` is done here: close it (a class stage's close()); answer Closed if `want_reply`."""

    token: int
    want_reply: bool


class Closed(NamedTuple):
    """Stage `token` closed; `error` is what its close() raised, or None."""

    token: int
    error: BaseException | None
    tb: str


class Exit(NamedTuple):
    """Leave: the pool is shutting down."""


Message = Setup | Ready | SetupFailed | Task | Result | Unloadable | Teardown | Closed | Exit | Partial

_KINDS: tuple[type[Any], ...] = (Setup, Ready, SetupFailed, Task, Result, Unloadable, Teardown, Closed, Exit, Partial)
_TAG = {kind: tag for tag, kind in enumerate(_KINDS)}
_RESULT = _TAG[Result]


def encode(msg: Message) -> tuple[Any, ...]:
    """Return the tuple that carries `msg` on the pipe: its tag, then its fields."""
    return (_TAG[type(msg)], *msg)


def decode(raw: tuple[Any, ...]) -> Any:
    """Return the record `raw` (from `encode`, unpickled) carries."""
    return _KINDS[raw[0]]._make(raw[1:])


def answered_piece(raw: tuple[Any, ...]) -> int | None:
    """The piece an encoded message answers if it is a Result, else None (for the stage link)."""
    return raw[1] if raw[0] == _RESULT else None
