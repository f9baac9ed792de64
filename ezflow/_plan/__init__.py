"""Plan: a flow as plain data, validated when it is built.

    Flow.map(...)  -->  make_stage(...)  -->  StageSpec (frozen)  -->  engine

Owns the stage and run options, declared once with their types, defaults
and meanings (`stage_options`: every public signature, the plan and the
docs read them), several iterables as one source of tuples (`star`), and
`StageSpec` and the checks that turn a bad option into a `ValueError`
or `TypeError` at `.map(...)` time, before anything runs: the numeric rules
and the table of which option each mode supports (`options`), and worker
lifespans: memory sizes such as "2GB" (`lifespan`).

May import: `ezflow._core`.
"""
