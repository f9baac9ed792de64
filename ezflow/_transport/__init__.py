"""Transport: how functions, items and arrays reach another process.

    fn    --dill by value / pickle by name-->  worker
    items --pickle protocol 5-------------->  worker
    numpy buffers ---shared-memory segments->  worker (no copy of the buffer)

May import: `ezflow._core`.
"""
