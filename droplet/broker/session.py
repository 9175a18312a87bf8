"""Run a consume loop on a broker connection, reconnecting with back-off when it breaks."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from droplet.broker.interface import BrokerConnection, ConnectionFactory
from droplet.errors import BrokerError, CredentialsError, QueueArgumentsError, TlsError

log = logging.getLogger(__name__)

_FIRST_DELAY_S = 0.2
_MAX_DELAY_S = 5.0
# A session that ends sooner than this after connecting keeps backing off (a crash loop);
# one that ran longer starts the back-off afresh.
_HEALTHY_S = 30.0


def run_with_reconnect(
    name: str,
    connect: ConnectionFactory,
    session: Callable[[BrokerConnection], None],
    stop: threading.Event,
) -> None:
    """Calls session(conn) until stop is set; a BrokerError opens a new connection.

    Whatever the session had not acked is requeued by the broker when the old connection
    goes, so nothing is lost across a reconnect; the session re-declares and re-consumes.
    """
    delay = _FIRST_DELAY_S
    while not stop.is_set():
        conn: BrokerConnection | None = None
        started = time.monotonic()
        try:
            conn = connect()
            if delay > _FIRST_DELAY_S:
                log.info("%s: reconnected to the broker", name)
            session(conn)
        except (TlsError, CredentialsError) as exc:
            # Waiting alone does not fix these: say what to change, and keep trying (the
            # server's certificate or the user may be fixed meanwhile).
            log.error("%s: %s; retrying in %.1fs", name, exc, delay)
        except BrokerError as exc:
            log.warning("%s: broker connection lost (%s); retrying in %.1fs", name, exc, delay)
        except QueueArgumentsError as exc:
            # Waits, consuming nothing, until an operator runs `droplet migrate-queues`.
            log.error("%s: %s; retrying in %.1fs", name, exc, delay)
        except Exception:
            # A bug must not silently stop a consume loop: log it, start a fresh connection
            # (the broker requeues whatever was in hand).
            log.exception("%s: unexpected failure; reconnecting in %.1fs", name, delay)
        finally:
            if conn is not None:
                conn.close()
        if time.monotonic() - started > _HEALTHY_S:
            delay = _FIRST_DELAY_S  # it ran well for a while: this is a new failure
        if stop.wait(delay):
            break
        delay = min(delay * 2, _MAX_DELAY_S)
