"""Opening a RabbitMQ connection: per-node parameters, TLS, and the walk over broker_url's nodes.

Apart from what is done on a connection (broker/rabbitmq.py) because connecting has its own
failure story: a refused user or a TLS mismatch must say which setting to change and is not
retried blindly, while a node that is down is simply skipped for the next one of the rotation
(broker/nodes.py). Every pika exception of an operation leaves as a `BrokerError` through
`converted`, after which the owning service reconnects (broker/session.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pika
import pika.exceptions as pex
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from droplet.broker.connecting import connect_error, first_node, tls_context
from droplet.broker.nodes import NodeOrder
from droplet.errors import BrokerError
from droplet.settings import Settings


def connection_parameters(settings: Settings, name: str, url: str | None = None
                          ) -> pika.URLParameters:
    """Parameters of one node's URL (the first of broker_url when url is not given)."""
    url = url or settings.broker_urls[0]
    try:
        params = pika.URLParameters(url)
    except Exception as exc:
        raise BrokerError(f"bad broker URL: {exc}") from None
    params.heartbeat = settings.broker_heartbeat_s
    params.blocked_connection_timeout = 60
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.client_properties = {"connection_name": name}
    if url.lower().startswith("amqps://"):  # pika takes AMQPS:// too
        params.ssl_options = pika.SSLOptions(tls_context(settings), params.host)
    return params


def _connect_error(settings: Settings, params: pika.URLParameters, exc: BaseException
                   ) -> BrokerError:
    """The error a failed connect leaves as (broker/connecting.py words it)."""
    refused = isinstance(exc, (pex.ProbableAuthenticationError, pex.ProbableAccessDeniedError))
    return connect_error(settings, f"{params.host}:{params.port}", params.credentials.username,
                         params.virtual_host, params.ssl_options is not None,
                         f"{type(exc).__name__}: {str(exc) or repr(exc)}", refused)


@contextmanager
def converted(action: str) -> Iterator[None]:
    """Turns a pika or socket failure inside into a BrokerError naming the action."""
    try:
        yield
    except (pex.AMQPError, OSError, AssertionError) as exc:
        detail = str(exc) or repr(exc)
        raise BrokerError(f"RabbitMQ {action} failed: {type(exc).__name__}: {detail}") from None


def connect_any(settings: Settings, name: str, nodes: NodeOrder) -> pika.BlockingConnection:
    """A connection to the first node of the rotation that takes one."""

    def attempt(index: int) -> tuple[pika.BlockingConnection, str]:
        params = connection_parameters(settings, name, nodes.urls[index])
        try:
            return pika.BlockingConnection(params), f"{params.host}:{params.port}"
        except (pex.AMQPError, OSError, AssertionError, AMQPConnectorException) as exc:
            # AMQPConnectorException: a node that takes the TCP connection and never answers
            # ends in AMQPConnectorStackTimeout, which is no AMQPError: it escaped raw, and the
            # next node was never tried.
            raise _connect_error(settings, params, exc) from None

    return first_node(name, nodes, attempt)
