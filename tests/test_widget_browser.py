"""The notebook panel as a person sees it: live JupyterLab, headless Chromium, the real DOM.

Needs Debian's chromium plus the playwright and jupyterlab packages
(``sudo bash .ci/install-browser`` for Chromium, the test extra for the rest); skipped without them, except under CI=true
where a missing browser fails the test. Screenshots go to
tests/screenshots/ (``*.png`` is git-ignored) or $EZFLOW_SCREENSHOTS.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from _browser import chromium_page, jupyterlab, require_browser, wait_for_idle_kernel

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
NAMES = ("load", "resize", "keep_large")
SCREENSHOTS = Path(os.environ.get("EZFLOW_SCREENSHOTS", TESTS / "screenshots"))

SETUP = """\
import time
import ezflow

def load(i):
    time.sleep(0.004)
    return i

def resize(i):
    time.sleep(0.02)  # the slow stage: 2 workers, ~100 items/s
    return i

def resize_or_fail(i):
    if i == 150:
        raise ValueError(f"cannot resize image {i}")
    return resize(i)

def keep_large(i):
    return i % 3 != 0

def pipeline(resize_fn):
    return (ezflow.Flow(range(400))
            .map(load, workers=4, mode="thread", name="load")
            .map(resize_fn, workers=2, mode="thread", name="resize")
            .filter(keep_large, mode="thread", name="keep_large"))"""

# ~4 s of work: long enough to watch the counts climb.
LIVE_RUN = """\
result = pipeline(resize).collect(progress=True)
len(result)"""

FAILED_RUN = """\
try:
    pipeline(resize_or_fail).collect(progress=True)
except ezflow.TaskError as exc:
    print("raised:", exc)"""

# The live widget (.ezflow-panel) is replaced by its static HTML when the run
# ends, so panels are read by their run root, which both carry.
READ_PANELS = """() => Array.from(document.querySelectorAll('.ezflow-run')).map(run => {
  const p = run;
  const rows = {};
  for (const r of p.querySelectorAll('[data-stage]')) {
    rows[r.dataset.stage] = {done: Number(r.dataset.done), total: r.dataset.total, state: r.dataset.state,
                             visible: r.getBoundingClientRect().height > 0};
  }
  return {state: run ? run.dataset.state : null, rows,
          border: run ? getComputedStyle(run).borderLeftColor : null,
          error: (p.querySelector('[data-error-of]') || {}).innerText || null};
})"""

# The theme's error colour as the browser computes it (the panel's red is var(--jp-error-color1)).
THEME_RED = """() => { const d = document.createElement('div'); d.style.color = 'var(--jp-error-color1)';
  document.body.appendChild(d); const c = getComputedStyle(d).color; d.remove(); return c; }"""


def test_panel_updates_live_and_ends_red_on_failure(tmp_path):
    require_browser()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with jupyterlab(tmp_path, pythonpath=[str(REPO)]) as lab, chromium_page() as page:
        lab.write_notebook("progress.ipynb", [SETUP, LIVE_RUN, FAILED_RUN])
        page.goto(lab.notebook_url("progress.ipynb"))
        wait_for_idle_kernel(page)
        page.locator(".jp-Cell .jp-InputArea-editor").first.click()
        for _ in range(3):  # run each cell; the kernel queues them
            page.keyboard.press("Shift+Enter")

        page.locator(".ezflow-run").first.wait_for(timeout=30_000)
        seen: list[int] = []  # resize's count as the browser shows it
        shot = False
        deadline = time.monotonic() + 50
        while time.monotonic() < deadline:
            panels = page.evaluate(READ_PANELS)
            live = panels[0]
            if live["rows"].get("resize"):
                seen.append(live["rows"]["resize"]["done"])
                if 120 <= seen[-1] <= 300 and not shot:
                    page.locator(".ezflow-run").first.screenshot(path=str(SCREENSHOTS / "panel_running.png"))
                    shot = True
            if live["state"] == "done":
                break
            time.sleep(0.1)
        assert live["state"] == "done", f"panel never reached done; saw {seen}"
        climbing = sorted(set(seen))
        assert seen == sorted(seen), f"counts went backwards: {seen}"
        assert len(climbing) >= 4 and climbing[0] < 400, f"no live updates seen: {seen}"

        for name in NAMES:
            row = live["rows"][name]
            assert row == {"done": 400, "total": "400", "state": "done", "visible": True}, (name, row)

        page.locator('.ezflow-run[data-state="failed"]').wait_for(timeout=20_000)
        failed = page.evaluate(READ_PANELS)[1]
        assert failed["rows"]["resize"]["state"] == "failed"
        assert failed["rows"]["keep_large"]["state"] in ("cancelled", "done")
        assert failed["border"] == page.evaluate(THEME_RED)  # the red stays: the theme's error colour
        assert "ValueError: cannot resize image 150" in failed["error"]
        assert live["border"] != failed["border"]

        page.locator(".ezflow-run").nth(0).screenshot(path=str(SCREENSHOTS / "panel_done.png"))
        page.locator(".ezflow-run").nth(1).screenshot(path=str(SCREENSHOTS / "panel_failed.png"))
        page.screenshot(path=str(SCREENSHOTS / "jupyterlab.png"), full_page=True)
