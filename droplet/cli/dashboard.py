"""`droplet dashboard`: serves the web dashboard (droplet/dashboard/) until Ctrl-C.

The server is uvicorn, the pages a Starlette app; both come with the `dashboard` extra, and a
missing one is said plainly instead of a traceback. The port is checked before anything starts,
so "address in use" reads as a sentence too.
"""

from __future__ import annotations

import errno
import socket

from droplet.errors import ConfigurationError
from droplet.settings import Settings, _is_loopback


def _check_port(host: str, port: int) -> None:
    if not host.strip():  # "" binds every interface, and counted as loopback (no warning)
        raise ConfigurationError("--host must name an address (127.0.0.1, the default, or "
                                 "0.0.0.0 for every interface), not an empty string")
    if not 1 <= port <= 65535:
        raise ConfigurationError(f"--port must be 1-65535, not {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigurationError(
                    f"{host}:{port} is in use: choose another --port") from None
            # Not the port's fault (a host that does not resolve or is not this machine's).
            raise ConfigurationError(
                f"{host}:{port} cannot be used ({exc}): give --host an address of this "
                "machine (127.0.0.1, or 0.0.0.0 for every interface)") from None


MIN_TOKEN_CHARS = 16


def _check_token(token: str | None) -> None:
    """A token that can be guessed is refused: nothing limits guesses (one POST each), so a
    short one fell to a few thousand requests from anyone who reaches the dashboard."""
    if token is not None and len(token.strip()) < MIN_TOKEN_CHARS:
        raise ConfigurationError(
            f"dashboard_token must be at least {MIN_TOKEN_CHARS} characters (not blank); make "
            "one with: python -c 'import secrets; print(secrets.token_urlsafe())'")


def run_dashboard(settings: Settings, host: str, port: int, interval_s: float) -> int:
    try:
        import uvicorn

        from droplet.dashboard.app import Dashboard
    except ImportError as exc:
        raise ConfigurationError(
            f"droplet dashboard needs {exc.name}: pip install 'droplet[dashboard]'") from None
    from droplet.broker_config.names import QueueNames
    from droplet.dashboard.dead_letters import DeadLetters
    from droplet.dashboard.guard import Guard
    from droplet.dashboard.sampler import Sampler
    from droplet.runtime import broker_factory, open_kv
    from droplet.signing import Signer

    if not 0.2 <= interval_s <= 60:
        raise ConfigurationError(f"--interval must be 0.2-60 seconds, not {interval_s:g}")
    _check_token(settings.dashboard_token)
    _check_port(host, port)
    # A short retry budget: the sampler would rather show etcd as down than stall for long.
    reading = settings.with_(store_retry_s=min(settings.store_retry_s, 1.0))
    sampler = Sampler(settings, lambda: open_kv(reading),
                      broker_factory(settings, "droplet-dashboard", confirms=False),
                      interval_s).start()
    dead_letters = DeadLetters(broker_factory(settings, "droplet-dashboard-actions"),
                               QueueNames.of(settings), Signer(settings.signing_key))
    dashboard = Dashboard(sampler, dead_letters, Guard(settings.dashboard_token),
                          loopback_only=_is_loopback(host))
    mode = "read-only (no dashboard_token)" if not settings.dashboard_token \
        else "actions need the dashboard token"
    shown = f"[{host}]" if ":" in host else host
    print(f"droplet dashboard on http://{shown}:{port}/ (namespace {settings.namespace}; "
          f"{mode}); Ctrl-C stops it", flush=True)
    if settings.dashboard_token and not _is_loopback(host):
        print("note: the token travels in plain HTTP; put a TLS proxy in front when this "
              "address is reachable from other machines", flush=True)
    server = uvicorn.Server(uvicorn.Config(dashboard.app, host=host, port=port,
                                           log_level="warning", access_log=False))
    try:
        server.run()
    finally:
        sampler.stop()
    return 0
