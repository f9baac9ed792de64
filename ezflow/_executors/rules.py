"""Per-item rules, written once for every mode: when to retry, how long to wait.

    worker (thread / process / dask / async)        parent (process, thread watchdog)
    items.steps() --failed call--> should_retry()    lost item (ItemTimeout, WorkerDied)
                                        ^                     |
                                        +---- on_lost() ------+  give the piece back, or fail it

An item's error is decided here, wherever it was seen: raised by the
function in a worker, or detected by the parent (a timeout that stopped
the worker, a worker that died). The same rule applies to all of them:

* An item is tried at most ``1 + retries`` times in all. A try that fails
  with an error that is an instance of one of ``retry_on`` (default
  ``(Exception,)``) is tried again while tries remain, after
  ``backoff * 2**(n-1)`` seconds (n = the tries so far).
* `ItemTimeout` (the item overran ``item_timeout``) and `WorkerDied` (its worker
  process ended while running it, e.g. a segfault, ``os._exit`` or a kill by
  the OS) are errors like any other: both are `Exception` subclasses, so the
  default ``retry_on`` retries them, and ``retry_on=(ConnectionError,)``
  does not. A death is retried by default even though an out-of-memory kill
  (SIGKILL) will likely kill again: ezflow cannot tell an OOM kill from
  another SIGKILL, each retry costs one worker restart and at most
  ``retries`` of them, and ``retry_on`` is the one place the user states
  what is worth retrying. To retry raised errors but not deaths, pass
  ``retry_on`` without `WorkerDied`, e.g. ``retry_on=(OSError, ValueError)``.
* What counts as an item's failure: any exception the item raises, including
  ``SystemExit`` and ``asyncio.CancelledError`` raised by the item itself
  (ezflow cancelling a run is not an item's failure). ``KeyboardInterrupt``
  is not an item's failure: it stops the run.
* ``Failure.attempts`` counts every try, in the worker and in the parent.
  When a worker dies holding a piece of several items, nothing says which
  item killed it: each is first re-run alone, and that re-run is not a
  retry; the item that kills again, alone, is then judged by these rules.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from .._core.errors import ItemTimeout
from .._plan.options import MAX_SECONDS
from .port import ItemError

__all__ = ["ItemRules", "LostPiece"]


class LostPiece(Protocol):
    """What `ItemRules.on_lost` needs of a piece: its items and the tries they used."""

    items: list
    attempts: int

    def split(self, n: int) -> tuple[LostPiece, LostPiece]: ...


class ItemRules:
    """A stage's retry and timeout rules; the one place they are decided."""

    __slots__ = ("backoff", "item_timeout", "retries", "retry_on")

    def __init__(
        self,
        retries: int = 0,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        backoff: float = 0.0,
        item_timeout: float | None = None,
    ) -> None:
        self.retries = retries
        self.retry_on = retry_on
        self.backoff = backoff
        self.item_timeout = item_timeout

    @classmethod
    def of(cls, spec: Any) -> ItemRules:
        """Return the rules of a stage spec."""
        return cls(spec.retries, spec.retry_on, spec.backoff, spec.item_timeout)

    def should_retry(self, exc: BaseException, attempt: int) -> float | None:
        """Return the seconds to wait before trying again, or None to fail the item.

        ``attempt`` is how many tries the item has had, the failed one included.
        """
        if attempt > self.retries or not isinstance(exc, self.retry_on):
            return None
        if not self.backoff:
            return 0.0
        return min(MAX_SECONDS, self.backoff * 2.0 ** min(attempt - 1, 64))

    def timeout_error(self, what_happened: str) -> ItemTimeout:
        """Return the error of an item that overran the stage's timeout."""
        return ItemTimeout(f"item took longer than the stage's item_timeout of {self.item_timeout:g}s; {what_happened}")

    def on_lost(self, piece: LostPiece, exc: BaseException, redo: Callable[[list], Any]) -> ItemError | None:
        """Decide for a lone item the parent saw fail (timeout, worker death).

        Retry: count the try on ``piece.attempts``, hand the piece to ``redo``
        (after the backoff, on a timer thread) and return None. Fail: return
        the item's `ItemError` (no traceback text: the parent saw it) for ``port.done``. A piece
        of several items is handed back as lone items (None): nothing says
        which of them overran or killed, so each is tried alone, and that is
        not a retry.
        """
        if len(piece.items) > 1:
            lone = []
            rest = piece
            while len(rest.items) > 1:
                head, rest = rest.split(1)
                lone.append(head)
            redo([*lone, rest])
            return None
        attempt = piece.attempts + 1
        delay = self.should_retry(exc, attempt)
        if delay is None:
            return ItemError(0, exc, "", attempt)
        piece.attempts = attempt
        if delay <= 0:
            redo([piece])
        else:
            t = threading.Timer(delay, redo, args=([piece],))
            t.daemon = True
            t.start()
        return None
