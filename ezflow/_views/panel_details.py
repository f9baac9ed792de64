"""The panel's insights: per stage, its workers and slowest items, and every failure kept.

    StageStats.worker_stats / .slowest / .failures
        |
        +--stage_html / failures_html--> Insights: one Accordion section per stage and the failures
        |                                lists, under the live table, redrawn with it (what changed)
        +--render_details--------------> <details> per stage, inside the ended run's static view

Why an Accordion while running and ``<details>`` at the end: the live table
is redrawn a few times a second, and an HTML widget's redraw replaces its
DOM, which would close any ``<details>`` the reader opened; an Accordion
keeps which section is open in its model. The ended run's view is static
HTML that needs no kernel, so ``<details>`` there stay as the reader leaves
them. A stage's failures are a separate HTML widget under the sections
(visible once there is one: the errors count links to it, and a link cannot
open a closed section), redrawn only when a failure is added, so a
traceback opened in it stays open until the next failure. Every section is
drawn, open or not: while ``collect()`` runs the kernel is busy and does not
hear that a section was opened, so the front end must have its body already.

Hooks for tests and users' CSS: ``data-insights-of`` (a stage's section),
``data-worker`` / ``data-current-item`` / ``data-current-for`` on worker rows,
``data-slow-index`` on slowest rows, ``data-failure-index`` on failures,
``data-failures-of`` on a stage's failures list (its ``id`` is what the
errors count in the table links to).
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import ipywidgets

from .._core.stats import FlowStats, StageStats
from .figures import clock, human
from .theme import AMBER, FAILED, FG, MONO, MUTED, RULE, e, tint

__all__ = ["Insights", "anchor_of", "failures_html", "new_anchor", "render_details", "stage_html"]

_MESSAGE_CHARS = 160  # a failure's message in its one-line summary; the traceback has all of it
_TRACEBACK_CHARS = 4_000  # of a traceback in the panel (a hundred of them are saved in the notebook)
_STUCK_SECONDS = 1.0  # a running item older than this and than every finished piece is marked

_anchors = itertools.count()


def new_anchor() -> str:
    """Return an id prefix unique to one panel in this kernel (and apart from other kernels' panels)."""
    return f"ezflow-{os.getpid()}-{next(_anchors)}"


def anchor_of(anchor: str, index: int) -> str:
    """Return the element id of stage `index`'s failures list in the panel `anchor`."""
    return f"{anchor}-failures-{index}"


# -- HTML, shared by the live sections and the static view -------------------------

# line-height: ipywidgets' HTML sets a widget's (28px a line); font and colour: the page's, not the widget's
_BOX = f"line-height:1.45;color:{FG};font-family:var(--jp-ui-font-family,system-ui,sans-serif);"
_CELL = f"padding:2px 8px;border-bottom:1px solid {RULE};white-space:nowrap;text-align:right;"
_LEFT = _CELL + "text-align:left;"
_HEAD = f"{_CELL}font-size:11px;font-weight:600;color:{MUTED};text-transform:uppercase;letter-spacing:0.04em;"
_TABLE = "border-collapse:collapse;font-variant-numeric:tabular-nums;table-layout:auto;margin:2px 0 8px 0;"
_CAPTION = (
    f"font-size:11px;font-weight:600;color:{MUTED};text-transform:uppercase;letter-spacing:0.04em;margin-top:4px;"
)


def _secs(seconds: float) -> str:
    """Format a duration with milliseconds for the short ones: 0.4 ms, 12 ms, 1.3s, 4m05s."""
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return clock(seconds)


def _table(heads: list[tuple[str, str]], rows: list[str]) -> str:
    head = "".join(f'<th title="{e(tip)}" style="{_HEAD}">{e(title)}</th>' for title, tip in heads)
    return f'<table style="{_TABLE}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def stage_html(s: StageStats) -> str:
    """Return a stage's workers table and slowest items as HTML (the body of its section)."""
    parts = []
    if s.worker_stats:
        longest = max((x.seconds for x in s.slowest), default=0.0)
        rows = [_worker_row(w, longest) for w in s.worker_stats]
        parts.append(
            _table(
                [
                    ("worker", "its number in the stage; a replaced worker keeps its row, greyed"),
                    ("pid", "process id (process workers)"),
                    ("start-up", "seconds until it could take items"),
                    ("busy", "seconds computing"),
                    ("waiting", "seconds ready but not computing: no work, or moving data"),
                    ("items", "items it finished"),
                    ("running now", "the item it runs now (a piece's first) and for how long"),
                ],
                rows,
            )
        )
    elif s.mode in ("dask", "inline"):
        parts.append(f'<div style="color:{MUTED};font-size:12px;">no per-worker figures for {e(s.mode)} stages</div>')
    if s.slowest:
        rows = [
            f'<tr data-slow-index="{x.index}">'
            f'<td style="{_LEFT}">#{x.index}'
            + (f'<span style="color:{MUTED};"> +{x.items - 1} in its piece</span>' if x.items > 1 else "")
            + f'</td><td style="{_CELL}">{_secs(x.seconds)}</td>'
            f'<td style="{_LEFT}font-family:{MONO};font-size:12px;">{e(x.input)}</td></tr>'
            for x in s.slowest
        ]
        parts.append(f'<div style="{_CAPTION}">slowest</div>')
        parts.append(
            _table(
                [
                    ("item", "source index; tiny items are timed by the piece"),
                    ("time", "compute seconds"),
                    ("input", "a short repr of the input"),
                ],
                rows,
            )
        )
    if not parts:
        parts.append(f'<div style="color:{MUTED};font-size:12px;">no item finished yet</div>')
    return f'<div data-insights-of="{e(s.name)}" style="{_BOX}font-size:12px;">{"".join(parts)}</div>'


def _worker_row(w: Any, longest: float) -> str:
    muted = "" if w.alive else f"color:{MUTED};"
    if w.current_item is None:
        now = f'<span style="color:{MUTED};">{"idle" if w.alive else "replaced"}</span>'
        item_attr = ""
    else:
        stuck = w.current_for_s >= _STUCK_SECONDS and w.current_for_s > longest
        style = f"color:{AMBER};font-weight:700;" if stuck else ""
        now = f'<span style="{style}">#{w.current_item} for {clock(w.current_for_s)}</span>'
        item_attr = f' data-current-item="{w.current_item}" data-current-for="{w.current_for_s:.3f}"'
    return (
        f'<tr data-worker="{w.id}"{item_attr} style="{muted}">'
        f'<td style="{_LEFT}">{w.id}</td>'
        f'<td style="{_CELL}">{"" if w.pid is None else w.pid}</td>'
        f'<td style="{_CELL}">{_secs(w.startup_s)}</td>'
        f'<td style="{_CELL}">{_secs(w.busy_s)}</td>'
        f'<td style="{_CELL}">{_secs(w.waiting_s)}</td>'
        f'<td style="{_CELL}">{human(w.items)}</td>'
        f'<td style="{_LEFT}">{now}</td></tr>'
    )


def _shorter(text: str) -> str:
    if len(text) <= _TRACEBACK_CHARS:
        return text
    head = _TRACEBACK_CHARS // 5
    cut = len(text) - _TRACEBACK_CHARS
    return f"{text[:head]}\n[... {cut:,} characters cut: flow.stats has them ...]\n{text[-(_TRACEBACK_CHARS - head):]}"


def failures_html(s: StageStats, anchor: str, index: int) -> str:
    """Return a stage's failures list as HTML: one line each, its traceback folded under it."""
    if not s.failures:
        return ""
    items = "".join(_failure(f) for f in s.failures)
    more = ""
    if s.failures_omitted:
        more = (
            f'<div style="color:{MUTED};font-size:12px;">and {s.failures_omitted:,} more, counted but not kept '
            f"(the first {len(s.failures)} are)</div>"
        )
    return (
        f'<div id="{e(anchor_of(anchor, index))}" data-failures-of="{e(s.name)}" style="{_BOX}margin-top:4px;">'
        f'<div style="{_CAPTION}color:{FAILED};">failures ({len(s.failures) + s.failures_omitted:,})</div>'
        f'<div style="max-height:24em;overflow-y:auto;">{items}</div>{more}</div>'
    )


def _failure(f: Any) -> str:
    message = f.message if len(f.message) <= _MESSAGE_CHARS else f.message[: _MESSAGE_CHARS - 1] + "…"
    line = (
        f'<span style="color:{MUTED};">#{f.index}</span> '
        f'<b style="color:{FAILED};">{e(f.error)}</b>: {e(message)} '
        f'<span style="color:{MUTED};font-family:{MONO};">{e(f.input)}</span>'
    )
    if not f.traceback:
        return f'<div data-failure-index="{f.index}" style="padding:1px 0 1px 14px;">{line}</div>'
    return (
        f'<details data-failure-index="{f.index}" style="padding:1px 0;">'
        f'<summary style="cursor:pointer;">{line}</summary>'
        f'<pre style="font-family:{MONO};font-size:11px;margin:2px 0 6px 14px;padding:4px 8px;'
        f'background:{tint(FAILED, 6)};border-left:2px solid {FAILED};white-space:pre-wrap;">'
        f"{e(_shorter(f.traceback.rstrip()))}</pre></details>"
    )


def _title(s: StageStats) -> str:
    bits = [s.name]
    if s.worker_stats:
        alive = sum(w.alive for w in s.worker_stats)
        if s.auto_workers and alive > s.workers:  # the CPU budget parked some: warm, not running
            bits.append(f"{s.workers} of {alive} workers running (CPU budget)")
        else:
            bits.append(f"{alive} worker" + ("" if alive == 1 else "s"))
    if s.slowest:
        bits.append(f"slowest {_secs(s.slowest[0].seconds)}")
    n = len(s.failures) + s.failures_omitted
    if n:
        bits.append(f"{n:,} {'failure' if n == 1 else 'failures'}")
    return " · ".join(bits)


def render_details(stats: FlowStats, anchor: str) -> str:
    """Return every stage's insights as ``<details>`` elements (the ended run's static view)."""
    out = []
    for i, s in enumerate(stats.stages):
        if s.kind in ("batch", "unbatch"):
            continue
        body = stage_html(s) + failures_html(s, anchor, i)
        failed = len(s.failures) + s.failures_omitted
        out.append(
            f'<details data-details-of="{e(s.name)}" style="margin-top:4px;"{" open" if failed else ""}>'
            f'<summary style="cursor:pointer;color:{MUTED};font-size:12px;">{e(_title(s))}</summary>'
            f'<div style="padding:2px 0 2px 14px;">{body}</div></details>'
        )
    return f'<div class="ezflow-details" style="margin-top:6px;">{"".join(out)}</div>' if out else ""


# -- the live sections ------------------------------------------------------------------


class Insights:
    """One Accordion section per stage under the live table, then the stages' failures; redrawn with the table.

    The failures lists are outside the Accordion: a stage's errors count links
    to its list, and a link cannot open a closed section.
    """

    def __init__(self, stats: FlowStats, anchor: str) -> None:
        self.anchor = anchor
        self.stages = [i for i, s in enumerate(stats.stages) if s.kind not in ("batch", "unbatch")]
        self._bodies = [ipywidgets.HTML() for _ in self.stages]
        self._failures = [ipywidgets.HTML() for _ in self.stages]
        self._failed = [-1 for _ in self.stages]  # failures drawn per section: redraw only when it grows
        for f in self._failures:
            f.layout.display = "none"  # shown with its first failure
        self.sections = ipywidgets.Accordion(children=self._bodies, selected_index=None)
        self.widget = ipywidgets.VBox([self.sections, *self._failures])
        self.widget.add_class("ezflow-insights")
        self.update(stats)

    def update(self, stats: FlowStats) -> None:
        """Redraw what changed: titles, sections' bodies, failures lists."""
        self._draw_titles(stats)
        for k in range(len(self.stages)):
            self._draw(k, stats)

    def close(self) -> None:
        """Close the accordion and its children (the ended run's static view replaces them)."""
        for w in (*self._bodies, *self._failures, self.sections, self.widget):
            w.close()

    def _draw_titles(self, stats: FlowStats) -> None:
        titles = tuple(_title(stats.stages[i]) for i in self.stages)
        if tuple(self.sections.titles) != titles:
            self.sections.titles = titles

    def _draw(self, k: int, stats: FlowStats) -> None:
        i = self.stages[k]
        s = stats.stages[i]
        body = stage_html(s)
        if self._bodies[k].value != body:
            self._bodies[k].value = body
        failed = len(s.failures) + s.failures_omitted
        if failed != self._failed[k]:
            self._failed[k] = failed
            self._failures[k].value = failures_html(s, self.anchor, i)
            self._failures[k].layout.display = None if failed else "none"
