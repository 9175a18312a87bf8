"""What every answer of the dashboard tells the browser, so that another site cannot use it.

The dead-letter form takes the token and its buttons purge or requeue; framed invisibly by
another site over a decoy (clickjacking), it could have the operator type the token and
click them. Every answer therefore forbids framing (`frame-ancestors 'none'`, and
X-Frame-Options for older browsers), and its content security policy lets the page load
script, styles and data from the dashboard only: should a name ever slip through unescaped,
a browser still runs no script of it. Nothing the pages do needs more (one script file,
inline SVG, a few inline styles).
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
          "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
          "frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class BrowserHeaders:
    """ASGI middleware: adds HEADERS to every HTTP answer (pages, files, errors)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
