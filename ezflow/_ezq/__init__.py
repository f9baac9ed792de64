"""The ezq-compatible layer: `Q`, `run`, `run_thread`, `Msg`.

Beside the engine, not on top of it: queues served by a broker thread in the
owner process, and workers started the way Flow workers are (`_core.procs`).
`q.py` is the front; its docstring maps the modules.

May import: `ezflow._transport`, `ezflow._core`.
"""
