"""What travels between the engine and an executor: chunks, pieces, and the port.

    engine (StageDriver)                                  executor (a backend)
      cuts pieces from chunks  --- port.take() ------------>  runs them on its workers
      reassembles chunks      <--- port.done(piece, ...) ----
                              <--- port.give_back(pieces) --  (a worker died: run again)
                              <--- port.fail(exc) ----------  (a bug, a setup failure)
                              <--- port.set_capacity(...) --  (a cluster grew)
                              <--- port.wake() -------------  (the executor has room again)
                              <--- port.report_workers(...) -  (a worker recycled, a new RSS peak)
                              <--- port.worker_up / began / worker_gone  (insights: a worker is ready,
                                   started a piece, was replaced; `done(..., worker=)` ends the piece)

The engine implements `StagePort`; an executor sees nothing else of it:
not the run, not the driver's lock, not another stage. `Chunk` and `Piece`
live here, below the engine, because both sides hold them.
"""

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

__all__ = ["Chunk", "ItemError", "Piece", "StagePort"]

class ItemError(NamedTuple):
    """One failed item of a piece, as a worker or the parent reports it."""

    pos: int  # position in the piece
    error: BaseException
    tb: str  # the traceback text where it was raised ("" when the parent saw it: a timeout, a death)
    attempts: int  # tries so far, in the worker and in the parent
    # a chain of fused stages (plan.chain): the step that raised, and the item as it received it
    # (`item` only for a step after the first: the parent holds the first step's input)
    step: int = 0
    item: Any = None


class Chunk:
    """Items that travel together, with their source indices (the unit of flow and order).

    `span` is the half-open range of source positions the chunk completes:
    every position in it that was fed to the run has all its results here
    (none, for an item a filter dropped). A stage emits a chunk's results in
    parts as they are done; each part carries the positions it completes,
    so a checkpoint stores what was computed whatever the cut.
    """

    __slots__ = ("emitted", "idx", "items", "made", "parts", "seq", "span", "special")

    def __init__(
        self, seq: int, idx: range | list[int], items: list[Any], special: bool = False,
        span: tuple[int, int] | None = None,
    ) -> None:
        self.seq = seq
        self.idx = idx  # source index of each item: a range until something reorders
        self.items = items
        self.special = special  # may hold Failure records from an earlier stage
        if span is None:
            if isinstance(idx, range):
                span = (idx.start, idx.stop)
            else:
                span = (idx[0], idx[-1] + 1) if idx else (0, 0)
        self.span = span
        self.parts: dict[int, tuple[int, Chunk]] = {}  # the engine's: done parts not yet emitted, by first item
        self.emitted = 0  # the engine's: items whose results were emitted
        self.made = 0  # Failure records this stage put in (counted as errors, not out)


class Piece:
    """A slice of a chunk sent to one worker (the unit of dispatch)."""

    __slots__ = ("attempts", "chunk", "id", "isolated", "items", "start")

    def __init__(self, chunk: Chunk, start: int, items: list[Any], isolated: bool = False) -> None:
        self.chunk = chunk
        self.start = start
        self.items = items
        self.isolated = isolated  # re-run alone to find which item killed a worker
        self.id = 0
        self.attempts = 0  # tries a lone item already had when the parent gave it back (rules.ItemRules.on_lost)

    def split(self, n: int) -> "tuple[Piece, Piece]":
        """Return the first n items as one piece and the rest as another."""
        head = Piece(self.chunk, self.start, self.items[:n], self.isolated)
        return head, Piece(self.chunk, self.start + n, self.items[n:], self.isolated)

    def singles(self) -> "list[Piece]":
        """Return one isolated piece per item: each runs alone, to find an item that kills its worker."""
        return [Piece(self.chunk, self.start + i, [item], isolated=True) for i, item in enumerate(self.items)]


class StagePort(Protocol):
    """What the engine offers the executor of one stage."""

    def take(self, room: Callable[[], bool] | None = None) -> Piece | None:
        """Block until a piece is waiting and the executor has `room()`; None once the stage has no more work.

        `room` reads the executor's own state and nothing else (it is called
        with the engine's lock held: no locks, no blocking); when that state
        changes, the executor calls `wake()`.

        Raises:
            Cancelled: the run was cancelled.
        """
        ...

    def done(
        self,
        piece: Piece,
        values: list[Any],
        errs: Sequence[ItemError],
        busy: float | tuple[float, ...],
        retries: int = 0,
        worker: int | None = None,
    ) -> None:
        """Report a finished piece: one value per item, the failed ones in `errs`, `busy` seconds of work.

        Fused stages (`plan.chain`) report `busy` step by step, a tuple.

        A worker still running a piece may report its first items early
        (`piece.split(k)[0]`) and keep the rest as the piece it holds: each
        result is delivered as soon as it is done, whatever the cut.

        `worker`: the number of the worker that ran it (as told to `worker_up`), for its insights.
        """
        ...

    def worker_up(self, worker: int, pid: int | None = None, startup: float = 0.0) -> None:
        """Worker number `worker` (process `pid`) is ready to take pieces, `startup` seconds after it was asked for."""
        ...

    def began(self, worker: int, piece: Piece) -> None:
        """Worker number `worker` starts running `piece` now (its age is shown while it runs)."""
        ...

    def worker_gone(self, worker: int) -> None:
        """Worker number `worker` was replaced (recycled, died, timed out): its figures stop there."""
        ...

    def give_back(self, pieces: Sequence[Piece]) -> None:
        """Queue pieces to run again ahead of new work (their worker died, or they were cut smaller)."""
        ...

    def fail(self, exc: BaseException, *, late: bool = False, blame: bool = False) -> None:
        """Fail the run with `exc` (a bug, a setup failure).

        `late`: the stage's results are all out; the caller raises it at the
        end. `blame`: the stats mark this stage as the one that failed.
        """
        ...

    def set_capacity(self, workers: int, pieces: int) -> None:
        """The executor runs `workers` items at once and wants `pieces` pieces in flight to keep them fed."""
        ...

    def wake(self) -> None:
        """The executor's own state changed: every waiting `take` checks its `room` again."""
        ...

    def report_workers(self, recycled: int = 0, peak_rss: int = 0) -> None:
        """`recycled` more workers were replaced on purpose; one was seen using `peak_rss` bytes (a new peak)."""
        ...
