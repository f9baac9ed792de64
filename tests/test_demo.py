"""`python -m ezflow demo` tells the truth: honest words for the speedup, and a busy machine named as such.

No timing assertions: the wording functions are tested on given figures, and one
short run checks what the demo prints, not how fast it was.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from ezflow.__main__ import CpuWatch, busy_note, speedup_words


def note_text(*args, **kwargs) -> str | None:
    """busy_note's words with its line wrapping undone."""
    note = busy_note(*args, **kwargs)
    return None if note is None else " ".join(note.split())


@pytest.mark.parametrize(
    ("t_serial", "t_flow", "words"),
    [
        (2.0, 1.0, "2.0x faster than serial"),
        (3.4, 2.0, "1.7x faster than serial"),
        (1.0, 1.2, "1.2x slower than serial"),
        (0.9, 1.0, "1.1x slower than serial"),  # the "0.90x faster than serial" of a busy laptop
        (1.0, 1.0, "about as fast as serial"),
        (1.04, 1.0, "about as fast as serial"),  # would round to "1.0x faster"
        (1.0, 1.04, "about as fast as serial"),
        (1.0, 0.0, "too quick to compare with serial"),
    ],
)
def test_speedup_words(t_serial, t_flow, words):
    assert speedup_words(t_serial, t_flow) == words


def test_speedup_words_never_says_faster_below_one():
    for tenths in range(1, 40):
        ratio = tenths / 10 + 0.04
        words = speedup_words(ratio, 1.0)
        if ratio < 0.95:
            assert "slower" in words, (ratio, words)
        assert not ("faster" in words and ratio < 1.05), (ratio, words)


def test_quiet_machine_has_no_note():
    assert busy_note(2, others=0.05, serial_share=0.99, load_before=0.1) is None
    assert busy_note(2, others=None, serial_share=None, load_before=None) is None


def test_other_processes_using_the_cpus_are_named_beside_the_figure():
    note = note_text(2, others=1.0, serial_share=0.98, load_before=0.2)
    assert note is not None and note.startswith("note: ")
    assert "other processes kept about 1.0 of the 2 CPUs busy" in note
    assert "leaving about 1.0 for the demo" in note
    assert "run it again when it is quiet" in note
    assert all(len(line) <= 88 for line in busy_note(2, others=1.0, serial_share=0.5).splitlines())


def test_a_starved_serial_pass_is_named():
    note = note_text(2, others=0.1, serial_share=0.6)
    assert note is not None and "the serial pass got only 60% of a CPU" in note


def test_load_average_speaks_only_when_cpu_use_cannot_be_measured():
    assert busy_note(2, others=None, serial_share=None, load_before=1.5) is not None
    assert "load average was 1.5 on 2 CPUs" in note_text(2, others=None, serial_share=None, load_before=1.5)
    # measured CPU use wins over the lagging load average
    assert busy_note(2, others=0.0, serial_share=1.0, load_before=1.5) is None


def test_cpu_watch_reports_a_share_of_cpus_or_none():
    watch = CpuWatch()
    watch.start()
    sum(range(200_000))
    others = watch.stop()
    if not os.path.exists("/proc/stat"):
        assert others is None
    else:  # measured (never below 0: it is clamped), and no more than the machine has
        assert isinstance(others, float) and others <= (os.cpu_count() or 1) + 0.5


def test_demo_says_what_it_does_and_how_it_compares(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "ezflow", "demo", "-n", "40", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("serial:  running the job in this process") for line in lines), out.stdout
    figure = next(line for line in lines if line.startswith("ezflow:") and " s  ->  " in line)
    assert any(w in figure for w in ("faster than serial", "slower than serial", "as fast as serial")), figure
    assert not re.search(r"\b0\.\d+x faster", figure), figure


def test_demo_into_a_pipe_writes_plain_lines(tmp_path):
    # `python -m ezflow demo 2>&1 | cat` and `> demo.txt 2>&1`: no bars, no control codes,
    # a status line while it runs and the summary once
    out = subprocess.run(
        [sys.executable, "-m", "ezflow", "demo", "-n", "300"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=120,
        cwd=tmp_path,
    )
    text = out.stdout.decode()
    assert out.returncode == 0, text
    assert "\x1b" not in text and "\r" not in text, repr(text)
    assert "ezflow: running decode -> featurize" in text, text
    assert re.search(r"^\[\d+\.\ds\] decode \d+/300", text, flags=re.M), text
    assert text.count("ezflow done in") == 1, text


def test_progress_true_into_a_pipe_writes_plain_lines(tmp_path):
    code = (
        "import ezflow, time\n"
        "ezflow.map(time.sleep, [0.01] * 50, mode='thread', workers=2, progress=True)\n"
        "ezflow.Flow(range(20)).map(lambda x: x + 1, mode='thread').collect(progress='tqdm')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, cwd=tmp_path)
    text = (out.stdout + out.stderr).decode()
    assert out.returncode == 0, text
    assert "\x1b" not in text and "\r" not in text, repr(text)
    assert text.count("ezflow: running") == 2 and "done in" in text, text
