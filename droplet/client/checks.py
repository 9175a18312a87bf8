"""What the client refuses before sending: names and keys outside the safe alphabet, and
arguments too large for one message."""

from __future__ import annotations

from droplet.broker_config.names import check_name
from droplet.errors import InvalidArgumentError, ValueTooLargeError
from droplet.proto.envelope import MESSAGE_ROOM_BYTES

_PASSED: set[str] = set()  # names checked already (a map checks one name per call)
_PASSED_MAX = 4096


def checked_name(kind: str, name: object) -> str:
    """Names become queue names and etcd keys: InvalidArgumentError unless safe."""
    if type(name) is str and name in _PASSED:
        return name
    try:
        checked = check_name(kind, name)  # type: ignore[arg-type]
    except ValueError as exc:
        raise InvalidArgumentError(str(exc)) from None
    if len(_PASSED) >= _PASSED_MAX:
        _PASSED.clear()
    _PASSED.add(checked)
    return checked


def checked_key(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidArgumentError(f"keys are non-empty strings, not {key!r}")
    return key


def checked_prefix(prefix: object) -> str:
    """A name prefix (client.list): any string, or None for every name."""
    if prefix is not None and not isinstance(prefix, str):
        raise InvalidArgumentError(f"prefix is a string or None, not {prefix!r}")
    return prefix or ""


def checked_size(size: int, limit: int, what: str) -> None:
    """ValueTooLargeError when `what` (size bytes) and the rest of its message are over
    limit (max_message_bytes)."""
    if size + MESSAGE_ROOM_BYTES > limit:
        raise ValueTooLargeError(
            f"{what} take {size} bytes, over max_message_bytes ({limit}) less "
            f"{MESSAGE_ROOM_BYTES} bytes for the rest of the message: store large "
            "values with put_object() and pass a DropletReference to them instead"
        )
