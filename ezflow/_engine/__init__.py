"""Engine: runs a plan. Source, channels, one driver per stage, batch, the run.

    source --chunks--> channel --> StageDriver --pieces--> executor port
                                        ^                      |
                                        +----- results --------+
                       channel <-- emit each part as it is done (in order, if ordered)

Owns ordering, backpressure (bounded channels and windows), the run's
life (start, abort, cancel, finish) and the counters behind the stats.

May import: `ezflow._executors`, `ezflow._transport`, `ezflow._plan`,
`ezflow._core`. Never the views: they hear about a run through the
observer contract in `ezflow._core.observe`.
"""
