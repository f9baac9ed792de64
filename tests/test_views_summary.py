"""How the views sum a run up: one spelling, a run's real outcome, an honest bottleneck.

Real runs (thread stages: quick, no processes) feed the text view, the tqdm
bars and the panel's HTML; synthetic stats pin the bottleneck rules.
"""

from __future__ import annotations

import io
import time

import pytest
from _progress_fakes import flow_at

import ezflow
from ezflow._core.stats import FlowStats, StageStats
from ezflow._views.bars import TqdmObserver
from ezflow._views.choose import Delayed
from ezflow._views.figures import bottleneck, outcome, summary, worker_label
from ezflow._views.text import TextObserver

WARN_PANEL = "var(--jp-warn-color0, #c77700)"
GREEN = "#1e9e5a"


def _fail_some(i: int) -> int:
    if i % 5 == 0:
        raise ValueError(f"bad item {i}")
    return i


def _render_html(stats: FlowStats) -> str:
    pytest.importorskip("ipywidgets")
    from ezflow._views.panel import render_html

    return render_html(stats)


def _tqdm_lines(stats_seq: list[FlowStats]) -> list[str]:
    from tqdm.std import tqdm

    out = io.StringIO()
    obs = TqdmObserver(file=out, tqdm_class=tqdm)
    obs.open(stats_seq[0])
    for s in stats_seq[1:-1]:
        obs.update(s)
    obs.close(stats_seq[-1])
    return out.getvalue().replace("\r", "\n").split("\n")


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def open(self, stats: FlowStats) -> None:
        self.calls.append("open")

    def update(self, stats: FlowStats) -> None:
        self.calls.append("update")

    def close(self, stats: FlowStats) -> None:
        self.calls.append("close:" + stats.state)


# -- a run that ends with errors says so, in a warning tone, in every view ---------------


@pytest.fixture(scope="module")
def eight_errors() -> FlowStats:
    flow = ezflow.Flow(range(40)).map(_fail_some, workers=2, mode="thread", errors="return", name="work")
    results = flow.collect(progress=False)
    assert sum(isinstance(r, ezflow.Failure) for r in results) == 8
    return flow.stats


def test_outcome_of_a_run_with_errors_is_a_warning(eight_errors):
    result = outcome(eight_errors)
    assert (result.word, result.tone) == ("done · 8 errors", "warn")
    clean = FlowStats(stages=(StageStats("a", "map", "thread", 1, items_in=3),), elapsed=1.0, state="done")
    assert (outcome(clean).word, outcome(clean).tone) == ("done", "ok")


def test_panel_header_says_done_with_errors_in_amber_not_a_green_badge(eight_errors):
    html = _render_html(eight_errors)
    assert 'data-state="done"' in html and 'data-outcome="done · 8 errors"' in html
    assert "done · 8 errors</span>" in html
    assert f"border-left:4px solid {WARN_PANEL}" in html
    assert GREEN not in html  # no green badge, no green row mark


def test_text_view_ends_with_done_and_the_errors(eight_errors):
    out = io.StringIO()
    TextObserver(out).close(eight_errors)
    assert out.getvalue().startswith("ezflow done · 8 errors in ")


def test_tqdm_bar_of_a_run_with_errors_turns_yellow_and_says_so(eight_errors):
    (bar,) = [ln for ln in _tqdm_lines([eight_errors, eight_errors]) if ln.startswith("work")][-1:]
    assert "done · 8 errors" in bar
    assert "\x1b[33m" in bar  # tqdm's yellow


# -- a failure is shown even when it comes within the first second ----------------------


def test_delayed_shows_a_run_that_failed_fast():
    rec = Recorder()
    view = Delayed(rec, 1.0)
    view.open(flow_at(0.0))
    view.close(flow_at(0.3, state="failed", fail_stage="resize"))
    assert rec.calls == ["open", "close:failed"]


def test_delayed_shows_a_real_run_that_failed_fast():
    rec = Recorder()

    def boom(i: int) -> int:
        raise ValueError("no")

    with pytest.raises(ezflow.TaskError):
        ezflow.Flow(range(10)).map(boom, mode="thread").collect(progress=Delayed(rec, 1.0))
    assert rec.calls[0] == "open" and rec.calls[-1] == "close:failed"


def test_delayed_still_hides_a_fast_run_that_did_not_fail():
    for state in ("done", "cancelled"):
        rec = Recorder()
        view = Delayed(rec, 1.0)
        view.open(flow_at(0.0))
        view.close(flow_at(0.3, state=state))
        assert rec.calls == []


# -- the bottleneck: settled figures, and never a stage blocked on its output ----------------


def test_no_bottleneck_before_the_figures_settle():
    assert bottleneck(flow_at(0.6)) is None  # under a second of run
    assert bottleneck(flow_at(2.0)).name == "resize"
    starting = tuple(
        StageStats(n, "map", "thread", 4, items_in=5, in_flight=4, busy_seconds=8.0, elapsed=2.0, queue_fill=1.0)
        for n in ("a", "b")
    )
    assert bottleneck(FlowStats(stages=starting, elapsed=2.0)) is None  # one item done: 4 workers not yet warm


def _stage(name: str, *, busy: float, fill: float, inbox_full: float = 0.0) -> StageStats:
    return StageStats(
        name, "map", "thread", 2, items_in=100, busy_seconds=busy * 2 * 3.0, elapsed=3.0,
        queue_fill=fill, state="running", inbox_full_seconds=inbox_full,
    )  # fmt: skip


def test_a_stage_waiting_on_a_full_downstream_queue_is_not_the_bottleneck():
    # "load" scores highest (busy and a full input queue), but it spent most
    # of the run waiting for room in "resize"'s queue: resize holds it back.
    load = _stage("load", busy=0.95, fill=1.0)
    resize = _stage("resize", busy=0.9, fill=0.5, inbox_full=2.0)
    save = _stage("save", busy=0.1, fill=0.0)
    stats = FlowStats(stages=(load, resize, save), elapsed=3.0, state="running")
    assert stats.blocked_on_output(0) == 2.0
    assert bottleneck(stats).name == "resize"
    # Without the wait, load would have been named.
    plain = FlowStats(stages=(load, _stage("resize", busy=0.9, fill=0.5), save), elapsed=3.0, state="running")
    assert bottleneck(plain).name == "load"


def _fast(i: int) -> int:
    return i


def _slow(i: int) -> int:
    time.sleep(0.004)
    return i


def test_the_engine_counts_time_blocked_putting_to_the_next_stage():
    flow = (
        ezflow.Flow(range(300))
        .map(_fast, workers=2, mode="thread", name="fast", chunksize=1)
        .map(_slow, workers=1, mode="thread", name="slow", chunksize=1)
    )
    assert flow.collect(progress=False) == list(range(300))
    stats = flow.stats
    # "fast" waited for room in "slow"'s queue for most of the run.
    assert stats["slow"].inbox_full_seconds > 0.3 * stats.elapsed, stats
    assert stats.blocked_on_output(0) == stats["slow"].inbox_full_seconds
    assert bottleneck(stats) is None or bottleneck(stats).name == "slow"


# -- unbatch bars count items; one worker label everywhere -------------------------------


def _double(batch: list[int]) -> list[int]:
    return [x * 2 for x in batch]


@pytest.fixture(scope="module")
def unbatched() -> FlowStats:
    flow = ezflow.Flow(range(725)).batch(32).map(_double, workers=2, mode="thread", name="model").unbatch()
    assert len(flow.collect(progress=False)) == 725
    return flow.stats


def test_unbatch_bar_counts_the_items_out_like_the_table(unbatched):
    assert unbatched["unbatch"].items_out == 725 and unbatched["unbatch"].done == 23
    (bar,) = [ln for ln in _tqdm_lines([unbatched, unbatched]) if ln.startswith("unbatch")][-1:]
    assert "725it" in bar and " 23it" not in bar
    html = _render_html(unbatched)
    row = html[html.index('<tr data-stage="unbatch"') :]
    row = row[: row.index("</tr>")]
    assert 'data-done="23"' in row and 'data-out="725"' in row  # hooks: the stats' figures
    assert ">725</td>" in row  # what a person reads: items, as the table's "out"


def test_one_spelling_of_worker_labels_in_every_view(unbatched):
    label = worker_label(unbatched["model"])
    assert label == "thread×2"
    assert f"  {label}  " in repr(unbatched)
    assert f"  {label}  " in summary(unbatched)
    assert f">{label}</td>" in _render_html(unbatched)
    assert "threadx2" not in repr(unbatched) and "thread x2" not in summary(unbatched)


def test_a_failed_stage_note_leads_with_what_failed_not_the_stage_name_again():
    def boom(i: int) -> int:
        raise ValueError("cannot resize")

    # one worker: item 0 is the first to fail (with more, any item may fail first)
    flow = ezflow.Flow(range(10)).map(boom, mode="thread", workers=1, name="resize")
    with pytest.raises(ezflow.TaskError):
        flow.collect(progress=False)
    stats = flow.stats
    # the class is TaskError and ValueError at once: its name says both
    assert stats["resize"].error.startswith("TaskError(ValueError): stage 'resize' failed on item ")
    (bar,) = [ln for ln in _tqdm_lines([stats, stats]) if ln.startswith("resize")][-1:]
    assert "FAILED on item 0 (0): ValueError: cannot resize" in bar
    assert "stage 'resize' failed on item 0 (0): ValueError: cannot resize" in summary(stats)


# -- checkpoint and worker-memory figures show in every view, only when non-zero ----------


def _memory_run() -> FlowStats:
    stage = StageStats(
        name="thumb",
        kind="map",
        mode="process",
        workers=2,
        items_in=10,
        items_out=9,
        errors=1,
        elapsed=2.0,
        total=10,
        state="done",
        peak_worker_rss=1_500_000_000,
        workers_recycled=3,
        memory_failures=1,
    )
    return FlowStats(stages=(stage,), elapsed=2.0, state="done", total=10, from_checkpoint=90)


def test_memory_and_checkpoint_figures_show_in_every_view():
    stats = _memory_run()
    for text in (summary(stats), repr(stats), _render_html(stats), "\n".join(_tqdm_lines([stats, stats]))):
        assert "peak RSS 1.5 GB" in text
        assert "3 recycled" in text
        assert "1 memory failure" in text
    for text in (summary(stats), repr(stats), _render_html(stats)):
        assert "90 from checkpoint" in text
    out = io.StringIO()
    TextObserver(out, interval=0).update(stats)
    assert "90 from checkpoint" in out.getvalue()


def test_zero_memory_and_checkpoint_figures_stay_hidden(eight_errors):
    for text in (summary(eight_errors), repr(eight_errors), _render_html(eight_errors)):
        assert "RSS" not in text and "recycled" not in text
        assert "memory failure" not in text and "checkpoint" not in text


def _square(i: int) -> int:
    return i * i


def test_a_real_resumed_run_says_how_many_results_came_from_the_checkpoint(tmp_path):
    path = tmp_path / "ck"
    ezflow.Flow(range(6)).map(_square, mode="thread", workers=1, name="sq").collect(
        checkpoint=str(path), progress=False
    )
    flow = ezflow.Flow(range(10)).map(_square, mode="thread", workers=1, name="sq")
    assert flow.collect(checkpoint=str(path), progress=False) == [i * i for i in range(10)]
    assert flow.stats.from_checkpoint == 6
    assert "6 from checkpoint" in summary(flow.stats)
    assert "6 from checkpoint" in repr(flow.stats)
    assert "6 from checkpoint" in _render_html(flow.stats)


def test_rates_and_the_sparkline_of_a_stage():
    from ezflow._views.figures import rates

    samples = [(0.0, 0), (1.0, 10), (2.0, 30), (2.0, 30), (4.0, 30)]
    assert rates(samples) == [10.0, 20.0, 0.0]
    stats = _memory_run()
    assert "<svg" not in _render_html(stats)
    pytest.importorskip("ipywidgets")
    from ezflow._views.panel import render_html

    html = render_html(stats, history={"thumb": samples})
    assert html.count('<svg class="ezflow-spark"') == 1
    assert "--jp-brand-color1" in html
