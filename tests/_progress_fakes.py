"""Synthetic runs for the progress-view tests: a plausible FlowStats sequence, no engine.

The three stages mimic an image pipeline whose middle stage is the slow one:
``load`` runs ahead until the queue in front of ``resize`` is full, ``resize``
is busy all the time, ``save`` starves behind it.
"""

from __future__ import annotations

from ezflow._core.stats import FlowStats, StageStats

STAGES = (
    # name, kind, mode, workers, items per second
    ("load", "map", "thread", 4, 400.0),
    ("resize", "map", "process", 2, 150.0),
    ("keep_large", "filter", "thread", 1, 150.0),
)


def flow_at(
    t: float,
    *,
    total: int = 1000,
    state: str = "running",
    fail_stage: str | None = None,
    error: str = "ValueError: cannot resize an empty image",
    stages: tuple[tuple[str, str, str, int, float], ...] = STAGES,
) -> FlowStats:
    """Return the flow's figures ``t`` seconds into the run."""
    records = []
    upstream_done = None
    for i, (name, kind, mode, workers, rate) in enumerate(stages):
        limit = total if upstream_done is None else upstream_done
        done = limit if state == "done" else int(min(limit, rate * t))
        in_flight = 0 if state != "running" else min(workers, limit - done)
        queue_depth = 0 if upstream_done is None else max(0, upstream_done - done - in_flight)
        fill = min(1.0, queue_depth / 64)
        is_slow = i == 1
        busy = 0.97 if is_slow else 0.35 / (i + 1)
        errors = done // 250 if is_slow else 0
        skipped = done // 400 if is_slow else 0
        filtered = done // 3 if kind == "filter" else 0
        stage_state = state
        stage_error = None
        if fail_stage == name and state == "failed":
            stage_error = error
            errors += 1  # the item that raised
        elif state == "failed":
            stage_state = "done" if done >= total else "cancelled"
        records.append(
            StageStats(
                name=name,
                kind=kind,
                mode=mode,
                workers=workers,
                items_in=done + in_flight,
                items_out=done - errors - skipped - filtered,
                filtered=filtered,
                errors=errors,
                skipped=skipped,
                retries=errors * 2,
                in_flight=in_flight,
                busy_seconds=busy * t * workers,
                elapsed=t,
                queue_depth=queue_depth,
                queue_max=max(queue_depth, 64 if is_slow else 0),
                queue_fill=fill,
                total=total,
                state=stage_state,
                error=stage_error,
            )
        )
        upstream_done = done
    flow_error = f"stage {fail_stage!r} failed: {error}" if state == "failed" else None
    return FlowStats(stages=tuple(records), elapsed=t, state=state, total=total, error=flow_error)


def run_of(
    steps: int, *, dt: float = 0.2, total: int = 1000, final: str = "done", fail_stage: str | None = None
) -> list[FlowStats]:
    """Return ``steps`` running snapshots ``dt`` apart, then the final one."""
    seq = [flow_at(k * dt, total=total) for k in range(steps)]
    seq.append(flow_at(steps * dt, total=total, state=final, fail_stage=fail_stage))
    return seq
