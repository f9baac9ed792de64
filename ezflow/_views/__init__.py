"""Views: progress for people, all from one frozen `FlowStats`.

    FlowStats --> figures (every count, label, word; the formatting core)
                     |
                     +--> text view (pipes, logs) | tqdm bars (terminals) | panel (notebooks)
                                         ^ chosen by choose.make_observer (tqdm / notebook / text / none)

Layers inside, top to bottom (an import-linter contract in pyproject.toml):
``choose`` > ``text | bars | panel`` (independent front ends) > ``figures``.
May import: `ezflow._core` (stats records and their cell spelling, the
observer contract, env). Never the engine: a view only ever sees the stats
it is handed.
"""
