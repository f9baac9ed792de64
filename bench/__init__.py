"""Side-by-side benchmarks: ezflow against its peers, same inputs, one run.

Run ``python -m bench`` (``--only W1,W2``, ``--quick``, ``--repeat N``; see
``python -m bench --help``). Results print as one table per workload and are
written as JSON to ``bench/results/<timestamp>.json`` (git-ignored).

Adding a workload
-----------------
Create ``bench/w<N>_<name>.py`` defining ``WORKLOAD = Workload(...)`` (see
``bench/_harness.py``); it is discovered automatically, no registry to edit.
A throughput workload gives:

- ``make_inputs(quick) -> inputs``: built once per run, the same object is
  handed to every implementation;
- ``amount(inputs) -> float``: how many ``unit`` (``"items"`` or ``"MiB"``)
  one call processes, for the rate column;
- ``impls``: a list of ``Impl(name, fn, kind)``, one function per
  implementation taking ``inputs`` and returning the outputs. The first
  ``kind="serial"`` entry is the reference: every other implementation's
  output is compared with it (``check``; default: ``==`` on lists) and a
  wrong result is reported as WRONG, never timed;
- optionally ``check(expected, got) -> None | str`` (a string says what is
  wrong), e.g. for numpy arrays.

Functions that run in worker processes must live in an importable module
(``bench/_work.py``) so every pickling peer can run them. The standard set of
map peers over a ``MapInput(fn, items)`` is in ``bench/_peers.py``
(``map_impls(...)``); add your own ``Impl`` entries next to them.

A workload that is not "call a function, time it" (W5 runs fresh
interpreters) sets ``run=`` to its own function and uses the same table
helpers.

This package must stay light to import: W5's subprocesses import
``bench._work``.
"""
