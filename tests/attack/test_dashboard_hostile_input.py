"""The dashboard against hostile input, in process (an in-memory etcd and broker): whatever
comes in a query, a form, an etcd record or a dead letter, a page answers 200 or 400 with a
reason, never 500, and shows what it cannot decode instead of stopping."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from droplet.broker.stub import StubBroker
from droplet.broker_config.names import QueueNames
from droplet.dashboard.app import Dashboard
from droplet.dashboard.dead_letters import DeadLetters
from droplet.dashboard.guard import BadInput, Guard
from droplet.dashboard.sampler import Sampler
from droplet.settings import Settings
from droplet.signing import Signer
from droplet.store.memory import MemoryKV

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

TOKEN = "s3cret-token"


@dataclass
class Board:
    kv: MemoryKV
    broker: StubBroker
    names: QueueNames
    sampler: Sampler
    http: TestClient


@pytest.fixture
def board() -> Iterator[Board]:
    settings = Settings(namespace="hostile")
    kv, broker, names = MemoryKV(), StubBroker(), QueueNames.of(settings)
    broker.declare_queue(names.dead)
    sampler = Sampler(settings, lambda: kv, broker.connect)
    dead = DeadLetters(broker.connect, names, Signer(None))
    app = Dashboard(sampler, dead, Guard(TOKEN)).app
    sampler.sample()
    with TestClient(app, raise_server_exceptions=False) as http:
        yield Board(kv, broker, names, sampler, http)


@pytest.mark.parametrize("raw", ["\u00b2", "\u2460", "9" * 5000])
def test_a_number_that_is_digits_but_not_a_number_is_refused_with_400(board: Board,
                                                                     raw: str) -> None:
    # "²" and "①" are digits to str.isdigit() but not to int(); 5000 digits are past int()'s
    # limit on conversions. Each was a 500 page.
    for page, name in (("/calls", "limit"), ("/errors", "limit"), ("/plots", "minutes")):
        answer = board.http.get(page, params={name: raw})
        assert answer.status_code == 400, (page, raw[:5], answer.status_code)
        assert "must be a whole number" in answer.text


@pytest.mark.parametrize("raw", ["\u00b2", "\u2460"])
def test_a_confirmation_whose_expiry_is_not_a_plain_number_is_refused_with_400(
        board: Board, raw: str) -> None:
    with pytest.raises(BadInput, match="bad confirmation"):
        Guard(TOKEN).redeem("purge", "all", raw, "0" * 64)
    answer = board.http.post("/dead-letters/confirm", data={
        "action": "purge", "target": "all", "expires": raw, "ticket": "0" * 64})
    assert answer.status_code == 400 and "bad confirmation" in answer.text
