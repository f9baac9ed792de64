"""Render notebooks/*.ipynb as site pages at build time (nbconvert to markdown, offline).

    on_files: notebooks/NAME.ipynb --nbconvert MarkdownExporter--> a generated page
              notebooks/NAME.md (plus any images its stored outputs carry)

The notebooks are kept without outputs (tests/test_notebooks.py runs them in a real
kernel); the pages show their prose and code, with a link to the file.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]


def on_files(files: Files, config: MkDocsConfig) -> Files:
    from nbconvert import MarkdownExporter

    exporter = MarkdownExporter()
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        body, resources = exporter.from_filename(str(nb))
        body = re.sub(r"\]\((\w+)\.ipynb\)", r"](\1.md)", body)  # a link to a notebook: its page
        page = (
            f"*This page is `notebooks/{nb.name}` rendered without its outputs: open it with "
            f"`jupyter lab notebooks/{nb.name}` to run it.*\n\n{body}"
        )
        files.append(File.generated(config, f"notebooks/{nb.stem}.md", content=page))
        for name, data in resources.get("outputs", {}).items():
            files.append(File.generated(config, f"notebooks/{name}", content=data))
    return files
