"""Choose a progress view for a run, and the plain-text view every machine can show.

    flow.collect(progress=...)  ->  make_observer(progress)  ->  Observer | None
                                        |
        None (auto) ----+-- Jupyter kernel  -> widget panel  (after ~1 s)
                        +-- stderr is a tty -> tqdm bars     (after ~1 s)
                        +-- else (CI, logs) -> None: print nothing
        True -----------+-- Jupyter kernel  -> widget panel  (from the start)
                        +-- stderr is a tty -> tqdm bars     (from the start)
                        +-- else (pipe, file) -> TextObserver: plain lines, no control codes
        "tqdm"          -> tqdm bars; plain lines when stderr is a pipe or a file (bars.py)
        "notebook"      -> widget panel, or text without one (panel.py)
        "text"          -> TextObserver: lines on stderr and a summary at the end (text.py)
        an Observer     -> used as it is
        False           -> None

The delayed views are wrapped in `Delayed`, which opens its view only once
the run's own clock (``stats.elapsed``) passes the delay: a call that ends
in under a second prints nothing, unless it failed: a failure is shown
whenever it happens. tqdm and ipywidgets are imported only in
their own modules, and those only when a view of theirs is made, so
``import ezflow`` stays fast.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from .._core.env import in_notebook
from .._core.observe import Observer
from .._core.stats import FlowStats
from .text import TextObserver

__all__ = ["Delayed", "ProgressArg", "make_observer"]

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
    """Return tqdm bars where they can be drawn: a terminal, or a notebook (tqdm's widget bars).

    Into a pipe or a file, bars are carriage returns and escape codes (`demo > out.txt`
    filled a file with them): write plain status lines there instead, as `tqdm(disable=None)`
    users expect a non-terminal to get no bars.
    """
    if not (in_notebook() or _stderr_is_tty()):
        return TextObserver()
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

    def bind_stop(self, stop: Callable[[], None]) -> None:
        bind = getattr(self.view, "bind_stop", None)
        if callable(bind):
            bind(stop)

    def open(self, stats: FlowStats) -> None:
        self._maybe_show(stats)

    def update(self, stats: FlowStats) -> None:
        if self._maybe_show(stats):
            self.view.update(stats)

    def close(self, stats: FlowStats) -> None:
        # A run that ended before the delay shows nothing, unless it failed:
        # the panel (or the red bar) says which stage failed and what was
        # done by then, next to the error raised to the caller.
        if self._maybe_show(stats, failed=stats.state == "failed"):
            self.view.close(stats)

    def _maybe_show(self, stats: FlowStats, *, failed: bool = False) -> bool:
        # The run's own clock, not ours: the engine knows when it started.
        if not self.shown and (failed or stats.elapsed >= self.delay):
            self.view.open(stats)
            self.shown = True
        return self.shown

    def __repr__(self) -> str:
        return f"Delayed({self.view!r}, {self.delay})"
