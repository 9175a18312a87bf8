"""Who may act through the dashboard, and what exactly they confirmed.

The dashboard shows the fleet to anyone who can reach it, but changing anything (requeueing or
purging dead letters) takes the `dashboard_token` of the configuration, typed into the form.
Without a configured token the dashboard is read-only and says so. Because the token travels in
the form body, never in a cookie, another site cannot make a visitor's browser act (no CSRF).

An action is confirmed in a second step. The confirmation page does not echo the token: it
carries a ticket, an HMAC under the token of exactly what was asked (action, target) and until
when, so confirming cannot be replayed for something else or much later; and a ticket acts
once, so a double click, a reload that resubmits or the back button cannot purge or requeue
again letters that died since and that the confirmation never showed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass

TICKET_TTL_S = 300
_TICKET = re.compile(r"^[0-9a-f]{64}$")


def plain_number(text: str) -> bool:
    """Whether text is a whole number int() takes: ASCII digits only, since str.isdigit()
    also says yes to "²" or "①" (which int() refuses), and not so long that int() refuses
    it or it means nothing here (more than 4300 digits is a ValueError, not a number)."""
    return text.isascii() and text.isdigit() and len(text) <= 12


class Refused(Exception):
    """An action that is not allowed (HTTP 403), with the reason to show."""


class BadInput(Exception):
    """A form or query that is malformed (HTTP 400), with what is wrong."""


@dataclass(frozen=True)
class Ticket:
    action: str
    target: str
    expires: int
    mac: str


class Guard:
    def __init__(self, token: str | None) -> None:
        self._token = token or ""
        self._used: dict[str, int] = {}  # redeemed tickets' MACs -> when they expire

    @property
    def read_only(self) -> bool:
        return not self._token

    def check_token(self, given: str) -> None:
        if self.read_only:
            raise Refused("refused: this dashboard is read-only (no dashboard_token is "
                          "configured; set DROPLET_DASHBOARD_TOKEN to allow actions)")
        if not given:
            raise Refused("refused: this action needs the dashboard token")
        if not hmac.compare_digest(given.encode(), self._token.encode()):
            raise Refused("refused: wrong dashboard token")

    def ticket(self, action: str, target: str, now: float | None = None) -> Ticket:
        expires = int((time.time() if now is None else now) + TICKET_TTL_S)
        return Ticket(action, target, expires, self._mac(action, target, expires))

    def redeem(self, action: str, target: str, expires: str, mac: str,
               now: float | None = None) -> None:
        """Raises unless (action, target) is what a ticket issued here, still valid, says."""
        if self.read_only:
            self.check_token("")
        if not plain_number(expires) or not _TICKET.match(mac):
            raise BadInput("bad confirmation: expected the form of the confirmation page")
        if not hmac.compare_digest(mac, self._mac(action, target, int(expires))):
            raise Refused("refused: this confirmation is not for this action")
        now = time.time() if now is None else now
        if int(expires) < now:
            raise Refused("refused: this confirmation has expired; ask again")
        self._used = {used: until for used, until in self._used.items() if until >= now}
        if mac in self._used:
            raise Refused("refused: this confirmation was used already; ask again")
        self._used[mac] = int(expires)

    def _mac(self, action: str, target: str, expires: int) -> str:
        message = f"{action}\n{target}\n{expires}".encode()
        return hmac.new(self._token.encode(), message, hashlib.sha256).hexdigest()
