"""The documentation site builds in strict mode and its API page names every public name.

    mkdocs.yml + docs/*.md + notebooks/*.ipynb (docs/hooks/notebooks.py) + docstrings
        --`python -m mkdocs build --strict`--> a temporary site: a broken link, a page left
          out of the nav, a missing snippet or an API name that does not resolve fails it
    ezflow.__all__ --compared with--> the `::: path.NAME` lines of docs/api.md

The code blocks of docs/*.md run in tests/test_readme.py, as the README's do.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ezflow

ROOT = Path(__file__).resolve().parent.parent


def test_api_page_documents_every_public_name():
    api = (ROOT / "docs" / "api.md").read_text()
    shown = {m.rsplit(".", 1)[-1] for m in re.findall(r"^::: ([\w.]+)$", api, flags=re.M)}
    public = set(ezflow.__all__) | {"map"}  # ezflow.map is public, kept out of __all__ (star imports)
    missing = sorted(public - shown - {"__version__"})
    assert not missing, "docs/api.md: add " + ", ".join(f"`::: ezflow.{n}`" for n in missing) + " under a heading"
    assert not shown - public, f"docs/api.md documents names that are not public: {shown - public}"


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = [p.name for p in (ROOT / "docs").glob("*.md")]
    missing = [p for p in pages if not re.search(rf"(^|[\s:]){re.escape(p)}$", nav, flags=re.M)]
    assert not missing, f"mkdocs.yml: add {missing} to the nav"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_site_builds_in_strict_mode(tmp_path: Path):
    pytest.importorskip("mkdocstrings", reason='the site needs the docs tools: pip install -e ".[test]"')
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("ezflow.map", "ezflow.Flow", "ezflow.Q"):
        assert f'id="{name}"' in api, name
    assert (tmp_path / "site" / "notebooks" / "quickstart" / "index.html").exists()


def test_readme_fits_on_a_few_screens():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move the detail into a docs/ page and link it"
    text = "\n".join(lines[:40])
    assert "python -m ezflow demo" in text and "bash scripts/test" in text, "the two commands belong on the first screen"
    assert "python -m mkdocs serve" in "\n".join(lines)
