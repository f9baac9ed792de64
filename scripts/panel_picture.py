"""Make docs/img/panel.png, the README's picture of the notebook panel after a run.

    a Flow like the README's tour --a recording observer--> FlowStats samples
        --ezflow._views.panel.render_html--> the panel's final static HTML
        --Playwright + /usr/bin/chromium--> docs/img/panel.png (cropped to the panel)

Run it again when the panel's look changes: `python scripts/panel_picture.py`.
"""

from __future__ import annotations

import time
from pathlib import Path

import ezflow
from ezflow._views.figures import progress_count
from ezflow._views.panel import render_html
from ezflow._views.panel_details import render_details

OUT = Path(__file__).resolve().parent.parent / "docs" / "img" / "panel.png"


def decode(path):
    time.sleep(0.004)
    return None if path.endswith("7.png") else len(path)


class Model:
    def __call__(self, batch):
        time.sleep(0.01)
        return [x * 0.5 for x in batch]


class Recorder:
    """A progress view that keeps what the panel samples: (elapsed, done) per stage."""

    def __init__(self):
        self.history: dict[str, list[tuple[float, int]]] = {}
        self.last = None

    def open(self, stats):
        self.update(stats)

    def update(self, stats):
        for st in stats.stages:
            self.history.setdefault(st.name, []).append((st.elapsed, progress_count(st)))
        self.last = stats

    def close(self, stats):
        self.update(stats)


def main() -> None:
    paths = [f"photos/{i}.png" for i in range(1500)]
    flow = (
        ezflow.Flow(paths)
        .map(decode, workers=2)
        .filter(lambda img: img is not None, mode="thread")
        .batch(32, timeout=0.1)
        .map(Model, workers=1)
        .unbatch()
    )
    rec = Recorder()
    flow.collect(progress=rec)
    html = render_html(rec.last, history=rec.history, details=render_details(rec.last, "ezf"))
    page = f'<html><body style="margin:0;padding:12px;background:#fff"><div style="display:inline-block">{html}</div></body></html>'

    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1200, "height": 700}, device_scale_factor=1)
        tab.set_content(page)
        tab.locator(".ezflow-run").screenshot(path=str(OUT))
        browser.close()
    print(OUT, OUT.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
