"""Views: progress for people, all from one frozen `FlowStats`.

    FlowStats --> text view (pipes, logs) | tqdm bars (terminals) | panel (notebooks)

May import: `ezflow._core` (stats records, the observer contract, env).
Never the engine: a view only ever sees the stats it is handed.
"""
