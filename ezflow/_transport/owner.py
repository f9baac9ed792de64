"""Who owns a shared-memory segment, and whether that owner still lives.

    ezf_<owner pid>_<creator pid>_<n>_<pid namespace>   a segment
    ezf_<owner pid>_<pid namespace>_live                the owner's liveness lock

A pid means something only inside its PID namespace: two containers that
share /dev/shm (``--ipc=host``, a pod's volume) see each other's segments but
not each other's processes. So every name carries the owner's namespace, and
the owner holds a shared ``flock`` on its liveness file for as long as it
lives. A process judges an owner in its own namespace by pid (as before), and
one in another namespace by that lock: the kernel drops it the moment the
owner dies, however it dies, and ``flock`` works across namespaces because the
file is the same inode for everyone who sees /dev/shm.

An owner killed outright (SIGKILL, the OOM killer) runs no clean-up of its
own. A watcher process, started with the owner's first segment, waits on a
pipe only the owner writes to; end of file without a goodbye means the owner
died, and the watcher removes its segments and lock within a second (the
model is Python's own ``multiprocessing.resource_tracker``). It is a small
``python -I -S`` that imports nothing of ezflow, in its own session so the
terminal's Ctrl-C reaches only the owner.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no /dev/shm, no segments to own
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "NAMESPACE",
    "after_fork_child",
    "ensure_watcher",
    "hold_liveness",
    "judge",
    "liveness_name",
    "parse",
    "release_liveness",
    "segment_name",
    "stop_watcher",
]

PREFIX = "ezf_"
LIVE = "live"


def _namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0  # no PID namespaces here: the pid alone decides


NAMESPACE = _namespace()

_lock = threading.Lock()
_live_fd = -1
_live_name = ""
_watcher: subprocess.Popen | None = None


def segment_name(owner: int, creator: int, n: int) -> str:
    """Name a segment: owner first (tests and tools select by it), namespace last."""
    return f"{PREFIX}{owner}_{creator}_{n}_{NAMESPACE}"


def liveness_name(owner: int, ns: int = NAMESPACE) -> str:
    """Name the file an owner holds locked while it lives."""
    return f"{PREFIX}{owner}_{ns}_{LIVE}"


def parse(name: str) -> tuple[int, int, int | None] | None:
    """Return (owner, creator, namespace or None for names without one), or None if not a segment."""
    if not name.startswith(PREFIX):
        return None
    parts = name[len(PREFIX) :].split("_")
    if len(parts) not in (3, 4) or not all(p.isdigit() for p in parts):
        return None
    ns = int(parts[3]) if len(parts) == 4 else None
    return int(parts[0]), int(parts[1]), ns


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purpose
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rindex(b")") + 2 :][:1] not in (b"Z", b"X")
    except (OSError, ValueError):
        return True


def _lock_free(path: str) -> bool | None:
    """True if nobody holds the lock file, False if someone does, None if there is no such file."""
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return False
    finally:
        os.close(fd)  # also drops the lock we may just have taken
    return True


def judge(shm_dir: str, owner: int, ns: int | None) -> bool | None:
    """Say whether `owner` is alive (True), dead (False), or cannot be told from here (None).

    In this namespace (or for a name without one) the pid decides; in
    another the owner's liveness lock does, and without that file nothing can
    be said: the segment is left alone rather than taken from a live owner.
    """
    if ns is None or ns == NAMESPACE:
        return _pid_alive(owner)
    free = _lock_free(os.path.join(shm_dir, liveness_name(owner, ns)))
    if free is None:
        return None
    return not free


def hold_liveness(shm_dir: str, owner: int) -> None:
    """Create and lock this owner's liveness file (once per process)."""
    global _live_fd, _live_name
    if _live_fd >= 0 or fcntl is None:
        return
    with _lock:
        if _live_fd >= 0:
            return
        name = liveness_name(owner)
        try:
            fd = os.open(os.path.join(shm_dir, name), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except OSError:
            return  # judged by pid in our namespace all the same
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except OSError:
            os.close(fd)
            return
        _live_fd, _live_name = fd, name


def release_liveness(shm_dir: str) -> None:
    """Remove this owner's liveness file: it owns nothing any more."""
    global _live_fd, _live_name
    with _lock:
        fd, name = _live_fd, _live_name
        _live_fd, _live_name = -1, ""
    if fd < 0:
        return
    try:
        os.unlink(os.path.join(shm_dir, name))
    except OSError:
        pass
    os.close(fd)


# The watcher: stdin is a pipe from the owner; b"q" before EOF means a clean goodbye.
_WATCHER = r"""# ezflow segment watcher: removes a killed owner's /dev/shm segments
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
data = b""
while True:
    try:
        chunk = os.read(0, 64)
    except InterruptedError:
        continue
    except OSError:
        break
    if not chunk:
        break
    data += chunk
if data.endswith(b"q"):
    sys.exit(0)
owner, ns, shm_dir = sys.argv[1], sys.argv[2], sys.argv[3]
mine = ("ezf_%s_" % owner, "_%s" % ns)
live = "ezf_%s_%s_live" % (owner, ns)
# dying workers may still be finishing a segment for the dead owner: look a few times
for delay in (0.0, 0.25, 0.5, 1.0):
    time.sleep(delay)
    try:
        names = os.listdir(shm_dir)
    except OSError:
        break
    for n in names:
        parts = n[4:].split("_")
        ours = n.startswith(mine[0]) and (
            (len(parts) == 4 and parts[3] == ns and all(p.isdigit() for p in parts))
            or n == live
        )
        if ours:
            try:
                os.unlink(os.path.join(shm_dir, n))
            except OSError:
                pass
"""


def ensure_watcher(shm_dir: str, owner: int) -> None:
    """Start the process that cleans up after this owner if it is killed (once per process)."""
    global _watcher
    if _watcher is not None:
        return
    with _lock:
        if _watcher is not None:
            return
        try:
            _watcher = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _WATCHER, str(owner), str(NAMESPACE), shm_dir],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C or a killpg of the owner's group must not take it too
                close_fds=True,
            )
        except OSError:
            _watcher = None  # clean-up then falls back to the next ezflow process's sweep


def stop_watcher() -> None:
    """Say goodbye to the watcher (this process has freed everything) and reap it."""
    global _watcher
    with _lock:
        w, _watcher = _watcher, None
    if w is None:
        return
    try:
        assert w.stdin is not None
        w.stdin.write(b"q")
        w.stdin.close()
    except (OSError, ValueError):
        pass
    try:
        w.wait(timeout=2)
    except subprocess.TimeoutExpired:
        w.kill()
        w.wait()


def let_go_now(shm_dir: str, owner: int) -> None:
    """Drop the lock file, taking no lock (from a signal handler).

    The watcher is told nothing: when this process ends it sweeps once
    more, which catches a segment another thread made in the meantime.
    """
    try:
        os.unlink(os.path.join(shm_dir, liveness_name(owner)))
    except OSError:
        pass


def after_fork_child() -> None:
    """A forked child inherits the owner's pipe and lock: drop both, they stay the parent's."""
    global _watcher, _live_fd, _live_name, _lock
    w, _watcher = _watcher, None
    if w is not None and w.stdin is not None:
        try:
            w.stdin.close()  # our copy of the pipe: the watcher must see EOF when the owner dies
        except (OSError, ValueError):
            pass
        # the Popen object must not wait for or signal the parent's child from here
        w.returncode = 0
    if _live_fd >= 0:
        try:
            os.close(_live_fd)  # closing our copy keeps the parent's lock (same open file)
        except OSError:
            pass
    _live_fd, _live_name = -1, ""
    _lock = threading.Lock()
