"""The dashboard's web app: routes, what each page shows, and how bad requests are refused.

Pages are server-rendered (Starlette + Jinja2) from the sampler's latest snapshot; a few lines
of script fetch the same page with `fragment=1` every couple of seconds and swap the live part
in. Every query and form field is checked: anything unexpected is refused with 400 and a
sentence saying what is wrong, an action without the token with 403, and a failure inside the
dashboard with a plain 500 page (the details go to the log, never to the browser).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp

from droplet.dashboard import views
from droplet.dashboard.dead_letters import ACTIONS, ALL, ID_PATTERN, DeadLetters
from droplet.dashboard.guard import BadInput, Guard, Refused, plain_number
from droplet.dashboard.headers import BrowserHeaders
from droplet.dashboard.hosts import LoopbackOnly
from droplet.dashboard.sampler import Sampler
from droplet.errors import DropletError
from droplet.worker.recorder import OTHER_FUNCTIONS

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
PAGES = (("/", "Fleet"), ("/queues", "Queues"), ("/functions", "Functions & DAGs"),
         ("/calls", "Recent calls"), ("/errors", "Errors"), ("/plots", "Plots"),
         ("/dead-letters", "Dead letters"))
_NAME = re.compile(r"\A[A-Za-z0-9_.:-]{1,200}\Z")
_FIELD_CHARS = 500


class Dashboard:
    """The pages over one sampler; `app` is the ASGI application uvicorn serves."""

    def __init__(self, sampler: Sampler, dead_letters: DeadLetters, guard: Guard,
                 loopback_only: bool = False) -> None:
        """loopback_only: answer only requests addressed to localhost (hosts.py), for a
        dashboard listening on a loopback address."""
        self.sampler = sampler
        self.dead = dead_letters
        self.guard = guard
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.filters.update(views.FILTERS)
        pages: list[tuple[str, Callable[[Request], Response]]] = [
            ("/", self.fleet), ("/queues", self.queues), ("/functions", self.functions),
            ("/calls", self.calls), ("/errors", self.errors), ("/plots", self.plots),
            ("/dead-letters", self.dead_letters), ("/api/status", self.status),
        ]
        routes: list[Any] = [Route(path, endpoint) for path, endpoint in pages]
        routes += [
            Route("/dead-letters/action", self.ask, methods=["POST"]),
            Route("/dead-letters/confirm", self.confirm, methods=["POST"]),
            Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
        ]
        handlers: Mapping[Any, Any] = {
            BadInput: self._bad_input, Refused: self._refused,
            HTTPException: self._http_error, Exception: self._internal_error,
        }
        pages_app = BrowserHeaders(Starlette(routes=routes, exception_handlers=handlers))
        self.app: ASGIApp = LoopbackOnly(pages_app) if loopback_only else pages_app

    # -- pages -------------------------------------------------------------------------------

    def fleet(self, request: Request) -> Response:
        _allowed(request, ())
        return self._page(request, "fleet.html", "/", {})

    def queues(self, request: Request) -> Response:
        _allowed(request, ())
        return self._page(request, "queues.html", "/queues", views.queues(self.sampler))

    def functions(self, request: Request) -> Response:
        _allowed(request, ())
        return self._page(request, "functions.html", "/functions",
                          views.functions(self.sampler))

    def calls(self, request: Request) -> Response:
        _allowed(request, ("function", "status", "limit"))
        function = _name(request, "function")
        status = _choice(request, "status", "all", ("all", "ok", "failed"))
        limit = _integer(request, "limit", 100, 1, 1000)
        context = views.calls(self.sampler, function, status, limit)
        return self._page(request, "calls.html", "/calls", context)

    def errors(self, request: Request) -> Response:
        _allowed(request, ("function", "limit"))
        function = _name(request, "function")
        limit = _integer(request, "limit", 50, 1, 300)
        return self._page(request, "errors.html", "/errors",
                          views.errors(self.sampler, function, limit))

    def plots(self, request: Request) -> Response:
        _allowed(request, ("function", "minutes"))
        function = _name(request, "function")
        minutes = _integer(request, "minutes", 5, 1, 15)
        return self._page(request, "plots.html", "/plots",
                          views.plots(self.sampler, function, minutes))

    def dead_letters(self, request: Request) -> Response:
        _allowed(request, ())
        try:
            listing, problem = self.dead.listing(), ""
        except DropletError as exc:
            listing, problem = None, f"RabbitMQ is unavailable: {exc}"
        context = {"listing": listing, "problem": problem, "read_only": self.guard.read_only}
        return self._page(request, "dead_letters.html", "/dead-letters", context, refresh_s=5)

    def status(self, request: Request) -> Response:
        """The snapshot's gist as JSON, for scripts and health checks."""
        _allowed(request, ())
        return JSONResponse(views.status(self.sampler))

    # -- actions -----------------------------------------------------------------------------

    async def ask(self, request: Request) -> Response:
        """First step of an action: checks the token, then asks for confirmation."""
        form = await _form(request, ("token", "action", "target"))
        if self.guard.read_only:
            self.guard.check_token("")
        action, target = _action(form)
        self.guard.check_token(form.get("token", ""))
        try:
            listing = await run_in_threadpool(self.dead.listing, True)
        except DropletError as exc:
            raise HTTPException(503, f"RabbitMQ is unavailable: {exc}") from None
        affected = [d for d in listing.letters if target in (ALL, d.id)]
        ticket = self.guard.ticket(action, target)
        context = {"ticket": ticket, "affected": affected, "depth": listing.depth}
        return self._page(request, "confirm.html", "/dead-letters", context, live=False)

    async def confirm(self, request: Request) -> Response:
        """Second step: the ticket of the confirmation page, then the action itself."""
        form = await _form(request, ("action", "target", "expires", "ticket"))
        action, target = _action(form)
        self.guard.redeem(action, target, form.get("expires", ""), form.get("ticket", ""))
        try:
            outcome = await run_in_threadpool(self.dead.act, action, target)
        except DropletError as exc:
            raise HTTPException(503, f"RabbitMQ failed during the {action}: {exc}") from None
        log.info("dashboard: %s %s -> %d done, %s", action, target, outcome.done, outcome.left)
        return self._page(request, "done.html", "/dead-letters", {"outcome": outcome},
                          live=False)

    # -- rendering ---------------------------------------------------------------------------

    def _page(self, request: Request, template: str, path: str, context: dict[str, Any],
              *, live: bool = True, refresh_s: float | None = None, status: int = 200
              ) -> Response:
        fragment = live and request.query_params.get("fragment") == "1"
        everything = {
            "snapshot": self.sampler.snapshot, "now": time.time(), "pages": PAGES,
            "current": path, "content": template, "live": live,
            "refresh_s": refresh_s or max(1.0, self.sampler.interval_s),
            "read_only": self.guard.read_only, **context,
        }
        name = "live.html" if fragment else "page.html"
        return self.templates.TemplateResponse(request, name, everything, status_code=status)

    def _message(self, request: Request, status: int, title: str, text: str) -> Response:
        context = {"title": title, "text": text}
        try:
            return self._page(request, "message.html", "", context, live=False, status=status)
        except Exception:  # the page itself failed: plain text, still no traceback
            log.exception("rendering an error page failed")
            return HTMLResponse(f"{status} {title}", status_code=status)

    async def _bad_input(self, request: Request, exc: Exception) -> Response:
        return self._message(request, 400, "Bad request", str(exc))

    async def _refused(self, request: Request, exc: Exception) -> Response:
        return self._message(request, 403, "Refused", str(exc))

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return self._message(request, exc.status_code, _reason(exc.status_code), exc.detail)

    async def _internal_error(self, request: Request, exc: Exception) -> Response:
        log.error("dashboard error on %s", request.url.path, exc_info=exc)
        return self._message(request, 500, "Internal error",
                             "the dashboard failed to show this; its log says why")


# -- checking what came in ------------------------------------------------------------------------


def _allowed(request: Request, names: tuple[str, ...]) -> None:
    unknown = sorted(set(request.query_params) - set(names) - {"fragment"})
    if unknown:
        expected = ", ".join(names) if names else "none"
        raise BadInput(f"unknown query parameter(s) {', '.join(unknown)} (expected: {expected})")
    for name in request.query_params:
        if len(request.query_params.getlist(name)) > 1:
            raise BadInput(f"query parameter {name} is given more than once")
    if request.query_params.get("fragment", "1") != "1":
        raise BadInput("fragment must be 1")


def _name(request: Request, name: str) -> str:
    """A function name, or the name of what a worker counts together past its 500 functions
    (which its menus offer, too)."""
    value = request.query_params.get(name, "")
    if value and value != OTHER_FUNCTIONS and not _NAME.match(value):
        raise BadInput(f"{name} must be a function name (letters, digits and _ . : -), "
                       f"not {value[:80]!r}")
    return value


def _choice(request: Request, name: str, default: str, choices: tuple[str, ...]) -> str:
    value = request.query_params.get(name, default)
    if value not in choices:
        raise BadInput(f"{name} must be one of {', '.join(choices)}, not {value[:80]!r}")
    return value


def _integer(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not plain_number(raw) or not low <= int(raw) <= high:
        raise BadInput(f"{name} must be a whole number from {low} to {high}, not {raw[:80]!r}")
    return int(raw)


async def _form(request: Request, names: tuple[str, ...]) -> dict[str, str]:
    if request.headers.get("content-type", "").split(";")[0].strip() not in (
            "application/x-www-form-urlencoded", "multipart/form-data"):
        raise BadInput("expected a form (application/x-www-form-urlencoded)")
    try:
        form = await request.form(max_files=0, max_fields=len(names) + 1)
    except Exception as exc:  # a malformed body
        raise BadInput(f"the form cannot be read: {exc}") from None
    unknown = sorted(set(form.keys()) - set(names))
    if unknown:
        raise BadInput(f"unknown form field(s) {', '.join(unknown)}")
    fields: dict[str, str] = {}
    for name in form:
        values = form.getlist(name)
        if len(values) != 1 or not isinstance(values[0], str):
            raise BadInput(f"form field {name} must be given once, as text")
        if len(values[0]) > _FIELD_CHARS:
            raise BadInput(f"form field {name} is too long")
        fields[name] = values[0]
    return fields


def _action(form: dict[str, str]) -> tuple[str, str]:
    action, target = form.get("action", ""), form.get("target", "").strip()
    if action not in ACTIONS:
        raise BadInput(f"action must be requeue or purge, not {action[:80]!r}")
    if target != ALL and not ID_PATTERN.match(target):
        raise BadInput(f"target must be 'all' or a dead letter's id (12 hex digits, as "
                       f"listed), not {target[:80]!r}")
    return action, target


def _reason(status: int) -> str:
    return {404: "Not found", 405: "Method not allowed", 503: "Unavailable"}.get(status, "Error")
