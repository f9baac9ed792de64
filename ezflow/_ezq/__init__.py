"""The ezq-compatible layer: `Q`, `run`, `run_thread`, `Msg`.

Beside the engine, not on top of it: queues served by a broker thread in the
owner process, and workers started with the same bootstrap as Flow workers.

May import: `ezflow._transport`, `ezflow._core`.
"""
