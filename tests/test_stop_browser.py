"""The panel's Stop button, clicked in live JupyterLab + Chromium, stops the run as `handle.cancel()` does.

    cell 1: setup, prints the kernel's pid
    cell 2: ezflow.map over 8 arrays whose items sleep 30 s, blocking the cell  -> click Stop
            -> the cell ends within seconds with ezflow.Cancelled; the panel reads "stopped"
    cell 3: the exception's results, the kernel's children and its /dev/shm segments
    cell 4: flow.start() in the background (the kernel is idle)                   -> click Stop
    cell 5: the handle is done, cancelled, and wait() returns what finished

in JupyterLab and in Notebook 7 (the classic-looking front end, built on JupyterLab's parts).

A click reaches a kernel that is busy in cell 2 because JupyterLab (>= 4.4)
sends widget messages on a kernel subshell (ipykernel >= 7), which runs in
its own thread. Screenshots go to tests/artifacts/ (git-ignored); look at them.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from _browser import chromium_page, jupyterlab, require_browser, wait_for_idle_kernel

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("EZFLOW_SCREENSHOTS", REPO / "tests" / "artifacts"))

SETUP = """\
import gc, os, sys, time
import numpy as np, psutil, ezflow

def sleepy(a):
    time.sleep(30)
    return a

def steady(i):
    time.sleep(0.1)
    return i

ezflow.shutdown()
print("kernel pid", os.getpid())"""

BLOCKED = """\
t0 = time.monotonic()
out = ezflow.map(sleepy, [np.ones(1 << 20) for _ in range(8)], workers=2, progress=True)"""

AFTER = """\
took = time.monotonic() - t0
e = sys.last_value
gc.collect()
# the segment watcher (python -I -S) may stay; no worker may
kids = len([c for c in psutil.Process().children() if "-I" not in c.cmdline()])
ezflow.shutdown()  # free segments are otherwise kept for the next run
time.sleep(0.5)
mine = [n for n in os.listdir("/dev/shm") if n.startswith(f"ezf_{os.getpid()}_") and not n.endswith("_live")]
print(f"after {type(e).__name__} results={len(e.results)} took={took:.1f} kids={kids} "
      f"children={len(psutil.Process().children())} segments={len(mine)}")"""

BACKGROUND = """\
h = ezflow.Flow(range(600)).map(steady, workers=2, mode="thread", chunksize=1, name="steady").start(progress=True)"""

CHECK = """\
got = h.wait(timeout=30)
print(f"background done={h.done()} state={h.stats.state} kept={len(got)} in_order={got == list(range(len(got)))}")"""


def _line(page, prefix: str, timeout_ms: int) -> str:
    out = page.locator(".jp-OutputArea-output", has_text=prefix).first
    out.wait_for(timeout=timeout_ms)
    return re.search(prefix + r".*", out.inner_text()).group(0)


@pytest.mark.parametrize("app", ["jupyterlab", "notebook"])
def test_stop_button_stops_a_blocked_cell_and_a_background_run(tmp_path, app):
    require_browser(app)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with jupyterlab(tmp_path, pythonpath=[str(REPO)], app=app) as lab, chromium_page() as page:
        lab.write_notebook("stop.ipynb", [SETUP, BLOCKED, AFTER, BACKGROUND, CHECK])
        page.goto(lab.notebook_url("stop.ipynb"))
        wait_for_idle_kernel(page, app=app)
        page.locator(".jp-Cell .jp-InputArea-editor").first.click()
        for _ in range(2):  # setup and the blocking map (a cell queued behind an error would be skipped)
            page.keyboard.press("Shift+Enter")

        # the blocked cell: its panel has a Stop button; click it once two items are under way
        stop = page.locator(".ezflow-stop").first
        stop.wait_for(timeout=40_000)
        page.locator('.ezflow-panel tr[data-stage] ').first.wait_for(timeout=10_000)
        time.sleep(2)
        page.locator(".ezflow-panel").first.locator("xpath=..").screenshot(path=str(ARTIFACTS / f"stop_live_{app}.png"))
        stop.click()

        try:
            page.locator(".jp-OutputArea-output", has_text="Cancelled").first.wait_for(timeout=20_000)
            page.locator(".jp-Cell .jp-InputArea-editor").nth(2).click()
            page.keyboard.press("Shift+Enter")
            report = _line(page, "after ", 40_000)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / f"stop_failed_{app}.png"))
            raise
        fields = dict(kv.split("=") for kv in report.split()[2:])
        assert report.startswith("after Cancelled"), report
        assert float(fields["took"]) < 20, f"the cell should end at the click, not after the 30 s items: {report}"
        assert fields["children"] == "0" and fields["segments"] == "0", report
        # the busy workers were stopped by the click itself, not by the shutdown() after it
        assert fields["kids"] == "0", report
        error = page.locator(".jp-OutputArea-output", has_text="Cancelled").first
        assert "the run was stopped by the panel's Stop button" in error.inner_text()
        panel = page.locator('.ezflow-run[data-outcome="stopped"]').first
        panel.wait_for(timeout=10_000)
        panel.screenshot(path=str(ARTIFACTS / f"stop_blocked_done_{app}.png"))
        assert page.locator(".ezflow-stop").count() == 0  # the final static view has no button

        # a background run: the kernel is idle, the click stops it, the handle keeps what finished
        page.locator(".jp-Cell .jp-InputArea-editor").nth(3).click()
        page.keyboard.press("Shift+Enter")
        stop = page.locator(".ezflow-stop").first
        stop.wait_for(timeout=30_000)
        time.sleep(1.5)
        stop.click()
        page.locator('.ezflow-run[data-outcome="stopped"]').nth(1).wait_for(timeout=20_000)
        page.locator(".jp-Cell .jp-InputArea-editor").nth(4).click()
        page.keyboard.press("Shift+Enter")
        report = _line(page, "background done=", 40_000)
        assert "done=True state=cancelled" in report and "in_order=True" in report, report
        kept = int(re.search(r"kept=(\d+)", report).group(1))
        assert 0 < kept < 600, report
        page.screenshot(path=str(ARTIFACTS / f"stop_page_{app}.png"))
