"""Transport state has one owner per part: other modules call its functions, and a finalizer never waits."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

from ezflow._transport.provisional import Provisional

TRANSPORT = Path(__file__).resolve().parent.parent / "ezflow" / "_transport"

# each part of segments.S, and the modules that own it; every other module calls them instead
OWNERS = [
    (
        {"owned", "free", "free_bytes", "idle", "active", "keep_until", "reaper", "wake_r", "wake_w", "ready",
         "counter", "released", "lock"},
        {"registry.py", "cleanup.py"},  # the registry, and its clean-up room
    ),
    ({"kept", "kept_new", "kept_gone", "kept_bytes", "kept_check"}, {"kept.py"}),
]


def test_only_its_owner_touches_each_part_of_the_state():
    found = []
    for path in sorted(TRANSPORT.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "S":
                for fields, owners in OWNERS:
                    if node.attr in fields and path.name not in owners | {"segments.py"}:
                        found.append(f"{path.name}:{node.lineno} S.{node.attr} (owned by {sorted(owners)})")
    assert not found, found
    assert any(True for _ in TRANSPORT.glob("link.py")), "the check looks in the wrong folder"


def test_a_provisional_segment_goes_mine_pending_given():
    p = Provisional()
    p.made("a")
    assert p.holding()
    assert p.sending("a") and not p.sending("a")  # only a segment that is ours is handed over
    assert p.sent(["a"]) == []
    assert not p.holding()  # the owner has it now
    assert p.unmapped("a") == (False, True)  # keep the mapping: the owner unlinks it
    assert "a" not in p


def test_a_dropped_attempt_unlinks_what_died_meanwhile():
    p = Provisional()
    p.made("a")
    assert p.sending("a")
    assert p.unmapped("a") == (False, False)  # pending: not ours to unlink yet
    assert p.dropped(["a"]) == ["a"]  # the attempt was not sent: unlink it now
    assert "a" not in p and not p.holding()


def test_the_finalizer_never_waits_for_the_lock():
    # A finalizer may run inside the garbage collector while this very thread holds the lock:
    # it must not block; the change lands with the next call that takes the lock.
    p = Provisional()
    p.made("a")
    p.made("b")
    done = threading.Event()
    with p._lock:
        t = threading.Thread(target=lambda: (p.unmapped("a"), done.set()))
        t.start()
        assert done.wait(10), "the finalizer waited for the lock"
        assert p.unmapped("b") == (False, False)  # this thread, holding the lock: no deadlock
    t.join(10)
    assert p.holding()  # deferred, not lost
    assert sorted(p.take_unlinks()) == ["a", "b"]
    assert not p.holding()


def test_exit_takes_every_segment_still_ours():
    p = Provisional()
    for name in "abc":
        p.made(name)
    assert p.sending("b")
    assert p.sending("c") and p.sent(["c"]) == []
    with p._lock:
        assert p.unmapped("a") == (False, False)
    assert sorted(p.take_all()) == ["a", "b"]  # c is the owner's
    assert not p.holding()


def test_provisional_changes_from_many_threads_stay_consistent():
    p = Provisional()
    names = [f"s{i}" for i in range(2000)]
    for n in names:
        p.made(n)
    unlinked: list[str] = []
    lock = threading.Lock()

    def finalize(part: list[str]) -> None:
        for n in part:
            unlink, _ = p.unmapped(n)
            if unlink:
                with lock:
                    unlinked.append(n)

    def settle() -> None:
        for _ in range(200):
            out = p.take_unlinks()
            with lock:
                unlinked.extend(out)

    threads = [threading.Thread(target=finalize, args=(names[i::4],)) for i in range(4)]
    threads.append(threading.Thread(target=settle))
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    unlinked.extend(p.take_all())
    assert sorted(unlinked) == sorted(names)  # each exactly once
