"""The worker's own signal handlers, stood for in tests of user code that replaces them
(worker/own_signals.py): `worker_handlers` sets `worker_handler` for each of SIGNALS and puts
the test process's own back afterwards. The fixture reaches the tests through tests/conftest.py."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import pytest

from droplet.worker.cancel import INTERRUPT_SIGNAL

SIGNALS = (signal.SIGTERM, signal.SIGINT, INTERRUPT_SIGNAL)


def worker_handler(_signum: int, _frame: Any) -> None:
    """Stands for the worker's own (cli/services.py, worker/cancel.py)."""


@pytest.fixture
def worker_handlers() -> Iterator[None]:
    previous = [signal.signal(signum, worker_handler) for signum in SIGNALS]
    try:
        yield
    finally:
        for signum, handler in zip(SIGNALS, previous, strict=True):
            signal.signal(signum, handler)
