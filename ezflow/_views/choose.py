"""Choose a progress view for a run, and the plain-text view every machine can show.

    flow.collect(progress=...)  ->  make_observer(progress)  ->  Observer | None
                                        |
        None (auto) ----+-- Jupyter kernel  -> widget panel  (after ~1 s)
                        +-- stderr is a tty -> tqdm bars     (after ~1 s)
                        +-- else (CI, logs) -> None: print nothing
        True -----------+-- Jupyter kernel  -> widget panel  (from the start)
                        +-- elsewhere       -> tqdm bars     (from the start)
        "tqdm"          -> tqdm bars                         (_progress_tqdm.py)
        "notebook"      -> widget panel, or text without one (_progress_widget.py)
        "text"          -> TextObserver: lines on stderr and a summary at the end
        an Observer     -> used as it is
        False           -> None

The delayed views are wrapped in `Delayed`, which opens its view only once
the run's own clock (``stats.elapsed``) passes the delay: a call that ends
in under a second prints nothing. tqdm and ipywidgets are imported only in
their own modules, and those only when a view of theirs is made, so
``import ezflow`` stays fast.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from .._core.env import in_notebook
from .._core.observe import Observer
from .._core.stats import FlowStats, StageStats, human

__all__ = ["make_observer", "summary", "Delayed", "TextObserver", "ProgressArg"]

ProgressArg = Any  # None | bool | str | Observer; Any because Observer is a Protocol

_NOTEBOOK_NAMES = ("notebook", "widget")
_CHOICES = "None, True, False, 'tqdm', 'notebook', 'widget', 'text' or an object with open/update/close"


def make_observer(progress: ProgressArg, *, interactive_delay: float = 1.0) -> Observer | None:
    """Return the observer that shows a run's progress as ``progress`` asks, or None."""
    if progress is None:
        if in_notebook():
            return Delayed(_notebook_view(), interactive_delay)
        if _stderr_is_tty():
            return Delayed(_tqdm_view(), interactive_delay)
        return None  # CI, logs and pipes: a bar there is noise
    if progress is False:
        return None
    if progress is True:
        return _notebook_view() if in_notebook() else _tqdm_view()
    if isinstance(progress, str):
        name = progress.lower()
        if name == "tqdm":
            return _tqdm_view()
        if name in _NOTEBOOK_NAMES:
            return _notebook_view()
        if name == "text":
            return TextObserver()
        raise ValueError(f"progress must be {_CHOICES}; got {progress!r}")
    if all(callable(getattr(progress, m, None)) for m in ("open", "update", "close")):
        return progress
    raise ValueError(f"progress must be {_CHOICES}; got {progress!r}")


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def _tqdm_view() -> Observer:
    from .bars import TqdmObserver

    return TqdmObserver()


def _notebook_view() -> Observer:
    """Return the widget panel, or text when the widget front end cannot be used."""
    if in_notebook():
        try:
            from .panel import WidgetObserver
        except ImportError:  # ipywidgets missing: the panel cannot render
            pass
        else:
            return WidgetObserver()
    return TextObserver()


class Delayed:
    """Open a view only once the run has lasted ``delay`` seconds."""

    def __init__(self, view: Observer, delay: float) -> None:
        if delay < 0:
            raise ValueError(f"delay must be >= 0 seconds, got {delay}")
        self.view = view
        self.delay = delay
        self.shown = False

    def open(self, stats: FlowStats) -> None:
        self._maybe_show(stats)

    def update(self, stats: FlowStats) -> None:
        if self._maybe_show(stats):
            self.view.update(stats)

    def close(self, stats: FlowStats) -> None:
        # A run that ended before the delay shows nothing, failed or not:
        # its error is raised to the caller anyway.
        if self._maybe_show(stats):
            self.view.close(stats)

    def _maybe_show(self, stats: FlowStats) -> bool:
        # The run's own clock, not ours: the engine knows when it started.
        if not self.shown and stats.elapsed >= self.delay:
            self.view.open(stats)
            self.shown = True
        return self.shown

    def __repr__(self) -> str:
        return f"Delayed({self.view!r}, {self.delay})"


class TextObserver:
    """Write a status line every ``interval`` seconds and a summary table at the end."""

    def __init__(self, stream: TextIO | None = None, *, interval: float = 5.0) -> None:
        self.stream = stream
        self.interval = interval
        self._next = 0.0

    def _write(self, text: str) -> None:
        # Resolve stderr at write time: pytest and notebooks swap it.
        stream = self.stream if self.stream is not None else sys.stderr
        stream.write(text + "\n")
        stream.flush()

    def open(self, stats: FlowStats) -> None:
        names = " -> ".join(s.name for s in stats.stages)
        self._write(f"ezflow: running {names}")
        self._next = stats.elapsed + self.interval

    def update(self, stats: FlowStats) -> None:
        if stats.elapsed >= self._next:
            self._next = stats.elapsed + self.interval
            self._write(status_line(stats))

    def close(self, stats: FlowStats) -> None:
        self._write(summary(stats))

    def __repr__(self) -> str:
        return f"TextObserver(interval={self.interval})"


def status_line(stats: FlowStats) -> str:
    """Return one line of a running flow's figures: each stage's done/total and rate."""
    parts = []
    for s in stats.stages:
        part = f"{s.name} {_done_of(s)} {human(s.throughput)}/s"
        if s.errors:
            part += f" {s.errors} err"
        parts.append(part)
    return f"[{_clock(stats.elapsed)}] " + " | ".join(parts)


def summary(stats: FlowStats) -> str:
    """Return a per-stage table of a run: mode x workers, items, items/s, busy %, errors."""
    head = ("stage", "mode", "items", "out", "items/s", "busy", "errors", "skipped", "retries")
    rows = [head]
    for s in stats.stages:
        rows.append(
            (
                s.name,
                f"{s.mode} x{s.workers}",
                _done_of(s),
                human(s.items_out),
                human(s.throughput),
                f"{s.busy:.0%}",
                str(s.errors),
                str(s.skipped),
                str(s.retries),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
        for r in rows
    ]
    title = f"ezflow {stats.state} in {_clock(stats.elapsed)}"
    slow = bottleneck(stats)
    if slow is not None:
        title += f"; bottleneck: {slow.name} (busy {slow.busy:.0%})"
    out = [title, *lines]
    failed = [s for s in stats.stages if s.state == "failed" and s.error]
    for s in failed:
        out.append(f"stage {s.name!r} failed: {s.error}")
    if stats.error and not any(s.error in stats.error for s in failed):
        out.append(f"error: {stats.error}")
    return "\n".join(out)


def bottleneck(stats: FlowStats) -> StageStats | None:
    """Return the stage holding the flow back (see `FlowStats.bottleneck`)."""
    return stats.bottleneck


def _done_of(s: StageStats) -> str:
    return f"{human(s.done)}/{human(s.total)}" if s.total is not None else human(s.done)


def _clock(seconds: float) -> str:
    """Format a duration for people: 0.4s, 12.3s, 4m05s, 2h03m."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


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


def fraction(stats: FlowStats) -> float | None:
    """Return the share of the work done, 0..1, from the least advanced stage with a total."""
    parts = [min(1.0, s.done / s.total) for s in stats.stages if s.total]
    return min(parts) if parts else None
