"""The panel's insights as HTML: workers, slowest items and every failure, and the link from the errors count."""

from __future__ import annotations

import re
import time

import pytest

import ezflow
from ezflow._core.record import replace

pytest.importorskip("ipywidgets")

from ezflow._views.panel import render_html  # noqa: E402
from ezflow._views.panel_details import anchor_of, render_details  # noqa: E402


def odd_fails(x):
    if x % 2:
        raise ValueError(f"odd <{x}>")
    return x


@pytest.mark.timeout(60)
def test_the_ended_view_lists_every_failure_and_the_errors_count_links_to_it():
    flow = ezflow.Flow(range(100)).map(odd_fails, mode="thread", workers=2, errors="return", name="odd")
    flow.collect()
    stats = flow.stats
    page = render_html(stats, anchor="p1", details=render_details(stats, "p1"))
    target = anchor_of("p1", 0)
    assert f'<a href="#{target}"' in page
    assert f'id="{target}"' in page
    found = sorted(int(i) for i in re.findall(r'data-failure-index="(\d+)"', page))
    assert found == list(range(1, 100, 2))
    assert "odd &lt;1&gt;" in page  # messages are escaped
    assert page.count("<details") == 1 + 50  # the stage's section, and one traceback each
    assert 'data-details-of="odd"' in page and 'data-worker="0"' in page and "data-slow-index" in page
    assert not re.search(r"#[0-9a-fA-F]{3,6}\b(?![^(]*\))", page.replace("&#x27;", "")), "a colour outside var()"


def test_the_live_sections_are_drawn_before_they_are_opened():
    # while collect() runs the kernel is busy: it never hears that a section was opened
    from ezflow._views.panel_details import Insights

    flow = ezflow.Flow(range(20)).map(odd_fails, mode="thread", workers=2, errors="skip", name="a").map(
        abs, mode="thread", name="b"
    )
    flow.collect()
    live = Insights(flow.stats, "p2")
    assert live.sections.titles[0].startswith("a · 2 workers") and live.sections.titles[0].endswith("10 failures")
    assert live.sections.selected_index is None  # all closed
    assert 'data-insights-of="a"' in live._bodies[0].value and 'data-insights-of="b"' in live._bodies[1].value
    assert 'data-failures-of="a"' in live._failures[0].value and live._failures[1].value == ""
    drawn = live._failures[0].value
    live.update(flow.stats)
    assert live._failures[0].value is drawn  # unchanged failures are not sent again
    live.close()


def test_the_sections_are_redrawn_no_faster_than_the_table():
    from ezflow._views.panel import WidgetObserver

    flow = ezflow.Flow(range(20)).map(odd_fails, mode="thread", workers=2, errors="skip", name="a")
    flow.collect()
    base = flow.stats
    obs = WidgetObserver(min_interval=0.25)
    obs.open(base)
    sends = []
    assert obs.insights is not None
    obs.insights._bodies[0].observe(lambda change: sends.append(change), names="value")
    start = time.monotonic()
    ticks = 0
    while time.monotonic() - start < 1.0:  # the engine may tick far faster than anyone reads
        stage = base.stages[0]
        busier = replace(stage.worker_stats[0], busy_s=float(ticks))  # a body that changes at every tick
        obs.update(replace(base, stages=(replace(stage, worker_stats=(busier, *stage.worker_stats[1:])),)))
        ticks += 1
    obs.close(base)
    assert ticks > 100
    assert 1 <= len(sends) <= 1.0 / 0.25 + 1, len(sends)


def shouts(x):
    raise ValueError("A" + "x" * 50_000 + "Z")


def test_a_long_traceback_is_cut_in_the_panel():
    flow = ezflow.Flow(range(3)).map(shouts, mode="thread", workers=1, errors="skip", name="loud")
    flow.collect()
    page = render_details(flow.stats, "p3")
    assert page.count("characters cut: flow.stats has them") == 3
    assert len(page) < 3 * 6_000 + 5_000
