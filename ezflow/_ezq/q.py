"""ezq-compatible queues and workers: `Q`, `Msg`, `run`, `run_thread`.

    owner process (made the Q)                           worker process (run)
    +------------------------------------+               +--------------------------+
    | Q state: the one deque of messages |   one duplex  | fn(q, out, ...)          |
    |  ^  parent code and run_thread     |   pipe per    |   for msg in q:  --GET-->|
    |  |  workers use it directly        |   worker      |            <--ITEM/EMPTY-|
    |  v                                 |               |   out.put(x)     --PUT-->|
    | broker thread: reads every worker  | <===========> |   return / raise --DONE->|
    |  pipe at once; stores PUTs, serves |               | receiver thread: replies;|
    |  GETs (and their timeouts), keeps  |               |  EOF = owner died, so    |
    |  DONE (the worker's exception)     |               |  the worker exits        |
    +------------------------------------+               +--------------------------+

This module is the layer's front; the work is done in modules of one job:

    msg.py      Msg, END_MSG and the frames on a worker's pipe
    state.py    the owner's side of each process Q (messages, waiting GETs) and their registry
    broker.py   the owner's broker thread
    child.py    a worker process's side: bootstrap, and Q calls sent to the broker
    workers.py  run, run_thread and the Worker handle (processes start in _core.procs, as Flow's do)
    queue.py    Q

Why this shape, against ezq's defects:

- A Q's messages live only in the process that created it. A worker reaches
  them through its own pipe, and the broker reads every pipe all the time, so
  a worker's ``put`` never blocks and a worker never waits at exit for a
  reader: the multiprocessing "join before drain" deadlock cannot happen,
  whatever the size of what was put. Nothing is moved out of a queue that
  another worker reads (a parent that drained queues while joining would
  steal a downstream worker's input).
- `Q` pickles as its id, so it crosses fork, spawn and forkserver alike.
  There is no semaphore, so nothing is ever created in /dev/shm.
- Functions travel by value with dill when a child could not import them
  (lambdas, closures, ``__main__`` and notebook code); see `_transport.serialize`.
- A worker's exception travels back in DONE (type kept, traceback text
  chained as ``__cause__``); `Q.stop` raises it once every worker is joined.
- Only the owner holds the owner end of a worker's pipe (_core.procs's fork
  hook closes inherited copies), so when the owner dies, even by SIGKILL, the
  worker reads EOF and exits at once. Workers are daemonic for the ordinary exits.
"""

from __future__ import annotations

from .msg import END_MSG, Msg
from .queue import Q
from .workers import Worker, run, run_thread

__all__ = ["END_MSG", "Msg", "Q", "Worker", "run", "run_thread"]
