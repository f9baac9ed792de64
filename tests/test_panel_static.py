"""An ended run's panel survives saving: static HTML in the notebook, visible after nbconvert.

nbclient (real kernel) --save--> .ipynb (no widget-view mime) --nbconvert--> .html --Chromium--> table text
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from _browser import chromium_page, require_browser

REPO = Path(__file__).resolve().parent.parent
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

CELL = """
import sys; sys.path.insert(0, {repo!r})
import ezflow

def double(i):
    return 2 * i

flow = ezflow.Flow(range(300)).map(double, workers=2, mode="thread", name="doubler")
out = flow.collect(progress="notebook")
print(len(out))
"""


@pytest.mark.timeout(180)
def test_a_saved_and_exported_notebook_shows_the_final_table(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(CELL.format(repo=str(REPO)))]
    nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=60, store_widget_state=True, resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    path = tmp_path / "run.ipynb"
    nbformat.write(nb, path)

    saved = nbformat.read(path, as_version=4)
    outputs = saved.cells[0].outputs
    assert not any(WIDGET_VIEW in o.get("data", {}) for o in outputs)
    (panel,) = [o for o in outputs if 'class="ezflow-run"' in o.get("data", {}).get("text/html", "")]
    assert set(panel["data"]) == {"text/html", "text/plain"}
    assert 'data-stage="doubler" data-done="300" data-total="300" data-state="done"' in panel["data"]["text/html"]

    subprocess.run(
        [sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", str(path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    html = tmp_path / "run.html"
    assert html.exists()

    require_browser()
    with chromium_page() as page:
        # Offline: the template's CDN scripts fail; the static panel needs none of them.
        page.goto(html.as_uri(), wait_until="domcontentloaded")
        run = page.locator("div.ezflow-run").first
        run.wait_for(timeout=20_000)
        text = run.inner_text()
        assert "doubler" in text and "300" in text and "done" in text.lower()
        assert run.is_visible()
        run.screenshot(path=str(REPO / "tests" / "panel-static-nbconvert.png"))
