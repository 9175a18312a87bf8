"""Attack: a result the caller's process cannot load (its class's module is missing there, or
its loading raises), asked for twice.

The first get() raised the loading error; the future stayed pending, so the second get()
waited again for the answer the first had taken: a direct call's for its whole timeout, then
"no result ... within 5s"; a stored call's until its 2 s store check. The loading error is now
the future's outcome, raised by every get() (the asyncio client: test_aio_closed_and_unloadable).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

import droplet


def _refuse_loading() -> None:
    raise ValueError("cannot load on the client")


@pytest.mark.parametrize("direct", [True, False])
def test_every_get_raises_the_loading_error_at_once(
        client: droplet.DropletClient, unique: str, direct: bool) -> None:
    class Unloadable:
        def __reduce__(self) -> Any:
            return (_refuse_loading, ())

    bad = client.register(lambda lib: Unloadable(), unique)
    future = bad.direct() if direct else bad()
    for _ in range(2):
        started = time.monotonic()
        with pytest.raises(ValueError, match="cannot load on the client"):
            future.get(timeout=5)
        assert time.monotonic() - started < 1
    assert future.done()
