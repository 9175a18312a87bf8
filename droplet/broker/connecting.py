"""What both transports share about opening a connection: a node's URL read, the error a
failed connect leaves as, and the walk over broker_url's nodes.

Apart from either transport (broker/amqp_wire.py, broker/rabbitmq_connect.py) because
connecting has its own failure story, which must read the same whichever transport runs: a
refused user or a TLS mismatch must say which setting to change and is not retried blindly,
while a node that is down is simply skipped for the next one of the rotation
(broker/nodes.py).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import unquote, urlsplit

from droplet.broker.nodes import NodeOrder
from droplet.errors import BrokerCredentialsError, BrokerError, BrokerTlsError, ConfigurationError
from droplet.settings import Settings
from droplet.tls import broker_peer, client_context, explain_failure

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Endpoint:
    """One node of broker_url, read as pika.URLParameters reads it."""

    host: str
    port: int
    username: str
    password: str
    vhost: str
    tls: ssl.SSLContext | None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def tls_context(settings: Settings) -> ssl.SSLContext:
    """The client TLS context of an amqps:// node, from the broker_*_file settings; a bad
    file is a BrokerTlsError naming the setting."""
    try:
        return client_context(
            "broker_ca_file", settings.broker_ca_file, "broker_cert_file",
            settings.broker_cert_file, "broker_key_file", settings.broker_key_file)
    except ConfigurationError as exc:
        raise BrokerTlsError(str(exc)) from None


def endpoint(settings: Settings, url: str) -> Endpoint:
    """A node's URL: amqp:// or amqps:// (any case), percent-decoded user, password and
    virtual host ("/" when the path is empty), ports 5672 and 5671 by default."""
    try:
        parts = urlsplit(url)
        tls = parts.scheme.lower() == "amqps"
        port = parts.port or (5671 if tls else 5672)
        host = parts.hostname or "localhost"
    except ValueError as exc:
        raise BrokerError(f"bad broker URL: {exc}") from None
    vhost = "/"
    if parts.path and parts.path != "/":
        vhost = unquote(parts.path.split("/")[1])
    context = tls_context(settings) if tls else None
    username = unquote(parts.username) if parts.username is not None else "guest"
    password = unquote(parts.password) if parts.password is not None else "guest"
    return Endpoint(host, port, username, password, vhost, context)


def connect_error(settings: Settings, address: str, username: str, vhost: str, tls: bool,
                  detail: str, refused: bool) -> BrokerError:
    """The error a failed connect leaves as: a refused user (`refused`) or a TLS mismatch say
    so, with the setting to change; anything else (a port that refuses, a broker down) is a
    plain BrokerError the caller may retry. detail: "ExceptionName: text"."""
    if refused:
        return BrokerCredentialsError(
            f"RabbitMQ at {address} refused user {username!r} on virtual "
            f"host {vhost!r} ({detail}): check the user, password and virtual "
            "host in broker_url (DROPLET_BROKER_URL)")
    explained = explain_failure(detail, broker_peer(settings, address, tls=tls))
    if explained is not None:
        return BrokerTlsError(f"{explained} [{detail}]")
    return BrokerError(f"RabbitMQ at {address} cannot be reached ({detail}): is it running "
                       "there? check broker_url (DROPLET_BROKER_URL)")


def first_node(name: str, nodes: NodeOrder, attempt: Callable[[int], tuple[T, str]]) -> T:
    """The connection `attempt(index)` makes to the first node of the rotation that takes
    one; attempt returns (connection, "host:port") or raises the BrokerError it leaves as."""
    failures: list[BrokerError] = []
    for index in nodes.attempt_order():
        try:
            conn, address = attempt(index)
        except BrokerError as exc:
            failures.append(exc)
            nodes.failed(index)
            continue
        nodes.connected(index)
        if len(nodes.urls) > 1:
            log.info("%s connected to the broker at %s", name, address)
        return conn
    # A refused user or a TLS mismatch says what to change; else every node's failure.
    for failure in failures:
        if type(failure) is not BrokerError:
            raise failure
    if len(failures) == 1:
        raise failures[0]
    raise BrokerError("no RabbitMQ node answered: " + "; ".join(str(f) for f in failures))
