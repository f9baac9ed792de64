"""The README's test command is the one CI runs, and a missing browser says how to get one.

    README.md "bash scripts/test" --runs--> .venv (made once) + pip install -e ".[test]" + pytest
    .ci/run --installs Chromium, checks, then execs--> bash scripts/test
    tests/_browser.require_browser --no Chromium--> skip: "Chromium not found: sudo bash .ci/install-browser"
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import _browser
import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    assert "```bash\nbash scripts/test\n```" in readme
    run = (ROOT / ".ci" / "run").read_text()
    assert run.rstrip().splitlines()[-1] == 'exec bash scripts/test "$@"'
    assert "bash .ci/install-browser" in run
    for check in ("ruff check", "mypy", "lint-imports", "mkdocs build --strict", "twine check"):
        assert check in run, check


def test_test_script_uses_a_venv_and_prints_the_slowest_tests():
    script = (ROOT / "scripts" / "test").read_text()
    assert "python3 -m venv" in script and "--durations=10" in script and "sudo" not in script.split("set -euo")[1]
    for path in ("scripts/test", ".ci/run", ".ci/install-browser"):
        subprocess.run(["bash", "-n", str(ROOT / path)], check=True)  # parses


def test_missing_chromium_skips_naming_the_install_command(monkeypatch):
    monkeypatch.setattr(_browser, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"Chromium not found: sudo bash \.ci/install-browser"):
        _browser.require_browser()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        _browser.require_browser()
