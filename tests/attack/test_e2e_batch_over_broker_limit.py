"""Attack (end to end, a private RabbitMQ whose max_message_size is 1 MiB, Droplet's
max_message_bytes 512 KiB below it): `client.map` over three 400 KB arguments.

The client checks each call's arguments against max_message_bytes (client/client.py:166-175),
then `map` sends chunk_size (128) calls in ONE message (client/client.py:202-209,
_send_calls; the batcher does the same with up to 64 small calls) with no bound on the
message's total size. The broker refuses the 1.2 MB message and closes the
connection; the pump reconnects and re-sends everything in flight (client/pump.py:191-214),
the same message again, and so on: none of the calls is ever answered. (At the defaults,
max_message_bytes 16 MiB and RabbitMQ's 128 MiB: map over nine 15 MB arguments.)

README "Bad input ... The client refuses what it cannot send before sending"; "Nothing hangs".
Run: .venv/bin/python -m pytest -q tests/attack/test_e2e_batch_over_broker_limit.py
"""

from __future__ import annotations

from pathlib import Path

import pytest

import droplet
from tests.attack.small_broker import small_broker_fleet
from tests.conftest import Services

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def test_calls_each_within_max_message_bytes_made_back_to_back_are_answered(
    services: Services, tmp_path: Path, unique: str
) -> None:
    with (small_broker_fleet(services, tmp_path, 1, "attack") as settings,
          droplet.connect(settings=settings) as c):
        size = c.register(lambda lib, blob: len(blob), unique)
        assert size(b"x").get(timeout=20) == 1
        blob = b"y" * 400_000
        try:  # each call is within the limit; map sends them in one message
            results = list(c.map(size, [blob] * 3, timeout=20))
        except droplet.DropletError as exc:
            pytest.fail(f"{type(exc).__name__}: {exc}")
        assert results == [400_000] * 3
