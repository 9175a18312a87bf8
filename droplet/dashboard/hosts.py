"""Which host a request may be addressed to: the dashboard's defence against DNS rebinding.

A dashboard listening on 127.0.0.1 is within reach of every web page its user opens: a page
can have its own name resolve to 127.0.0.1 (DNS rebinding), and the browser then counts the
dashboard as that page's origin and lets the page's script read every page of it (the fleet,
error messages, the workers' tracebacks). Such a request still names the page's host in its
Host header. So a dashboard listening on a loopback address answers only requests addressed
to a loopback host (localhost, 127.x.y.z, [::1]); a proxy on the same machine must send it
`Host: 127.0.0.1` (nginx's default). One that listens further (`--host 0.0.0.0` behind a
proxy) cannot know the names it is reached by, and answers any.
"""

from __future__ import annotations

import ipaddress

from starlette.types import ASGIApp, Receive, Scope, Send


def loopback_host(header: str) -> bool:
    """Whether a Host header (name or address, port or not) names this machine's loopback."""
    name = header.strip().lower()
    if name.startswith("["):  # [::1]:8375
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:  # 127.0.0.1:8375, localhost:8375
        name = name.partition(":")[0]
    if name in ("localhost", "localhost.") or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class LoopbackOnly:
    """ASGI middleware: refuses (400) an HTTP request whose Host is not a loopback host."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            hosts = [v.decode("latin-1") for k, v in scope["headers"] if k == b"host"]
            if len(hosts) != 1 or not loopback_host(hosts[0]):
                body = (b"this dashboard listens on a loopback address and answers requests "
                        b"addressed to localhost or 127.0.0.1 only (a proxy in front must send "
                        b"Host: 127.0.0.1)\n")
                await send({"type": "http.response.start", "status": 400, "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
