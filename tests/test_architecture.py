"""ARCHITECTURE.md names every module's room: a module added under ezflow/ without a line fails.

    ezflow/**/*.py --path relative to ezflow/--> `_engine/budget.py`, `_api.py`, ...
        --must appear, in backticks, under "## Every module, by room"--> ARCHITECTURE.md
    and every `path.py` named there must exist (a removed module leaves no stale line)
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ezflow"


def _section() -> str:
    text = (ROOT / "ARCHITECTURE.md").read_text()
    start = text.index("## Every module, by room")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _modules() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if "__pycache__" in rel or (path.name == "__init__.py" and rel != "__init__.py"):
            continue  # a package's __init__ is its room's heading (`_engine/`)
        found.append(rel)
    return found


def test_every_module_has_a_line_in_architecture_md():
    section = _section()
    named = set(re.findall(r"`(_[\w/]*\.py)`", section))
    missing = [m for m in _modules() if m not in named]
    assert not missing, "ARCHITECTURE.md does not name " + ", ".join(f"ezflow/{m}" for m in missing) + (
        ": under '## Every module, by room', in the list of its package, add one line each: "
        + "; ".join(f"- `{m}`: <what it owns, in a few words>" for m in missing)
    )


def test_architecture_md_names_no_module_that_is_gone():
    named = set(re.findall(r"`(_[\w/]*\.py)`", _section()))
    gone = sorted(m for m in named if not (PACKAGE / m).is_file())
    assert not gone, f"ARCHITECTURE.md names modules that no longer exist under ezflow/: {gone}"


def test_every_package_has_its_room():
    section = _section()
    for pkg in sorted(p.parent.relative_to(PACKAGE).as_posix() for p in PACKAGE.glob("*/__init__.py")):
        assert f"`{pkg}/`" in section, f"ARCHITECTURE.md: add a '**`{pkg}/`**: <what it owns>' heading"
