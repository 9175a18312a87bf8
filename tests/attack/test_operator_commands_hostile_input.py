"""`droplet status` and `droplet dead-letters` against hostile records and messages, with
an in-memory etcd and broker: no traceback, no lost letter, no terminal escape printed raw,
strict JSON; and `droplet dashboard` refusing settings that expose it."""

from __future__ import annotations

import json
import math

import pytest

from droplet.broker.stub import StubBroker
from droplet.broker_config.names import DEAD_FROM_HEADER, DEAD_REASON_HEADER
from droplet.proto import envelope, pb
from droplet.settings import Settings
from droplet.signing import Signer
from droplet.store.keys import StoreKeys
from droplet.store.memory import MemoryKV
from tests.attack.dashboard_board import (
    ODD_HEADERS,
    AmqpNames,
    Board,
    dead_letter,
    fleet_with_garbage,
)


def test_the_command_lists_dead_letters_with_odd_headers(
        board: Board, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from droplet.cli import dead_letters as command

    for headers in ODD_HEADERS:
        dead_letter(board, b"junk", headers)
    monkeypatch.setattr(command, "broker_factory", lambda settings, name: board.broker.connect)
    settings = Settings(namespace="hostile")
    assert command.run_dead_letters(settings, False, 100, False, False) == 0
    assert f"{len(ODD_HEADERS)} dead letters inspected" in capsys.readouterr().out
    assert command.run_dead_letters(settings, True, 100, False, False) == 0
    assert len(json.loads(capsys.readouterr().out)) == len(ODD_HEADERS)


def test_droplet_status_reads_past_a_garbage_record(monkeypatch: pytest.MonkeyPatch) -> None:
    from droplet.cli import status

    settings, kv, broker = Settings(namespace="hostile"), MemoryKV(), StubBroker()
    fleet_with_garbage(kv, settings)
    monkeypatch.setattr(status, "open_kv", lambda settings: kv)
    monkeypatch.setattr(status, "broker_factory", lambda settings, name: broker.connect)
    report = status.collect(settings)
    assert [w["id"] for w in report["workers"]] == ["good"]
    assert [d["name"] for d in report["dags"]] == ["d"]


def test_the_command_keeps_a_dead_letter_whose_queue_is_gone_instead_of_losing_it(
        board: Board, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # `--requeue` published without `mandatory` and acked at once: a letter that died in a
    # queue since deleted (a dead worker's) went to no queue and left the dead-letter queue,
    # and the command said "requeued". The dashboard's requeue waits for the broker instead.
    from droplet.cli import dead_letters as command

    board.broker.declare_queue("hostile.alive")
    dead_letter(board, b"one", {DEAD_FROM_HEADER: "hostile.worker.gone", DEAD_REASON_HEADER: "x"})
    dead_letter(board, b"two", {DEAD_FROM_HEADER: "hostile.alive", DEAD_REASON_HEADER: "x"})
    monkeypatch.setattr(command, "broker_factory", lambda settings, name: board.broker.connect)
    assert command.run_dead_letters(Settings(namespace="hostile"), False, 100, True, False) == 0
    out = capsys.readouterr().out
    assert board.broker.queue_depth(board.names.dead) == 1, "the letter with no queue stays"
    assert board.broker.queue_depth("hostile.alive") == 1
    assert "1 of 2 dead letters requeued" in out
    assert "hostile.worker.gone no longer exists" in out


ESCAPES = "\x1b[2J\x1b]0;owned\x07\x9b31m\u202e"  # clear screen, set title, CSI, RTL override


def _plain(text: str) -> bool:
    return not any(ch in text for ch in "\x1b\x07\x9b\u202e")


def test_the_command_does_not_print_a_dead_letters_terminal_escapes(
        board: Board, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Whoever can publish (no signing key needed: unsigned messages are what is dead-lettered)
    # chose bytes that `droplet dead-letters` printed raw, so they could clear the operator's
    # screen, retitle the terminal or write over what is listed.
    from droplet.cli import dead_letters as command

    call = pb.FunctionCall(name="f" + ESCAPES, call_id="c")
    body = envelope.encode([pb.Message(call=call)], Signer(None))
    dead_letter(board, body, {DEAD_FROM_HEADER: "q" + ESCAPES, DEAD_REASON_HEADER: ESCAPES})
    monkeypatch.setattr(command, "broker_factory", lambda settings, name: board.broker.connect)
    assert command.run_dead_letters(Settings(namespace="hostile"), False, 10, False, False) == 0
    out = capsys.readouterr().out
    assert _plain(out), repr(out)
    assert "\\x1b[2J" in out, "shown escaped, not hidden"


def test_status_does_not_print_terminal_escapes_from_etcd(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from droplet.cli import status

    settings, kv, broker = Settings(namespace="hostile"), MemoryKV(), StubBroker()
    keys = StoreKeys(settings.etcd_prefix)
    kv.put(keys.worker("w"), pb.WorkerStatus(id="w" + ESCAPES, host=ESCAPES).SerializeToString())
    kv.put(keys.scheduler("s"),
           pb.SchedulerStatus(id="s" + ESCAPES, host=ESCAPES).SerializeToString())
    monkeypatch.setattr(status, "open_kv", lambda settings: kv)
    monkeypatch.setattr(status, "broker_factory", lambda settings, name: broker.connect)
    status.run_status(settings, False)
    out = capsys.readouterr().out
    assert _plain(out), repr(out)


@pytest.mark.parametrize("host", ["", " "])
def test_an_empty_host_is_refused_rather_than_listening_everywhere(
        host: str, capsys: pytest.CaptureFixture[str]) -> None:
    # `--host "$DASHBOARD_HOST"` with the variable unset: "" bound every interface (IPv4 and
    # IPv6) while the command counted it as loopback, so it gave no warning about the token.
    from droplet.cli.main import main

    assert main(["dashboard", "--host", host, "--port", "1"]) == 1
    assert "--host must name an address" in capsys.readouterr().err


def test_status_json_is_strict_json_whatever_the_records_hold(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # A load, a start time or a resource tag that is NaN or infinite in a worker's record
    # came out as NaN / Infinity: not JSON, so jq, JSON.parse or a health check choked on
    # the whole report.
    from droplet.cli import status

    settings, kv, broker = Settings(namespace="hostile"), MemoryKV(), StubBroker()
    keys = StoreKeys(settings.etcd_prefix)
    kv.put(keys.worker("w"), pb.WorkerStatus(
        id="w", utilisation=math.nan, started_at=-math.inf,
        resources={"gpu": math.inf}).SerializeToString())
    kv.put(keys.scheduler("s"), pb.SchedulerStatus(id="s", started_at=math.nan)
           .SerializeToString())
    monkeypatch.setattr(status, "open_kv", lambda settings: kv)
    monkeypatch.setattr(status, "broker_factory", lambda settings, name: broker.connect)
    status.run_status(settings, True)

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    report = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert report["workers"][0]["utilisation"] is None


def test_a_dead_letter_naming_a_queue_no_broker_could_have_is_not_requeued_there() -> None:
    """x-droplet-from is a header: whoever publishes sets it. Naming over 255 bytes (longer
    than any queue name), it made the requeue's publish raise ValueError on the shared
    RabbitMQ: "requeue all" was a 500 that moved no letter, and `droplet dead-letters
    --requeue` a traceback, until the letter was purged."""
    from droplet.broker.interface import Delivery
    from droplet.cli.dead_letters import describe

    for name in ("q" * 256, "\u00e9" * 128):
        headers = {DEAD_FROM_HEADER: name, DEAD_REASON_HEADER: "x"}
        entry = describe(Delivery("dead", b"junk", 1, None, None, False, headers), Signer(None))
        assert entry["from_queue"] == "", "not a queue: not where it died"
        assert "not a queue name" in entry["reason"]
    fine = {DEAD_FROM_HEADER: "q" * 255}
    entry = describe(Delivery("dead", b"junk", 1, None, None, False, fine), Signer(None))
    assert entry["from_queue"] == "q" * 255


@pytest.mark.parametrize("token", ["1234", "hunter2", " " * 20])
def test_a_token_short_enough_to_guess_is_refused_at_start(
        token: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Nothing limits guesses (each is one POST) and any token was taken: DROPLET_DASHBOARD_TOKEN
    # =1234 on a dashboard served with --host 0.0.0.0 fell to ten thousand requests.
    from droplet.cli.main import main

    monkeypatch.setenv("DROPLET_DASHBOARD_TOKEN", token)
    assert main(["dashboard", "--port", "1"]) == 1
    assert "dashboard_token must be at least 16 characters" in capsys.readouterr().err


def test_migrate_queues_passes_over_a_fleet_key_that_names_no_worker(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Worker ids are checked when a worker starts, but migrate-queues took any key under
    fleet/ or workers/ as one: it declared queues named after it (a terminal escape printed
    raw in "... up to date"), and one over 255 bytes raised ValueError on RabbitMQ: a
    traceback, and the queues after it never migrated."""
    from droplet.cli import migrate

    settings, kv, broker = Settings(namespace="hostile"), MemoryKV(), StubBroker()
    keys = StoreKeys(settings.etcd_prefix)
    for worker_id in ("good", "bad\x1b[2J", "w" * 300):
        kv.put(keys.fleet + worker_id, b"")
    monkeypatch.setattr(migrate, "open_kv", lambda settings: kv)
    monkeypatch.setattr(migrate, "broker_factory", lambda settings, name: broker.connect)
    assert migrate.run_migrate(settings) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "hostile.worker.good: up to date" in out
    assert sorted(q for q in broker.queues if ".worker." in q) == ["hostile.worker.good"]
    assert "not a worker id" in out


def test_status_reads_past_a_worker_id_too_long_for_a_queue_name(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from droplet.cli import status

    settings, kv, broker = Settings(namespace="hostile"), MemoryKV(), StubBroker()
    long_id = "w" * 250
    kv.put(StoreKeys(settings.etcd_prefix).worker(long_id),
           pb.WorkerStatus(id=long_id).SerializeToString())
    monkeypatch.setattr(status, "open_kv", lambda settings: kv)
    monkeypatch.setattr(status, "broker_factory",
                        lambda settings, name: lambda: AmqpNames(broker))
    assert status.run_status(settings, False) == 0
    assert long_id in capsys.readouterr().out
