"""The plain-text view: status lines while a run goes, a summary table at its end.

    FlowStats --open/update/close--> TextObserver --figures.status_line / summary--> stderr

For pipes, logs and notebooks without the widget front end. Every word and
figure comes from `figures`; this module only decides when to write.
"""

from __future__ import annotations

import sys
from typing import TextIO

from .._core.stats import FlowStats
from .figures import status_line, summary

__all__ = ["TextObserver"]


class TextObserver:
    """Write a status line every ``interval`` seconds and a summary table at the end."""

    def __init__(self, stream: TextIO | None = None, *, interval: float = 5.0, final_summary: bool = True) -> None:
        self.stream = stream
        self.interval = interval
        self.final_summary = final_summary  # False: the last status line only (the caller prints a summary)
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
        self._write(summary(stats) if self.final_summary else status_line(stats))

    def __repr__(self) -> str:
        return f"TextObserver(interval={self.interval})"
