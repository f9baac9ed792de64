"""Plan: a flow as plain data, validated when it is built.

    Flow.map(...)  -->  make_stage(...)  -->  StageSpec (frozen)  -->  engine

Owns `StageSpec` and the checks that turn a bad option into a `ValueError`
or `TypeError` at `.map(...)` time, before anything runs: the numeric rules
and the table of which option each mode supports (`options`), and worker
lifespans: memory sizes such as "2GB" (`lifespan`).

May import: `ezflow._core`.
"""
