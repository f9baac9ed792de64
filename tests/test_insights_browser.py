"""Insights and failures in the panel as a person sees them: live JupyterLab (dark, light), Chromium, the DOM.

    cell 1: a stage whose item 5 naps ~10 s  -> open the stage's section while it naps, read the item's age
    cell 2: a run with 50 failed items       -> live, failures listed as they come, the errors count leads there;
                                                ended, all 50 listed, tracebacks folded; the count links

Screenshots go to tests/artifacts/ (``*.png`` is git-ignored) or $EZFLOW_SCREENSHOTS; look at them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from _browser import chromium_page, jupyterlab, require_browser, wait_for_idle_kernel

pytestmark = [pytest.mark.browser, pytest.mark.timeout(150)]

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("EZFLOW_SCREENSHOTS", REPO / "tests" / "artifacts"))

SETUP = """\
import time
import ezflow

def naps_on_five(i):
    time.sleep(10 if i == 5 else 0.05)
    return i

def fails_under_fifty(i):
    time.sleep(0.06)
    if i < 50:
        raise ValueError(f"item {i} is below 50")
    return i"""

NAP_RUN = """\
out = ezflow.Flow(range(40)).map(naps_on_five, workers=2, mode="thread", chunksize=1, name="nap").collect(progress=True)
len(out)"""

FAIL_RUN = """\
out = ezflow.Flow(range(80)).map(fails_under_fifty, workers=2, mode="thread", errors="return", name="check")\\
    .collect(progress=True)
sum(isinstance(x, ezflow.Failure) for x in out)"""

READ_AGE = """() => { const r = document.querySelector('[data-insights-of="nap"] tr[data-current-item="5"]');
  return r ? Number(r.dataset.currentFor) : null; }"""

# Luminance of a computed CSS colour, 0 (black) .. 1 (white), alpha ignored.
LUMINANCE = """(sel) => { const el = document.querySelector(sel); if (!el) return null;
  const [r, g, b] = getComputedStyle(el).color.match(/[\\d.]+/g).map(Number);
  return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255; }"""


@pytest.mark.parametrize("theme", ["dark", "light"])
def test_insights_and_failures_read_in_both_themes(tmp_path, theme):
    require_browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name = f"JupyterLab {theme.title()}"
    with jupyterlab(tmp_path, pythonpath=[str(REPO)], theme=name) as lab, chromium_page() as page:
        lab.write_notebook("insights.ipynb", [SETUP, NAP_RUN, FAIL_RUN])
        page.goto(lab.notebook_url("insights.ipynb"))
        wait_for_idle_kernel(page)
        assert page.evaluate("() => document.body.dataset.jpThemeName") == name
        page.locator(".jp-Cell .jp-InputArea-editor").first.click()
        for _ in range(3):  # run each cell; the kernel queues them (the failing run waits for the nap)
            page.keyboard.press("Shift+Enter")

        # open the stage's section while item 5 naps, and watch its age grow
        header = page.get_by_text("nap · 2 workers").first
        header.wait_for(timeout=30_000)
        header.click()
        ages: list[float] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (len(ages) < 2 or ages[-1] < 1.5):
            age = page.evaluate(READ_AGE)
            if age is not None and (not ages or age > ages[-1]):
                ages.append(age)
            time.sleep(0.3)
        if len(ages) < 2 or ages[-1] < 1.5:
            page.screenshot(path=str(ARTIFACTS / f"insights_live_{theme}_failed.png"))
            html = page.evaluate("() => (document.querySelector('.ezflow-insights') || {}).outerHTML")
            pytest.fail(f"item 5's age as shown: {ages}; insights: {html and html[:3000]}")
        row = page.locator('[data-insights-of="nap"] tr[data-current-item="5"]')
        assert "#5 for" in row.inner_text()
        text = page.evaluate(LUMINANCE, ".ezflow-run")
        assert text > 0.6 if theme == "dark" else text < 0.4, f"the panel's text has luminance {text} on a {theme} page"
        page.locator(".ezflow-panel").first.locator("xpath=..").screenshot(
            path=str(ARTIFACTS / f"insights_live_{theme}.png")
        )

        # while it runs, failures show under the sections as they come, and the count leads there
        live = page.locator('.ezflow-insights [data-failures-of="check"]')
        live.wait_for(timeout=40_000)
        page.locator('.ezflow-panel tr[data-stage="check"] a[href^="#ezflow-"]').click()
        assert live.is_visible()
        page.locator(".ezflow-panel").nth(0).locator("xpath=..").screenshot(
            path=str(ARTIFACTS / f"failures_live_{theme}.png")
        )
        failures = page.locator('.ezflow-run [data-failures-of="check"]')
        failures.wait_for(timeout=40_000)
        listed = page.locator('.ezflow-run [data-failures-of="check"] [data-failure-index]')
        assert listed.count() == 50
        assert sorted(int(i) for i in listed.evaluate_all("els => els.map(e => e.dataset.failureIndex)")) == list(
            range(50)
        )
        # the errors count in the row leads to the list; a traceback unfolds on a click
        link = page.locator('.ezflow-run tr[data-stage="check"] a[href^="#ezflow-"]')
        target = link.get_attribute("href")
        assert page.locator(f'[id="{target[1:]}"]').count() == 1
        link.click()
        first = listed.first
        first.locator("summary").click()
        assert "ValueError: item 0 is below 50" in first.locator("pre").inner_text()
        run = page.locator(".ezflow-run").nth(1)
        run.scroll_into_view_if_needed()
        run.screenshot(path=str(ARTIFACTS / f"failures_{theme}.png"))
        page.locator(".ezflow-run").first.screenshot(path=str(ARTIFACTS / f"insights_done_{theme}.png"))
        page.screenshot(path=str(ARTIFACTS / f"jupyterlab_{theme}.png"))
