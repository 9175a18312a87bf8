"""One gRPC call's answer as its HTTP/2 frames arrive (store/http2.py): the body, then the
status its trailers carry, named as grpcio names it."""

from __future__ import annotations

import urllib.parse

import grpc

STATUS_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


class Answer:
    """What has come of one call: its body, then its status (from its trailers)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.status: str | None = None
        self.details = ""
        self._http_ok = False

    def headers(self, headers: list[tuple[str, str]], ends: bool) -> None:
        found = dict(headers)
        if ":status" in found:
            self._http_ok = found[":status"] == "200"
        if "grpc-status" in found:
            code = int(found["grpc-status"]) if found["grpc-status"].isdigit() else 2
            self.status = STATUS_NAMES.get(code, "UNKNOWN")
            self.details = urllib.parse.unquote(found.get("grpc-message", ""))
        elif ends:
            self.fail("UNAVAILABLE" if not self._http_ok else "INTERNAL",
                      f"the answer ended without a gRPC status (HTTP {found.get(':status')})")

    def fail(self, status: str, details: str) -> None:
        self.status, self.details = status, details
