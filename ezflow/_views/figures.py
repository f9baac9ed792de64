"""The formatting core: every figure, label and word a view shows, computed once.

    FlowStats --> figures: counts, rates, clock/ETA, worker labels, outcome words,
                           bottleneck, per-stage notes, status line, summary table
                     |
                     +--> text view (text.py)   +--> tqdm bars (bars.py)   +--> panel (panel.py)

Front ends only draw what this module says. The cell spelling that
``repr(flow.stats)`` needs too (`human`, `clock`, `worker_label`,
`format_table`) lives with the stats records in ``ezflow._core.stats``, a
lower layer, and is re-exported from here; everything else is built on it.
"""

from __future__ import annotations

import itertools
import re

from .._core.stats import (
    FlowStats,
    StageStats,
    checkpoint_note,
    clock,
    format_table,
    human,
    memory_notes,
    size,
    worker_label,
)

__all__ = [
    "BUDGET_NOTE",
    "BUDGET_WORDS",
    "Outcome",
    "bottleneck",
    "checkpoint_note",
    "clock",
    "count",
    "eta",
    "format_table",
    "fraction",
    "fused_notes",
    "human",
    "losses",
    "memory_notes",
    "outcome",
    "progress_count",
    "progress_fraction",
    "progress_total",
    "rates",
    "size",
    "stage_error",
    "stage_notes",
    "stage_tone",
    "status_line",
    "summary",
    "worker_label",
]

_ERROR_CHARS = 68  # "FAILED: " and 60 characters of the error


class Outcome:
    """How a run stands, in words and a tone every view colours the same way.

    ``tone`` is one of "pending", "running", "ok", "warn", "failed", "cancelled":
    a run that finished with failed or skipped items is "warn", not "ok".
    """

    __slots__ = ("tone", "word")

    def __init__(self, word: str, tone: str) -> None:
        self.word = word
        self.tone = tone

    def __repr__(self) -> str:
        return f"Outcome({self.word!r}, {self.tone!r})"


def outcome(stats: FlowStats) -> Outcome:
    """Return the run's status word ("done", "done · 8 errors", "failed", ...) and tone."""
    state = stats.state
    if state == "done":
        losses = _losses(sum(s.errors for s in stats.stages), sum(s.skipped for s in stats.stages))
        return Outcome(" · ".join(["done", *losses]), "warn" if losses else "ok")
    if state in ("failed", "cancelled", "running", "pending"):
        return Outcome(state, state)
    return Outcome(state, "pending")


def stage_tone(s: StageStats) -> str:
    """Return a stage's tone: its state, or "warn" for one done with failed or skipped items."""
    if s.state == "done" and (s.errors or s.skipped):
        return "warn"
    return s.state


def losses(stats: FlowStats) -> list[tuple[str, str]]:
    """Return (stage name, "6 errors · 2 skipped") for each stage that lost items."""
    return [(s.name, " · ".join(_losses(s.errors, s.skipped))) for s in stats.stages if s.errors or s.skipped]


def _losses(errors: int, skipped: int) -> list[str]:
    words = []
    if errors:
        words.append(f"{errors} {'error' if errors == 1 else 'errors'}")
    if skipped:
        words.append(f"{skipped} skipped")
    return words


def bottleneck(stats: FlowStats) -> StageStats | None:
    """Return the stage holding the flow back (see `FlowStats.bottleneck`)."""
    return stats.bottleneck


def progress_count(s: StageStats) -> int:
    """Items a progress bar counts for a stage: what the table counts as its items.

    An ``unbatch`` stage takes lists and emits their items; its bar counts the
    items it emitted, as the table's "out" column does, not the lists.
    """
    return s.items_out if s.kind == "unbatch" else s.done


def progress_total(s: StageStats) -> int | None:
    """Items a stage's bar fills up to, or None when unknown.

    Totals after a ``batch`` stage are estimates (failures pass a batch on
    their own), so a stage that did more than expected shows what it did.
    """
    if s.kind == "unbatch" or s.total is None:
        return None
    return max(s.total, s.done)


def progress_fraction(s: StageStats) -> float:
    """Share of a stage's bar to fill, 0..1; without a total, what it finished of what came in."""
    total = progress_total(s)
    if total:
        return min(1.0, progress_count(s) / total)
    return min(1.0, s.done / s.items_in) if s.items_in else 0.0


def count(n: int | None) -> str:
    """Format an item count exactly while it is readable (12,345), compactly beyond (3.4M)."""
    if n is None:
        return "?"
    return f"{n:,}" if abs(n) < 1_000_000 else human(n)


def fraction(stats: FlowStats) -> float | None:
    """Return the share of the work done, 0..1, from the least advanced stage with a total."""
    parts = [min(1.0, s.done / s.total) for s in stats.stages if s.total]
    return min(parts) if parts else None


def eta(stats: FlowStats) -> float | None:
    """Return the seconds left, estimated from the stages with a known total."""
    left = None
    for s in stats.stages:
        if s.total is None or s.state != "running":
            continue
        if s.done >= s.total:
            continue
        rate = s.throughput
        if rate <= 0:
            return None  # a stage with work left has not finished an item yet
        secs = (s.total - s.done) / rate
        left = secs if left is None else max(left, secs)
    return left


def stage_error(s: StageStats) -> str:
    """Say what failed in a stage without its name, which every view already shows beside it.

    "failed on item 3 (3): ValueError: ..." from the engine's TaskError text,
    "failed: <error>" for any other error, "failed" without one.
    """
    error = s.error or ""
    # the engine's words; the class reads "TaskError(ValueError)" when it is also the original's type
    found = re.match(r"TaskError(\([^)]*\))?: stage " + re.escape(repr(s.name)) + " failed ", error)
    if found:
        return "failed " + error[found.end() :]
    return f"failed: {error}" if error else "failed"


def stage_notes(s: StageStats, is_bottleneck: bool) -> list[str]:
    """Short notes on one stage, most important first: state, busy, queue, counts."""
    notes = []
    counted = False
    if s.state == "failed":
        error = "FAILED" + stage_error(s)[len("failed") :]
        if len(error) > _ERROR_CHARS:
            error = error[: _ERROR_CHARS - 3] + "..."
        notes.append(error)  # first: the end of a long line gets cut
    elif s.state == "cancelled":
        notes.append("cancelled")
    elif s.state == "done" and (s.errors or s.skipped):
        notes.append(" · ".join(["done", *_losses(s.errors, s.skipped)]))
        counted = True
    notes += [f"busy {s.busy:.0%}", f"queue {s.queue_fill:.0%}"]
    if is_bottleneck:
        notes[-1] += " << bottleneck"
    if s.auto_workers:  # the count moves with the CPU budget: say what it is now
        notes.append(f"{s.workers} {'worker' if s.workers == 1 else 'workers'} auto")
    if not counted:
        notes += _losses(s.errors, s.skipped)
    if s.retries:
        notes.append(f"{s.retries} {'retry' if s.retries == 1 else 'retries'}")
    notes += memory_notes(s)
    return notes


def _done_of(s: StageStats) -> str:
    # max: totals after a batch stage are estimates (see `progress_total`)
    return f"{human(s.done)}/{human(max(s.total, s.done))}" if s.total is not None else human(s.done)


def _progress_of(s: StageStats) -> str:
    done, total = progress_count(s), progress_total(s)
    return f"{human(done)}/{human(total)}" if total is not None else human(done)


def status_line(stats: FlowStats) -> str:
    """Return one line of a running flow's figures: each stage's done/total and rate."""
    parts = []
    for s in stats.stages:
        part = f"{s.name} {_progress_of(s)} {human(s.throughput)}/s"
        if s.errors:
            part += f" {s.errors} err"
        parts.append(part)
    note = checkpoint_note(stats)
    return f"[{clock(stats.elapsed)}] " + " | ".join(parts) + (f" ({note})" if note else "")


# what "auto" means, said by the summary (BUDGET_NOTE) and the panel's tooltip
BUDGET_WORDS = (
    "process stages left at workers=None start with one worker per CPU each; "
    "a stage that waits on I/O gets more, one that leaves workers idle gives them back"
)
BUDGET_NOTE = f"auto: {BUDGET_WORDS} (the count shown is the latest)"


def summary(stats: FlowStats) -> str:
    """Return a per-stage table of a run: mode x workers, items, items/s, busy %, errors."""
    head = ("stage", "mode", "items", "out", "items/s", "busy", "errors", "skipped", "retries")
    rows = [head]
    for s in stats.stages:
        rows.append(
            (
                s.name,
                worker_label(s),
                _done_of(s),
                human(s.items_out),
                human(s.throughput),
                f"{s.busy:.0%}",
                str(s.errors),
                str(s.skipped),
                str(s.retries),
            )
        )
    title = f"ezflow {outcome(stats).word} in {clock(stats.elapsed)}"
    slow = bottleneck(stats)
    if slow is not None:
        title += f"; bottleneck: {slow.name} (busy {slow.busy:.0%})"
    note = checkpoint_note(stats)
    if note:
        title += f"; {note}"
    out = [title, *format_table(rows)]
    out += [f"stage {s.name!r}: {', '.join(memory_notes(s))}" for s in stats.stages if memory_notes(s)]
    out += fused_notes(stats)
    if any(s.auto_workers for s in stats.stages):
        out.append(BUDGET_NOTE)
    failed = [s for s in stats.stages if s.state == "failed" and s.error]
    for s in failed:
        out.append(f"stage {s.name!r} {stage_error(s)}")
    if stats.error and not any(s.error and s.error in stats.error for s in failed):
        out.append(f"error: {stats.error}")
    return "\n".join(out)


def fused_notes(stats: FlowStats) -> list[str]:
    """Return a line for each chain of stages that ran fused: which, and what their busy share means."""
    out = []
    for s in stats.stages:
        chain = s.fused_with
        if chain and chain[0] == s.name:
            names = " and ".join((", ".join(chain[:-1]), chain[-1]))
            through = "both" if len(chain) == 2 else f"all {len(chain)}"
            out.append(
                f"fused: {names} run as one chain in the same {s.workers} worker processes, each item "
                f"through {through} there; each one's busy is its share of their time"
            )
    return out


def rates(samples: list[tuple[float, int]]) -> list[float]:
    """Return items/s between successive (elapsed seconds, items done) samples of one stage."""
    out = []
    for (t0, n0), (t1, n1) in itertools.pairwise(samples):
        if t1 > t0:
            out.append(max(0.0, (n1 - n0) / (t1 - t0)))
    return out
