"""Stopping a run from its view (the panel's Stop button), on every mode, with the engine's real threads.

    view.bind_stop(stop) <- Run.start    a view with a Stop button gets a callable, never the run
    stop() from another thread           -> collect()/map() raise ezflow.Cancelled(.results = the prefix)
                                         -> a loop over imap()/Flow.iter() raises it where it stands
                                         -> handle.wait() returns what finished, as after handle.cancel()

The click itself, in JupyterLab + Chromium while a cell blocks, is tests/test_stop_browser.py.
"""

from __future__ import annotations

import threading
import time

import pytest

import ezflow
from ezflow._views.choose import Delayed
from ezflow._views.panel import WidgetObserver, render_html

pytestmark = pytest.mark.timeout(90)


def slow_double(x: int) -> int:
    time.sleep(0.02)
    return 2 * x


class StopAfter:
    """A view with a Stop button that presses it once `n` items are done (another thread, like a click)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.stop = None
        self.pressed = threading.Event()
        self.closed_state = None

    def bind_stop(self, stop) -> None:
        self.stop = stop

    def open(self, stats) -> None:
        pass

    def update(self, stats) -> None:
        if not self.pressed.is_set() and stats.stages[-1].items_out >= self.n:
            self.pressed.set()
            threading.Thread(target=self.stop).start()

    def close(self, stats) -> None:
        self.closed_state = stats.state


def test_stop_from_the_view_ends_collect_with_cancelled_and_keeps_the_prefix(mode):
    view = StopAfter(10)
    flow = ezflow.Flow(range(2000)).map(mode.fn(slow_double), workers=2, chunksize=1, **mode)
    start = time.monotonic()
    with pytest.raises(ezflow.Cancelled, match=r"stopped by the panel.s Stop button; (the \d+ results|the result|no result)") as info:
        flow.collect(progress=view)
    assert time.monotonic() - start < 30  # 2000 items would take 20 s on 2 workers
    got = info.value.results
    assert len(got) >= 1 and got == [2 * i for i in range(len(got))]  # in order, nothing made up
    # the view closes on the stopping thread, which may still be at it when collect() has raised
    deadline = time.monotonic() + 5
    while view.closed_state is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert view.closed_state == "cancelled"
    assert flow.stats.state == "cancelled"


def test_stop_ends_an_imap_loop_where_it_stands():
    view = StopAfter(5)
    seen = []
    with pytest.raises(ezflow.Cancelled, match="Stop button"):
        for x in ezflow.imap(slow_double, range(2000), workers=2, chunksize=1, mode="thread", progress=view):
            seen.append(x)
    assert seen == [2 * i for i in range(len(seen))]


def test_stop_from_the_view_on_a_started_run_keeps_what_finished():
    view = StopAfter(5)
    handle = ezflow.Flow(range(2000)).map(slow_double, workers=2, chunksize=1, mode="thread").start(progress=view)
    assert view.pressed.wait(20)
    got = handle.wait(timeout=20)  # no exception: a stop is not a failure
    assert handle.done() and handle.stats.state == "cancelled"
    assert 0 < len(got) < 2000 and got == [2 * i for i in range(len(got))]


def test_a_stop_after_the_run_ended_does_nothing():
    view = StopAfter(10**9)
    out = ezflow.Flow(range(20)).map(slow_double, mode="thread").collect(progress=view)
    view.stop()
    assert out == [2 * i for i in range(20)] and view.closed_state == "done"


def test_a_stopped_run_with_a_checkpoint_keeps_its_results_for_the_next_call(tmp_path):
    path = tmp_path / "run"
    with pytest.raises(ezflow.Cancelled) as info:
        ezflow.map(slow_double, range(400), workers=2, chunksize=1, mode="thread", checkpoint=path, progress=StopAfter(20))
    kept = len(info.value.results)
    calls = []

    def counted(x: int) -> int:
        calls.append(x)
        return slow_double(x)

    out = ezflow.map(counted, range(400), workers=2, mode="thread", checkpoint=path, checkpoint_match="position")
    assert out == [2 * i for i in range(400)]
    assert len(calls) <= 400 - kept


# -- the panel's side, without a kernel (ipywidgets runs its handlers in-process) ---------------------


def test_the_panel_shows_a_stop_button_only_when_it_can_stop(capsys):
    pytest.importorskip("ipywidgets")
    flow = ezflow.Flow(range(3)).map(slow_double, mode="thread")
    flow.collect(progress=False)
    plain = WidgetObserver()  # opened by hand: nothing to stop
    plain.open(flow.stats)
    assert plain.stop_button is None and len(plain.view.children) == 2

    pressed = []
    panel = WidgetObserver()
    panel.bind_stop(lambda: pressed.append(threading.current_thread().name))
    panel.open(flow.stats)
    button = panel.stop_button
    assert button is not None and "ezflow-stop" in button._dom_classes and button in panel.view.children
    button.click()
    button.click()  # a second click while stopping does nothing
    deadline = time.monotonic() + 5
    while not pressed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pressed == ["ezflow-stop"]  # not on the thread that delivered the click
    assert panel.stopped and button.disabled and button.description.startswith("Stopping")


def test_a_run_hands_its_stop_to_the_panel(capsys):
    pytest.importorskip("ipywidgets")
    panel = WidgetObserver(min_interval=0)
    flow = ezflow.Flow(range(2000)).map(slow_double, workers=2, chunksize=1, mode="thread")
    threading.Timer(0.5, lambda: panel.stop_button.click()).start()
    with pytest.raises(ezflow.Cancelled, match="Stop button"):
        flow.collect(progress=panel)
    assert panel.stopped and 'data-outcome="stopped"' in panel.widget.value


def test_a_stopped_panel_reads_stopped():
    flow = ezflow.Flow(range(2000)).map(slow_double, mode="thread", chunksize=1)
    with pytest.raises(ezflow.Cancelled):
        flow.collect(progress=StopAfter(3))
    html = render_html(flow.stats, stopped=True)
    assert 'data-outcome="stopped"' in html and "stopped with the Stop button" in html
    assert 'data-outcome="cancelled"' in render_html(flow.stats)  # handle.cancel(), break: still "cancelled"


def test_the_delayed_view_hands_the_stop_to_the_panel():
    got = []
    inner = StopAfter(0)
    delayed = Delayed(inner, 1.0)
    delayed.bind_stop(lambda: got.append(1))
    inner.stop()
    assert got == [1]
