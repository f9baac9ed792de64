"""The checkpoint file: one SQLite database in WAL mode, standard library only.

    runs/name.sqlite
      meta      key -> value: format, call (the function key), stages (their kinds)
      segments  one row per write: many segments, each a run [start, end) of
                consecutive source positions, the key of their items, and
                their results (a pickled list, cut by `offsets`)

Rows are only ever appended, each in its own transaction, by one writer in
the parent. WAL mode with ``synchronous=NORMAL`` makes a committed row
survive the process being killed (SIGKILL, a kernel restart); a row being
written when the process dies is rolled back by the next open, so the file
stays readable and holds every row committed before. Power loss may lose
the last rows too (that needs ``synchronous=FULL``: an fsync per write).

When segments overlap (items changed and were computed again), the newest
row wins and an older segment that overlaps it is dropped whole.
"""

from __future__ import annotations

import bisect
import os
import pickle
from array import array
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["FORMAT", "CheckpointError", "Segment", "Store", "resolve_path"]

FORMAT = "ezflow-checkpoint 1"
SUFFIXES = (".sqlite", ".sqlite3", ".db")


class CheckpointError(Exception):
    """A checkpoint file cannot be used for this call; the message says what to do."""


class Segment:
    """Stored results of the consecutive source positions ``start .. end-1``."""

    __slots__ = ("end", "key", "outputs", "start")

    def __init__(self, start: int, end: int, key: bytes | None, outputs: list) -> None:
        self.start = start
        self.end = end
        self.key = key  # None: written with checkpoint_match="position", items not keyed
        self.outputs = outputs

    def __repr__(self) -> str:
        return f"Segment({self.start}, {self.end}, {len(self.outputs)} results)"


def resolve_path(checkpoint: Any) -> Path:
    """Return the database file for a ``checkpoint=`` value; check it can be written.

    Raises:
        TypeError: not a str or os.PathLike.
        ValueError: empty, or a directory.
        CheckpointError: its directory cannot be created or written.
    """
    if isinstance(checkpoint, bool) or not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(
            f"checkpoint must be a path (str or os.PathLike) such as 'runs/thumbnails', "
            f"got {type(checkpoint).__name__} {checkpoint!r}"
        )
    from pathlib import Path

    text = os.fspath(checkpoint)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"checkpoint must be a non-empty path such as 'runs/thumbnails', got {checkpoint!r}")
    path = Path(text).expanduser()
    if path.suffix not in SUFFIXES:
        path = path.with_name(path.name + ".sqlite")
    if path.is_dir():
        raise ValueError(
            f"checkpoint {str(path)!r} is a directory; give a file name inside it, e.g. {str(path / 'run')!r}"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"cannot create the checkpoint's directory {str(path.parent)!r}: {exc}") from exc
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise CheckpointError(
            f"cannot write the checkpoint in {str(path.parent)!r} (no write permission); choose another path"
        )
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise CheckpointError(f"cannot read and write the checkpoint file {str(path)!r}; check its permissions")
    return path


def _remedy(path: Path) -> str:
    return f"delete {str(path)!r} (and its -wal and -shm files, if any) to start over, or use another checkpoint path"


class Store:
    """An open checkpoint file for one call.

    Args:
        path: the database file (`resolve_path`).
        call: the call's key (`fingerprint.call_key`).
        stages: the kinds of its stages, e.g. "map,filter".
        by_position: ``checkpoint_match="position"``: keep results whatever the call's key.

    Attributes:
        discarded: results dropped because the function changed (0 if none).
    """

    def __init__(self, path: Path, call: str, stages: str, by_position: bool) -> None:
        import sqlite3

        self.path = path
        self.discarded = 0
        self._sqlite = sqlite3
        self._args: tuple[str, str, bool] | None = (call, stages, by_position)
        self._db: Any = None
        if path.exists():  # a new file is made by the first write, off the caller's path
            self._connect()

    @classmethod
    def peek(cls, path: Path) -> list[Segment]:
        """Return the segments stored in `path` whatever call wrote them, changing nothing."""
        store = cls.__new__(cls)
        import sqlite3

        store.path, store.discarded, store._sqlite, store._args = path, 0, sqlite3, None
        store._db = sqlite3.connect(str(path), timeout=30, isolation_level=None)
        try:
            return store.load()
        finally:
            store.close()

    def _connect(self) -> None:
        sqlite3 = self._sqlite
        path = self.path
        assert self._args is not None
        call, stages, by_position = self._args
        try:
            self._db = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise CheckpointError(f"cannot open checkpoint {str(path)!r}: {exc}; {_remedy(path)}") from exc
        try:
            self._open(call, stages, by_position)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise CheckpointError(
                f"checkpoint {str(path)!r} is damaged or not an ezflow checkpoint ({exc}); {_remedy(path)}"
            ) from exc
        except BaseException:
            self._db.close()
            raise

    def _open(self, call: str, stages: str, by_position: bool) -> None:
        db = self._db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            with self._transaction():
                db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                db.execute(
                    "CREATE TABLE segments (id INTEGER PRIMARY KEY, starts BLOB NOT NULL, ends BLOB NOT NULL, "
                    "keys BLOB, offsets BLOB NOT NULL, outputs BLOB NOT NULL, failures INTEGER NOT NULL)"
                )
                db.executemany(
                    "INSERT INTO meta VALUES (?, ?)", [("format", FORMAT), ("call", call), ("stages", stages)]
                )
            return
        if tables != {"meta", "segments"}:
            raise CheckpointError(
                f"{str(self.path)!r} is an SQLite file but not an ezflow checkpoint "
                f"(tables {sorted(tables)}); {_remedy(self.path)}"
            )
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("format") != FORMAT:
            raise CheckpointError(
                f"checkpoint {str(self.path)!r} has format {meta.get('format')!r}, this ezflow reads "
                f"{FORMAT!r}; {_remedy(self.path)}"
            )
        if meta.get("stages") != stages:
            raise CheckpointError(
                f"checkpoint {str(self.path)!r} was written by a different call (stages "
                f"{meta.get('stages')!r}, this call has {stages!r}); its results cannot be mixed with this "
                f"call's: {_remedy(self.path)}"
            )
        if meta.get("call") == call:
            return
        with self._transaction():
            if not by_position:
                self.discarded = self._count_results()
                db.execute("DELETE FROM segments")
            db.execute("UPDATE meta SET value = ? WHERE key = 'call'", (call,))

    def _count_results(self) -> int:
        total = 0
        for (offsets,) in self._db.execute("SELECT offsets FROM segments"):
            a = array("q")
            a.frombytes(offsets)
            total += a[-1] if len(a) else 0
        return total

    def _transaction(self) -> Any:
        store = self

        class _Tx:
            def __enter__(self) -> None:
                store._db.execute("BEGIN IMMEDIATE")

            def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
                store._db.execute("COMMIT" if kind is None else "ROLLBACK")

        return _Tx()

    def load(self) -> list[Segment]:
        """Return the stored segments, sorted by start, none overlapping (the newest wins).

        Raises:
            CheckpointError: a row cannot be read (the file is damaged).
        """
        rows: list[list[Segment]] = []
        if self._db is None:
            return []
        try:
            for _rid, starts, ends, keys, offsets, outputs in self._db.execute(
                "SELECT id, starts, ends, keys, offsets, outputs FROM segments ORDER BY id DESC"
            ):
                rows.append(_decode(starts, ends, keys, offsets, outputs))
        except self._sqlite.DatabaseError as exc:
            raise CheckpointError(f"checkpoint {str(self.path)!r} is damaged ({exc}); {_remedy(self.path)}") from exc
        except Exception as exc:
            raise CheckpointError(
                f"checkpoint {str(self.path)!r} holds results that cannot be read back "
                f"({type(exc).__name__}: {exc}); {_remedy(self.path)}"
            ) from exc
        kept_starts: list[int] = []
        kept: list[Segment] = []
        for row in rows:  # newest first: a segment is kept unless a newer one overlaps it
            for seg in row:
                i = bisect.bisect_right(kept_starts, seg.start)
                if i > 0 and kept[i - 1].end > seg.start:
                    continue
                if i < len(kept) and kept[i].start < seg.end:
                    continue
                kept_starts.insert(i, seg.start)
                kept.insert(i, seg)
        return kept

    def append_rows(self, rows: list[dict[str, Any]]) -> None:
        """Write rows of segments (``starts``, ``ends``, ``keys``, ``offsets``, ``outputs``,
        ``failures``) in one transaction."""
        if self._db is None:
            self._connect()
        values = [
            (r["starts"].tobytes(), r["ends"].tobytes(), r["keys"], r["offsets"].tobytes(), r["outputs"], r["failures"])
            for r in rows
        ]
        with self._transaction():
            self._db.executemany(
                "INSERT INTO segments (starts, ends, keys, offsets, outputs, failures) VALUES (?, ?, ?, ?, ?, ?)",
                values,
            )

    def close(self) -> None:
        """Close the file (a clean close folds the WAL back into it)."""
        db, self._db = self._db, None
        if db is None:
            return
        try:
            db.close()
        except self._sqlite.Error:
            pass


def _decode(starts_b: bytes, ends_b: bytes, keys: bytes | None, offsets_b: bytes, outputs_b: bytes) -> list[Segment]:
    from .fingerprint import KEY_BYTES

    starts, ends, offsets = array("q"), array("q"), array("q")
    starts.frombytes(starts_b)
    ends.frombytes(ends_b)
    offsets.frombytes(offsets_b)
    outputs = pickle.loads(outputs_b)
    n = len(starts)
    if len(ends) != n or len(offsets) != n or (keys is not None and len(keys) != n * KEY_BYTES):
        raise ValueError("a row's segment arrays disagree in length")
    out = []
    lo = 0
    for i in range(n):
        hi = offsets[i]
        key = keys[i * KEY_BYTES : (i + 1) * KEY_BYTES] if keys is not None else None
        out.append(Segment(starts[i], ends[i], key, outputs[lo:hi]))
        lo = hi
    return out
