"""Reaching a dask cluster for a dask stage: import dask, check the stage, get a client.

    spec.backend: Client | "tcp://..." | cluster object | "dask" --connect()--> (client, owned)

dask is imported only here, and only when a stage has ``backend=``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .._core.errors import StageError

if TYPE_CHECKING:
    from .._plan.spec import StageSpec

__all__ = ["DaskNotInstalled", "connect", "import_distributed"]

ADDRESS = re.compile(r"^[a-z0-9+]+://")


class DaskNotInstalled(ImportError):
    """dask.distributed is needed for ``backend=`` and is not installed."""


def import_distributed() -> Any:
    """Return the `distributed` module, or raise `DaskNotInstalled` with the fix."""
    try:
        import distributed
    except ImportError as exc:
        raise DaskNotInstalled(
            f'backend= runs stages on dask.distributed, which is not installed ({exc}): '
            f'pip install "ezflow[dask]"'
        ) from exc
    return distributed


def connect(spec: StageSpec, distributed: Any) -> tuple[Any, bool]:
    """Return the client `spec.backend` names, and whether we made it (then we close it)."""
    backend = spec.backend
    if isinstance(backend, distributed.Client):
        if backend.asynchronous:
            raise StageError(spec.name, "backend= needs a synchronous dask Client, not Client(asynchronous=True)")
        if backend.status not in ("running", "connecting", "newly-created"):
            raise StageError(spec.name, f"the dask Client given as backend= is {backend.status}, not running")
        return backend, False
    if isinstance(backend, str) and backend == "dask":
        try:
            return distributed.get_client(), False
        except ValueError as exc:
            raise StageError(
                spec.name,
                "backend='dask' uses the current dask client and there is none: create one first "
                "(from dask.distributed import Client; client = Client() for a local cluster, "
                "or Client('tcp://scheduler:8786')), or pass backend=client or an address",
            ) from exc
    address = getattr(backend, "scheduler_address", None)  # a cluster object (LocalCluster, ...)
    if isinstance(address, str):
        backend = address
    if isinstance(backend, str) and ADDRESS.match(backend):
        try:
            client = distributed.Client(backend, set_as_default=False)
        except Exception as exc:
            raise StageError(
                spec.name, f"cannot connect to the dask scheduler at {backend}: {type(exc).__name__}: {exc}"
            ) from exc
        return client, True
    raise TypeError(
        "backend must be a dask.distributed Client, a scheduler address such as "
        f"'tcp://127.0.0.1:8786', a dask cluster object, or 'dask' (the current client); got {backend!r}"
    )
