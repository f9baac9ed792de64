"""Progress views: selection rules, text, tqdm under a real pseudo-terminal, the widget in a real kernel."""

from __future__ import annotations

import io
import json
import os
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from _progress_fakes import flow_at, run_of

from ezflow._core.stats import FlowStats, StageStats
from ezflow._views.bars import TqdmObserver
from ezflow._views.choose import Delayed, make_observer
from ezflow._views.figures import bottleneck, summary
from ezflow._views.text import TextObserver

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
NAMES = ("load", "resize", "keep_large")


def feed(observer, seq: list[FlowStats]) -> None:
    """Drive an observer the way the engine does: open, updates, close."""
    observer.open(seq[0])
    for stats in seq[1:-1]:
        observer.update(stats)
    observer.close(seq[-1])


class Recorder:
    """A minimal observer that remembers every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []

    def open(self, stats: FlowStats) -> None:
        self.calls.append(("open", stats.elapsed))

    def update(self, stats: FlowStats) -> None:
        self.calls.append(("update", stats.elapsed))

    def close(self, stats: FlowStats) -> None:
        self.calls.append(("close", stats.elapsed))


# -- make_observer selection ------------------------------------------------------


def test_auto_is_silent_off_a_terminal():
    # pytest captures stderr: not a tty, no kernel: CI and logs get no bars.
    assert not sys.stderr.isatty()
    assert make_observer(None) is None


def test_false_is_none_and_true_gives_tqdm_in_a_terminal(monkeypatch):
    assert make_observer(False) is None
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert isinstance(make_observer(True), TqdmObserver)
    assert isinstance(make_observer("tqdm"), TqdmObserver)
    assert isinstance(make_observer("TQDM"), TqdmObserver)


def test_bars_off_a_terminal_are_plain_lines():
    # pytest captures stderr: a pipe, as `python script.py 2>&1 | cat` or `> log.txt`
    assert not sys.stderr.isatty()
    for asked in (True, "tqdm"):
        assert isinstance(make_observer(asked), TextObserver), asked


def test_text_and_widget_outside_a_notebook_fall_back_to_text():
    assert isinstance(make_observer("text"), TextObserver)
    assert isinstance(make_observer("widget"), TextObserver)
    assert isinstance(make_observer("notebook"), TextObserver)


def test_an_observer_object_is_used_as_is():
    rec = Recorder()
    assert make_observer(rec) is rec


@pytest.mark.parametrize("bad", ["rich", 3, object()])
def test_unknown_progress_names_the_choices(bad):
    with pytest.raises(ValueError, match="progress must be None, True, False, 'tqdm'"):
        make_observer(bad)


def test_import_ezflow_does_not_import_tqdm_or_ipywidgets():
    code = (
        "import sys, ezflow, ezflow._views.choose\n"
        "heavy = [m for m in ('tqdm', 'ipywidgets', 'IPython') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


# -- Delayed ------------------------------------------------------------------------


def test_delayed_shows_nothing_for_a_fast_run():
    rec = Recorder()
    feed(Delayed(rec, 1.0), run_of(4))  # ends at 0.8 s
    assert rec.calls == []


def test_delayed_opens_once_the_run_passes_the_delay():
    rec = Recorder()
    feed(Delayed(rec, 1.0), run_of(10))  # ticks at 0.2 s up to 2.0 s
    kinds = [k for k, _ in rec.calls]
    assert kinds[0] == "open" and kinds[-1] == "close"
    assert kinds.count("open") == 1 and kinds.count("close") == 1
    assert rec.calls[0] == ("open", 1.0)
    assert all(t >= 1.0 for _, t in rec.calls)


def test_delayed_shows_a_run_that_ends_late_even_without_updates():
    rec = Recorder()
    seq = [flow_at(0.0), flow_at(3.0, state="done")]
    feed(Delayed(rec, 1.0), seq)
    assert [k for k, _ in rec.calls] == ["open", "close"]


def test_delay_must_not_be_negative():
    with pytest.raises(ValueError, match="delay must be >= 0"):
        Delayed(Recorder(), -1)


# -- text and summary -----------------------------------------------------------------


def test_text_observer_writes_status_lines_and_a_summary():
    out = io.StringIO()
    feed(TextObserver(out, interval=1.0), run_of(16))  # 3.2 s of run
    lines = out.getvalue().splitlines()
    assert lines[0] == "ezflow: running load -> resize -> keep_large"
    status = [ln for ln in lines if ln.startswith("[")]
    assert [ln[:6] for ln in status] == ["[1.0s]", "[2.0s]", "[3.0s]"]
    assert "load 400/1.0k" in status[0]
    assert lines[len(status) + 1].startswith("ezflow done · 4 errors · 2 skipped in 3.2s")
    for name in NAMES:
        assert any(ln.startswith(name) for ln in lines)


def test_summary_table_has_each_stage_figures():
    text = summary(flow_at(9.0, state="done"))
    head, columns, *rows = text.splitlines()
    assert head == "ezflow done · 4 errors · 2 skipped in 9.0s; bottleneck: resize (busy 97%)"
    assert columns.split() == ["stage", "mode", "items", "out", "items/s", "busy", "errors", "skipped", "retries"]
    resize = rows[1].split()
    assert resize == ["resize", "process×2", "1.0k/1.0k", "994", "111", "97%", "4", "2", "8"]


def test_summary_names_the_failed_stage_and_its_error():
    text = summary(flow_at(3.0, state="failed", fail_stage="resize"))
    assert text.startswith("ezflow failed in 3.0s")
    assert "stage 'resize' failed: ValueError: cannot resize an empty image" in text
    assert text.count("cannot resize") == 1  # the flow error repeats the stage's: said once


def test_bottleneck_needs_two_stages_and_a_busy_one():
    stats = flow_at(2.0)
    assert bottleneck(stats).name == "resize"
    assert bottleneck(FlowStats(stages=stats.stages[:1], elapsed=2.0)) is None
    idle = tuple(
        StageStats(name=n, kind="map", mode="thread", workers=1, items_in=5, busy_seconds=0.1, elapsed=2.0)
        for n in ("a", "b")
    )
    assert bottleneck(FlowStats(stages=idle, elapsed=2.0)) is None


def test_bottleneck_is_the_stage_that_held_the_whole_run_back():
    # "fast" kept 4 workers busy for its 0.75 s, then waited; "slow" kept 2
    # busy for the whole 2 s run: slow held the flow back, though both were
    # near 100% busy during their own lives.
    stages = (
        StageStats("fast", "map", "thread", 4, items_in=300, busy_seconds=3.0, elapsed=0.76, state="done"),
        StageStats("slow", "map", "thread", 2, items_in=200, busy_seconds=4.0, elapsed=2.05, state="done"),
    )
    assert bottleneck(FlowStats(stages=stages, elapsed=2.1, state="done")).name == "slow"
    assert bottleneck(FlowStats(stages=stages, elapsed=2.1, state="failed")) is None


# -- tqdm (in-memory stream) --------------------------------------------------------------


def _tqdm_text(seq: list[FlowStats], **kw) -> str:
    from tqdm.std import tqdm

    out = io.StringIO()
    feed(TqdmObserver(file=out, tqdm_class=tqdm, **kw), seq)
    return out.getvalue()


def test_tqdm_bars_show_counts_rates_and_the_bottleneck():
    text = _tqdm_text(run_of(10))
    last = {name: [ln for ln in text.replace("\r", "\n").split("\n") if ln.startswith(name)][-1] for name in NAMES}
    assert last["load"].startswith("load      : 100%|")  # names padded: bars align
    assert "1000/1000" in last["load"] and "busy 35%" in last["load"]
    assert "<< bottleneck" in last["resize"] and "4 errors" in last["resize"] and "8 retries" in last["resize"]
    assert "it/s" in last["keep_large"]
    assert len({ln.index("|") for ln in last.values()}) == 1


def test_tqdm_failed_bar_stays_red_with_the_error_and_prints_the_summary():
    text = _tqdm_text(run_of(5, final="failed", fail_stage="resize"), print_summary=True)
    bar = [ln for ln in text.replace("\r", "\n").split("\n") if ln.startswith("resize    :")][-1]
    assert "FAILED: ValueError: cannot resize an empty image" in bar
    assert "\x1b[31m" in bar  # tqdm's red
    assert "ezflow failed in 1.0s" in text
    assert "stage 'resize' failed" in text


# -- tqdm under a real pseudo-terminal ---------------------------------------------------------

PTY_SCRIPT = """
import sys
sys.path[:0] = [{repo!r}, {tests!r}]
from _progress_fakes import run_of
from ezflow._views.choose import make_observer

def feed(obs, seq):
    obs.open(seq[0])
    for s in seq[1:-1]:
        obs.update(s)
    obs.close(seq[-1])

obs = make_observer(None)
print("AUTO", type(obs).__name__, type(obs.view).__name__, obs.delay, flush=True)
print("FAST-START", flush=True)
feed(obs, run_of(3))  # 0.6 s: under the delay, nothing drawn
print("FAST-END", flush=True)
feed(make_observer(None), run_of(12))  # 2.4 s
print("SLOW-END", flush=True)
"""


def _run_in_pty(code: str, *, cols: int = 120, rows: int = 30, timeout: float = 30) -> str:
    """Run Python code with stdin/stdout/stderr on a new pseudo-terminal; return all it wrote."""
    import fcntl
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        proc.wait(timeout=10)
    assert proc.returncode == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode("utf-8", errors="replace")


def test_auto_in_a_terminal_draws_stacked_bars_after_the_delay():
    out = _run_in_pty(PTY_SCRIPT.format(repo=str(REPO), tests=str(TESTS)))
    assert "AUTO Delayed TqdmObserver 1.0" in out
    fast = out[out.index("FAST-START") + len("FAST-START") : out.index("FAST-END")]
    assert fast.strip() == "", f"a run under the delay drew something: {fast!r}"
    slow = out[out.index("FAST-END") + len("FAST-END") : out.index("SLOW-END")]
    # Stacked: tqdm moves the cursor down to bar i and back up with ESC[A.
    assert "\x1b[A" in slow
    screen = slow.replace("\r\n", "\n").replace("\r", "\n")
    finals = {
        name: [ln for ln in screen.split("\n") if name.ljust(10) + ":" in ln and "1000/1000" in ln] for name in NAMES
    }
    assert all(finals.values()), finals
    assert "load      :" in slow and "resize    :" in slow and "keep_large:" in slow


# -- the widget panel in a real Jupyter kernel --------------------------------------------------

KERNEL_CELLS = [
    # 0: set up
    """
import sys, time
sys.path[:0] = [{repo!r}, {tests!r}]
from _progress_fakes import run_of
from ezflow._views.choose import make_observer

def feed(obs, seq):
    obs.open(seq[0])
    for s in seq[1:-1]:
        obs.update(s)
    obs.close(seq[-1])
""",
    # 1: a successful run, shown from the start; count how many draws reach the browser
    """
obs = make_observer(True)
print(type(obs).__name__)
seq = run_of(10)
obs.open(seq[0])
draws = []
obs.widget.observe(lambda change: draws.append(change["new"]), names="value")
t0 = time.monotonic()
for s in seq[1:-1]:
    obs.update(s)
    time.sleep(0.05)
obs.close(seq[-1])
spent = time.monotonic() - t0
print("draws", len(draws), "limit", int(spent / 0.25) + 2)
""",
    # 2: a failing run
    """
obs = make_observer("widget")
feed(obs, run_of(5, final="failed", fail_stage="resize"))
""",
    # 3: auto: a fast run shows nothing, a run over the delay shows the panel
    """
auto = make_observer(None)
print(type(auto).__name__, type(auto.view).__name__)
feed(auto, run_of(3))
print("fast shown:", auto.shown)
auto = make_observer(None)
feed(auto, run_of(8))
print("slow shown:", auto.shown)
""",
]


def _execute_notebook(cells: list[str]):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(c).format(repo=str(REPO), tests=str(TESTS))) for c in cells]
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=60,
        store_widget_state=True,
        resources={"metadata": {"path": str(REPO)}},
    )
    client.execute()
    return nb


def _widget_views(outputs) -> list[str]:
    return [
        o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
        for o in outputs
        if o.get("output_type") == "display_data" and "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]


def _stdout(outputs) -> str:
    return "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")


@pytest.mark.timeout(120)
def test_widget_panel_in_a_real_kernel():
    nb = _execute_notebook(KERNEL_CELLS)
    state = nb.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    cells = nb.cells

    # 1: an ended run's panel is a static view: no widget-view mime survives
    # in the saved notebook, only text/html and text/plain with the final figures
    assert _stdout(cells[1].outputs).startswith("WidgetObserver")
    assert _widget_views(cells[1].outputs) == []
    (display,) = [o for o in cells[1].outputs if o.get("output_type") == "display_data"]
    assert set(display["data"]) == {"text/html", "text/plain"}
    value = display["data"]["text/html"]
    assert 'data-state="done"' in value
    for name in NAMES:
        assert f'data-stage="{name}" data-done="1000" data-total="1000" data-state="done"' in value
    assert "bottleneck" in value
    assert display["data"]["text/plain"].startswith("ezflow done · 4 errors · 2 skipped in 2.0s")
    assert 'data-state="done"' in display["data"]["text/html"]
    # Throttled: at most one draw per 0.25 s, whatever the update rate.
    words = _stdout(cells[1].outputs).split()
    draws, limit = int(words[words.index("draws") + 1]), int(words[words.index("limit") + 1])
    assert 1 <= draws <= limit, (draws, limit)

    # 2: the failed run stays, red, naming the stage and the error
    (bad,) = [o for o in cells[2].outputs if o.get("output_type") == "display_data"]
    value = bad["data"]["text/html"]
    assert 'data-state="failed"' in value
    assert 'data-stage="resize" data-done="150" data-total="1000" data-state="failed"' in value
    assert "ValueError: cannot resize an empty image" in value
    assert "#d64541" in value  # the failure red

    # 3: auto mode waits for the run to pass the delay
    out = _stdout(cells[3].outputs)
    assert "Delayed WidgetObserver" in out
    assert "fast shown: False" in out and "slow shown: True" in out
    assert _widget_views(cells[3].outputs) == []
    assert len([o for o in cells[3].outputs if 'class="ezflow-run"' in o.get("data", {}).get("text/html", "")]) == 1
    assert json.dumps(state)  # the whole saved state is plain JSON
