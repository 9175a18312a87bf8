"""`droplet dead-letters`: what was refused (undecodable, unsigned, crashing its handler, or
redelivered too often), where it came from, and what to do with it.

Inspecting leaves the queue as it was: messages are taken without an ack and go back when
the connection closes. `--requeue` sends them back to the queue they died in (after you fixed
the cause), and a letter leaves the dead-letter queue only once the broker confirmed it there
(one whose queue is gone stays dead, and says so); `--purge` drops them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from droplet.broker.interface import BrokerConnection, ConfirmCallback, Delivery
from droplet.broker_config.names import (
    DEAD_FROM_HEADER,
    DEAD_REASON_HEADER,
    QueueNames,
    can_be_queue,
)
from droplet.cli.shown import shown
from droplet.errors import ConfigurationError, DropletError
from droplet.proto import envelope
from droplet.runtime import broker_factory
from droplet.settings import Settings
from droplet.signing import Signer

CONFIRM_WAIT_S = 5.0  # what the broker has not confirmed by then stays dead


def _text(value: Any) -> str:
    """A header as text, whatever its type: bytes that are not UTF-8 too (the broker hands
    those over undecoded), so that an odd header cannot stop the listing."""
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def origin(delivery: Delivery) -> tuple[str, str]:
    """(queue, reason) of the death: what Droplet recorded when it dead-lettered one message
    of an envelope, else the last death in RabbitMQ's x-death header. Headers come from
    whoever published the message, so an x-death that is not RabbitMQ's list of tables
    counts as no record of where it died."""
    headers = delivery.headers or {}
    if DEAD_FROM_HEADER in headers:
        queue, reason = _text(headers[DEAD_FROM_HEADER]), _text(headers.get(DEAD_REASON_HEADER))
    else:
        deaths = headers.get("x-death")
        if not isinstance(deaths, list) or not deaths or not isinstance(deaths[0], Mapping):
            return "", ""
        queue, reason = _text(deaths[0].get("queue")), _text(deaths[0].get("reason"))
    if not can_be_queue(queue):  # requeueing there failed the whole action
        return "", f"{reason} (it names {queue[:40]!r}..., not a queue name)"
    return queue, reason


def describe(delivery: Delivery, signer: Signer) -> dict[str, Any]:
    queue, reason = origin(delivery)
    entry: dict[str, Any] = {"from_queue": queue, "reason": reason, "bytes": len(delivery.body)}
    try:
        messages = envelope.decode(delivery.body, signer)
        entry["verified"] = True
    except DropletError as exc:
        messages = envelope.peek(delivery.body)
        entry["verified"] = False
        entry["problem"] = str(exc)
    entry["messages"] = [_summary(m) for m in messages]
    return entry


def _summary(message: Any) -> dict[str, str]:
    kind = message.WhichOneof("kind") or "?"
    inner = getattr(message, kind) if kind != "?" else None
    summary = {"kind": kind}
    for field in ("name", "call_id", "function_name", "target_function", "id"):
        value = getattr(inner, field, "") if inner is not None else ""
        if value:
            summary[field] = str(value)
    return summary


def run_dead_letters(
    settings: Settings, as_json: bool, limit: int, requeue: bool, purge: bool
) -> int:
    if limit < 1:  # 0 or less inspected nothing and said "0 dead letters", whatever waited
        raise ConfigurationError(f"--limit must be at least 1, not {limit}")
    names = QueueNames.of(settings)
    signer = Signer(settings.signing_key)
    conn = broker_factory(settings, "droplet-dead-letters")()
    entries: list[dict[str, Any]] = []
    try:
        if conn.queue_depth(names.dead) is None:
            print(f"no dead-letter queue {names.dead!r} (nothing has been declared yet)")
            return 0
        settled: list[bool] = []
        while len(entries) < limit and (delivery := conn.get(names.dead)) is not None:
            entry = describe(delivery, signer)
            if requeue and entry["from_queue"]:
                entry["requeued"] = False
                conn.publish(entry["from_queue"], delivery.body, reply_to=delivery.reply_to,
                             correlation_id=delivery.correlation_id, mandatory=True,
                             on_confirm=_requeued(conn, delivery.tag, entry, settled))
            elif requeue:
                entry["left"] = "where it died is not recorded"
            elif purge:
                conn.ack(delivery.tag)
            entries.append(entry)
        _await_confirms(conn, settled, sum("requeued" in e for e in entries))
        for entry in entries:
            if entry.get("requeued") is False and "left" not in entry:
                entry["left"] = f"not confirmed by the broker in {CONFIRM_WAIT_S:g}s"
    finally:
        conn.close()  # what was not acked goes back to the queue
    if as_json:
        print(json.dumps(entries, indent=2))
        return 0
    if requeue:
        done = sum(bool(e.get("requeued")) for e in entries)
        print(f"{done} of {len(entries)} dead letters requeued in {names.dead}")
    else:
        print(f"{len(entries)} dead letters {'purged' if purge else 'inspected'} in {names.dead}")
    for entry in entries:
        kinds = ", ".join(
            m["kind"] + (f" {m['name']}" if "name" in m else "") for m in entry["messages"]
        ) or "undecodable"
        note = "" if entry.get("verified") else f"  [{entry.get('problem', 'unverified')}]"
        left = f"  (left dead: {entry['left']})" if "left" in entry else ""
        print(shown(f"  from {entry['from_queue'] or '?'} ({entry['reason'] or '?'}): "
                    f"{kinds}{note}{left}"))
    return 0


def _requeued(conn: BrokerConnection, tag: int, entry: dict[str, Any],
              settled: list[bool]) -> ConfirmCallback:
    """Acks a dead letter once the broker confirmed its copy in the queue it died in, and
    only then: published without `mandatory` and acked at once, a letter whose queue had
    gone (a dead worker's) was dropped by the broker and lost while reported requeued."""
    def on_confirm(ok: bool) -> None:
        if ok:
            conn.ack(tag)
            entry["requeued"] = True
        else:
            entry["left"] = f"{entry['from_queue']} no longer exists"
        settled.append(ok)

    return on_confirm


def _await_confirms(conn: BrokerConnection, settled: list[bool], expected: int) -> None:
    deadline = time.monotonic() + CONFIRM_WAIT_S
    while len(settled) < expected and time.monotonic() < deadline:
        conn.poll(0.05)
