"""HMAC signing of payloads that are, or may carry, code.

Function bodies, call arguments, stored values and results are pickles: unpickling one runs
code. With a fleet secret configured, each of them carries an HMAC-SHA256 tag, and receivers
refuse anything whose tag is missing or wrong *before* unpickling it.

A tag covers a context as well as the payload, so a signed payload is valid only where it was
meant to be: a stored value only under its own key, a function body only under its own name
and registration (see store/metadata.py), a broker envelope only as an envelope. Copying signed
bytes from one place to another makes them fail verification.

Without a secret, payloads are framed the same way but untagged, and anything is accepted.
"""

from __future__ import annotations

import hashlib
import hmac

from droplet.errors import SignatureError

_UNSIGNED = b"\x01"
_SIGNED = b"\x02"
_TAG_BYTES = 32
ENVELOPE = b"envelope"


def value_context(store_key: str) -> bytes:
    """The context of a stored value: its key below the namespace (values/k, results/k)."""
    return b"value\0" + store_key.encode()


def function_context(name: str, created: int, version: int) -> bytes:
    """The context of a function body: its name and the etcd (create revision, version) of the
    registration, so an older signed body restored under the same name is refused."""
    return f"function\0{name}\0{created}\0{version}".encode()


class Signer:
    def __init__(self, key: str | bytes | None) -> None:
        self._key = key.encode() if isinstance(key, str) else key
        # Keyed once: each tag copies it (the key's pads are not hashed again per message,
        # and a copy costs fewer calls than a new HMAC).
        self._keyed = hmac.new(self._key, digestmod=hashlib.sha256) if self._key else None

    @property
    def enabled(self) -> bool:
        return bool(self._key)

    def _tag(self, context: bytes, payload: bytes) -> bytes:
        assert self._keyed is not None
        mac = self._keyed.copy()
        mac.update(len(context).to_bytes(4, "big") + context)
        mac.update(payload)
        return mac.digest()

    def seal(self, payload: bytes, context: bytes = ENVELOPE) -> bytes:
        """Frames a payload: one marker byte, then the tag (when signing), then the payload."""
        if not self._key:
            return _UNSIGNED + payload
        return _SIGNED + self._tag(context, payload) + payload

    def open(self, framed: bytes, context: bytes = ENVELOPE) -> bytes:
        """Returns the payload of a framed blob, refusing it when it fails verification."""
        marker = framed[:1]
        if marker == _UNSIGNED:
            if self._key:
                raise SignatureError("payload is not signed and this fleet requires signatures")
            return framed[1:]
        if marker == _SIGNED:
            payload = framed[1 + _TAG_BYTES :]
            if self._key:
                expected = self._tag(context, payload)
                if not hmac.compare_digest(expected, framed[1 : 1 + _TAG_BYTES]):
                    raise SignatureError("payload signature does not verify here")
            return payload
        raise SignatureError("payload has no Droplet frame")

    @staticmethod
    def is_framed(data: bytes) -> bool:
        return data[:1] in (_UNSIGNED, _SIGNED)
