"""Every notebook the repo ships runs top to bottom in a real Jupyter kernel.

    notebooks/*.ipynb --nbclient (kernel "python3", cwd notebooks/)--> executed copy (in memory only)
        - no cell errored (cells tagged "raises-exception" may)
        - every ezflow progress panel shown ended in a final state, with its figures saved
          in the widget state (nb.metadata.widgets[...widget-state+json])
        - notebooks listed in PANELS show the panels listed there, with every stage's
          name and final counts

The notebooks run are those the repo ships: the files git tracks in notebooks/
(a notebook committed later is covered without touching this file), or the
fixed list SHIPPED outside a git checkout (an sdist). A notebook a user left in
notebooks/ is not run. The executed copy is never written back: the repo keeps
its notebooks without outputs.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO / "notebooks"
# What the repo ships, for when git cannot say (not a checkout, or no git).
SHIPPED = ("dask.ipynb", "dataframes.ipynb", "long_runs.ipynb", "pipelines.ipynb", "quickstart.ipynb", "shared_arrays.ipynb")


def shipped_notebooks() -> list[Path]:
    """The notebooks the repo ships: tracked by git, else the fixed list."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--", "notebooks/*.ipynb"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        out = None
    if out is not None and out.returncode == 0 and out.stdout.strip():
        names = [Path(line).name for line in out.stdout.splitlines() if line.strip()]
    else:
        names = list(SHIPPED)
    return sorted(NOTEBOOKS_DIR / n for n in names if (NOTEBOOKS_DIR / n).is_file())


NOTEBOOKS = shipped_notebooks()

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

# Panels a notebook must show: the stages of one run, each with the number of
# items it finished. None: decided at run time (e.g. how many batches a
# timeout cut), so it must equal the "in" column of the `flow.stats` table the
# notebook prints for that run.
PANELS: dict[str, list[dict[str, int | None]]] = {
    # ezflow.apply(df, score, axis=1, progress=True): the panel counts rows, not chunks
    "dataframes.ipynb": [{"score": 40000}],
    "quickstart.ipynb": [
        # section 5: ~3 s, long enough to show the panel live; 4,000 squares, a third are multiples of 3
        {"square": 4000, "multiple_of_3": 4000, "inverse": 1334},
    ],
    "pipelines.ipynb": [
        # load -> decode -> is_valid -> batch(16, timeout=0.1) -> Model -> unbatch, 200 images, 20 invalid
        {"load": 200, "decode": 200, "is_valid": 200, "batch": 180, "Model": None, "unbatch": None},
        # thread and process stages mixed
        {"download": 60, "features": 60, "save": 60},
        # the background run: flow.start(progress=True)
        {"fetch": 120, "summarize": 120},
    ],
}

# Text a notebook must print (its point is to show these).
SHOWS: dict[str, list[str]] = {
    "dataframes.ipynb": ["same result: True", "ten chunks of 4,000 rows: True", "rows failed", "share_arrays=False"],
    "long_runs.ipynb": [
        "400 results in",
        "all 400 from the checkpoint",
        "workers replaced",
    ],
    "quickstart.ipynb": [
        "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]",
        "Failure(stage='parse_price', index=2, item='n/a', error=ValueError(",
        "index=2  item='n/a'  error=ValueError(",
        "TaskError: stage 'parse_price' failed on item ",
        "FlowStats(done",
    ],
    "pipelines.ipynb": [
        "180 predictions",
        "FlowStats(done",
        "60 results, 60 rows saved",
        "120 results; done: True",
    ],
}

_ROW = re.compile(
    r'<tr data-stage="(?P<name>[^"]*)" data-done="(?P<done>\d+)" data-total="(?P<total>\d*)" '
    r'data-state="(?P<state>[^"]*)" data-errors="(?P<errors>\d+)"'
)
_RUN_STATE = re.compile(r'<div class="ezflow-run" data-state="([^"]*)"')
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _execute(path: Path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        store_widget_state=True,
        timeout=120,
        allow_errors=True,  # run on, then report every failing cell at once
        resources={"metadata": {"path": str(path.parent)}},  # the kernel's cwd
    )
    client.execute()  # starts the kernel and shuts it down at the end, error or not
    return nb


def _code_cells(nb):
    return [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]


def _errors(nb) -> list[str]:
    found = []
    for i, cell in _code_cells(nb):
        if "raises-exception" in cell.get("metadata", {}).get("tags", []):
            continue
        for out in cell.outputs:
            if out.output_type == "error":
                tb = _ANSI.sub("", "\n".join(out.get("traceback", [])))
                found.append(f"cell {i} ({cell.source.splitlines()[0][:60]!r}): {out.ename}: {out.evalue}\n{tb}")
            elif out.output_type == "stream" and out.name == "stderr":
                text = out.text
                if "Traceback (most recent call last)" in text or "ezflow:" in text:
                    found.append(f"cell {i} wrote to stderr:\n{text}")
    return found


def _text(nb) -> str:
    parts = []
    for _, cell in _code_cells(nb):
        for out in cell.outputs:
            if out.output_type == "stream":
                parts.append(out.text)
            elif out.output_type in ("execute_result", "display_data"):
                parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def _panels(nb) -> list[dict]:
    """Every ezflow panel shown: its cell, final run state and stage rows, read from the saved widget state."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    panels = []
    for i, cell in _code_cells(nb):
        for out in cell.outputs:
            if out.output_type != "display_data":
                continue
            data = out.get("data", {})
            if WIDGET_VIEW in data:
                model_id = data[WIDGET_VIEW]["model_id"]
                assert model_id in state, f"cell {i} shows widget {model_id} but its state was not saved"
                model = state[model_id]
                if "ezflow-panel" not in model["state"].get("_dom_classes", []):
                    continue  # someone else's widget
                assert model["model_name"] == "HTMLModel"
                value = model["state"]["value"]
            elif 'class="ezflow-run"' in data.get("text/html", ""):
                value = data["text/html"]  # an ended run's panel, replaced by its static view
            else:
                continue
            run_state = _RUN_STATE.search(value)
            assert run_state, f"cell {i}: no ezflow-run root in the panel"
            rows = {
                m["name"]: {
                    "done": int(m["done"]),
                    "total": int(m["total"]) if m["total"] else None,
                    "state": m["state"],
                    "errors": int(m["errors"]),
                }
                for m in _ROW.finditer(value)
            }
            panels.append(
                {"cell": i, "state": run_state.group(1), "rows": rows, "html": out["data"].get("text/html", "")}
            )
    return panels


def _stats_tables(nb) -> list[dict[str, int]]:
    """The `flow.stats` tables the notebook printed: {stage: items in}."""
    tables = []
    for text in _text(nb).split("FlowStats(")[1:]:
        lines = text.splitlines()[1:]  # skip the title line's rest
        if not lines or not lines[0].startswith("stage"):
            continue
        table = {}
        for line in lines[1:]:
            cols = line.split()
            if len(cols) < 9 or not cols[2].isdigit():
                break
            table[cols[0]] = int(cols[2])
        tables.append(table)
    return tables


@pytest.mark.timeout(180)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_in_a_real_kernel(path: Path):
    nb = _execute(path)

    errors = _errors(nb)
    assert not errors, f"{path.name}: {len(errors)} cell(s) failed:\n\n" + "\n\n".join(errors)

    text = _text(nb)
    for expected in SHOWS.get(path.name, []):
        assert expected in text, f"{path.name} should show {expected!r}"

    # Every panel shown reached its final figures, and they were saved.
    panels = _panels(nb)
    for p in panels:
        where = f"{path.name} cell {p['cell']}"
        # A panel still "running" after its cell ended lost its final draw (or is a second
        # panel opened for the same run): the notebook shows stale figures forever.
        assert p["state"] in ("done", "failed", "cancelled"), (
            f"{where}: panel left in state {p['state']!r}: {p['rows']}"
        )
        assert p["rows"], f"{where}: panel has no stage rows"
        assert f'data-state="{p["state"]}"' in p["html"], f"{where}: the static HTML copy is not the final one"
        if p["state"] == "done":
            for name, row in p["rows"].items():
                assert row["state"] == "done", f"{where}: stage {name} ended {row['state']!r}"
                if row["total"] is not None:
                    assert row["done"] == row["total"], (
                        f"{where}: stage {name} finished {row['done']} of {row['total']}"
                    )

    # The panels this notebook is meant to show, with every stage's final count.
    tables = _stats_tables(nb)
    for expected in PANELS.get(path.name, []):
        matching = [p for p in panels if set(p["rows"]) == set(expected)]
        shown = [sorted(p["rows"]) for p in panels]
        assert matching, f"{path.name}: no progress panel with stages {sorted(expected)}; panels shown: {shown}"
        printed = [t for t in tables if set(t) == set(expected)]
        for p in matching:
            assert p["state"] == "done", p
            for name, count in expected.items():
                row = p["rows"][name]
                assert row["state"] == "done" and row["errors"] == 0, (name, row)
                if count is not None:
                    assert row["done"] == count, f"{path.name}: stage {name} shows {row['done']} done, expected {count}"
                else:
                    assert printed, f"{path.name}: no flow.stats table printed for stages {sorted(expected)}"
                    assert row["done"] == printed[0][name], (
                        f"{path.name}: panel shows {name} done={row['done']}, flow.stats says {printed[0][name]}"
                    )

    if path.name == "pipelines.ipynb":
        rows = next(p for p in panels if "Model" in p["rows"])["rows"]
        # 180 images in batches of <= 16: at least 12 batches; each one goes through Model and unbatch once
        assert 12 <= rows["Model"]["done"] == rows["unbatch"]["done"] <= 180, rows


def test_only_shipped_notebooks_are_run(tmp_path):
    # a notebook a user left in notebooks/ is not the repo's: it is not collected
    assert NOTEBOOKS, "no notebook found"
    assert {p.name for p in NOTEBOOKS} >= set(SHIPPED)
    stray = NOTEBOOKS_DIR / "zz_untracked_by_a_user.ipynb"
    assert not stray.exists()
    stray.write_text("{}")
    try:
        assert stray not in shipped_notebooks()
    finally:
        stray.unlink()
