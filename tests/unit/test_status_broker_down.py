"""`droplet status` when RabbitMQ cannot be reached: it says so and exits 1 (it printed "-"
for every queue and exited 0, as if nothing were queued). No services: nothing listens on the
broker port given, and the etcd half of the report is stood in for."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from droplet.cli import status
from droplet.settings import Settings


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_queue_depths_say_why_the_broker_could_not_be_reached() -> None:
    settings = Settings(broker_url=f"amqp://guest:guest@127.0.0.1:{_closed_port()}/%2F",
                        namespace="t-status-down")
    got = status._queue_depths(settings, ["w1"])
    assert set(got["queues"].values()) == {None}
    assert got["broker_error"]


@pytest.mark.parametrize("as_json", [False, True])
def test_status_prints_the_reason_and_exits_1(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        as_json: bool) -> None:
    report: dict[str, Any] = {
        "namespace": "n", "schedulers": [], "workers": [], "dags": [], "functions": [],
        "queues": {"n.work": None}, "broker_error": "RabbitMQ connect failed: refused"}
    monkeypatch.setattr(status, "collect", lambda settings: report)
    assert status.run_status(Settings(), as_json) == 1
    out = capsys.readouterr().out
    if as_json:
        assert json.loads(out)["broker_error"] == "RabbitMQ connect failed: refused"
    else:
        assert "RabbitMQ cannot be reached: RabbitMQ connect failed: refused" in out
    del report["broker_error"]
    assert status.run_status(Settings(), as_json) == 0


def test_a_broker_that_cannot_be_reached_is_named_with_the_setting_to_check() -> None:
    # It was "RabbitMQ connect failed: ConnectionRefusedError: [Errno 111] Connection
    # refused", naming neither the address nor what to change.
    port = _closed_port()
    settings = Settings(broker_url=f"amqp://guest:guest@127.0.0.1:{port}/%2F",
                        namespace="t-status-down")
    error = status._queue_depths(settings, [])["broker_error"]
    assert f"RabbitMQ at 127.0.0.1:{port} cannot be reached" in error
    assert "check broker_url (DROPLET_BROKER_URL)" in error
