"""The ``adaptrail`` process's own start-up and exit costs: Prefect's temporary API started early, a quick exit.

Without ``PREFECT_API_URL`` a flow runs against a temporary Prefect server that Prefect starts in a subprocess on
the flow's first API call, and waits for (10-15 s on 2 CPU cores: the server's own imports and database set-up).
Started before the flow module is imported, that wait overlaps the flow's imports (torch, MLflow, scikit-learn).
It is the same server Prefect would start (``SubprocessASGIServer``, one per process, stopped at exit): the flow's
first call finds it running.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import threading
from collections.abc import Iterator
from typing import Any, NoReturn


class _Starter(threading.Thread):
    """Starts the temporary server and waits for it off the main thread (waiting holds no lock: imports go on)."""

    def __init__(self, server: Any) -> None:
        super().__init__(name="prefect-temporary-api", daemon=True)
        self.server = server
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.server.start()  # spawns the server's process, returns once it answers /health
        except BaseException as err:  # noqa: BLE001 - re-raised in the main thread
            self.error = err


def _uses_temporary_api() -> bool:
    """What Prefect's ``get_client`` decides: no API URL set, and the temporary (ephemeral) server allowed."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    return not PREFECT_API_URL.value() and bool(PREFECT_SERVER_EPHEMERAL_ENABLED.value())


@contextlib.contextmanager
def temporary_api_starting() -> Iterator[None]:
    """Start the temporary Prefect API (where a flow run would start one) in the background while the block runs
    (the flow's imports); on leaving the block, wait until it answers, raising what starting it raised."""
    starter = None
    if _uses_temporary_api():
        # imported here, not in the thread: imported there it would share the interpreter lock with the flow's
        # imports, and the server's process would start only when they end (the flow's first API call imports it)
        import prefect.main  # noqa: F401 - Prefect's logging set-up (as a flow's import does): the start is logged
        from prefect.server.api.server import SubprocessASGIServer

        starter = _Starter(SubprocessASGIServer())
        starter.start()
    yield
    if starter is not None:
        starter.join()
        if starter.error is not None:
            raise starter.error


def exit_without_final_gc(code: int) -> NoReturn:
    """Exit with ``code``; the interpreter's last garbage collection skips the objects alive now (``gc.freeze``):
    walking every object of torch, MLflow, Prefect and scikit-learn costs 2-5 s on 2 cores only to free memory the
    OS takes back. atexit handlers (the temporary Prefect server's stop, MLflow's end of run) and reference counting
    still run as before."""
    gc.freeze()
    sys.exit(code)
