"""HMAC signing of payloads that are, or may carry, code.

Function bodies and call arguments are cloudpickle: unpickling one runs code. With a fleet
secret configured, every envelope and every stored function body carries an HMAC-SHA256 tag,
and receivers refuse anything whose tag is missing or wrong *before* unpickling it.
Without a secret, payloads are framed the same way but untagged, and anything is accepted.
"""

from __future__ import annotations

import hashlib
import hmac

from droplet.errors import SignatureError

_UNSIGNED = b"\x01"
_SIGNED = b"\x02"
_TAG_BYTES = 32


class Signer:
    def __init__(self, key: str | bytes | None) -> None:
        self._key = key.encode() if isinstance(key, str) else key

    @property
    def enabled(self) -> bool:
        return bool(self._key)

    def seal(self, payload: bytes) -> bytes:
        """Frames a payload: one marker byte, then the tag (when signing), then the payload."""
        if not self._key:
            return _UNSIGNED + payload
        tag = hmac.new(self._key, payload, hashlib.sha256).digest()
        return _SIGNED + tag + payload

    def open(self, framed: bytes) -> bytes:
        """Returns the payload of a framed blob, refusing it when it fails verification."""
        marker = framed[:1]
        if marker == _UNSIGNED:
            if self._key:
                raise SignatureError("payload is not signed and this fleet requires signatures")
            return framed[1:]
        if marker == _SIGNED:
            payload = framed[1 + _TAG_BYTES :]
            if self._key:
                tag = hmac.new(self._key, payload, hashlib.sha256).digest()
                if not hmac.compare_digest(tag, framed[1 : 1 + _TAG_BYTES]):
                    raise SignatureError("payload signature does not verify")
            return payload
        raise SignatureError("payload has no Droplet frame")
