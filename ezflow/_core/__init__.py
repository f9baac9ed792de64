"""Core: what every layer shares, and nothing that runs.

Owns the public error types and failure records (`errors`), the stats
records every view reads (`stats`), the observer contract (`observe`),
machine facts (`env`) and the small record helper (`record`).

May import: the standard library only. Everything else may import it.
"""
