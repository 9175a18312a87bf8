"""The one serializer of values: arguments, results, stored objects, trigger payloads.

Builtin scalars and containers of them take the C pickler (fast, and loadable anywhere);
everything else goes through cloudpickle, which carries classes and functions defined in a
client's `__main__` by value. References travel as their key so the scheduler can read them
without unpickling anything.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

import cloudpickle

from droplet.errors import DropletError, InvalidArgumentError, user_failure
from droplet.proto import pb

_PROTOCOL = 5
_BUILTIN_SCALARS = (int, float, str, bytes, bool, type(None), complex)
_REFERENCES = (pb.REFERENCE, pb.RAW_REFERENCE)


@dataclass(frozen=True)
class DropletReference:
    """An argument the worker replaces with the value stored under `key` before the call
    (with `deserialize=False`, with the stored pickle bytes, left for the function to load)."""

    key: str
    deserialize: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise InvalidArgumentError("a DropletReference needs a non-empty string key")


def _is_plain(obj: Any, depth: int = 0) -> bool:
    """True for values the C pickler can encode so that any process can load them."""
    kind = type(obj)
    if kind in _BUILTIN_SCALARS:
        return True
    if depth > 3:
        return False
    if kind in (list, tuple, set, frozenset):
        return len(obj) <= 64 and all(_is_plain(item, depth + 1) for item in obj)
    if kind is dict:
        return len(obj) <= 64 and all(
            _is_plain(k, depth + 1) and _is_plain(v, depth + 1) for k, v in obj.items()
        )
    return False


def dump(obj: Any, into: pb.Value | None = None) -> pb.Value:
    """Serializes obj into a Value; raises InvalidArgumentError when it cannot be pickled."""
    value = pb.Value() if into is None else into
    if isinstance(obj, DropletReference):
        value.type = pb.REFERENCE if obj.deserialize else pb.RAW_REFERENCE
        value.body = obj.key.encode()
        return value
    if _is_plain(obj):
        value.type = pb.PICKLE
        value.body = pickle.dumps(obj, _PROTOCOL)
        return value
    try:
        value.body = cloudpickle.dumps(obj, _PROTOCOL)
    except BaseException as exc:  # cloudpickle raises many kinds: all mean "cannot send this"
        if not user_failure(exc):  # (a __reduce__ raising SystemExit is the value's fault)
            raise
        detail = exc if isinstance(exc, Exception) else f"{type(exc).__name__}: {exc}"
        raise InvalidArgumentError(
            f"cannot serialize {type(obj).__name__} value: {detail}"
        ) from None
    value.type = pb.CLOUDPICKLE
    return value


def load(value: pb.Value) -> Any:
    """Deserializes a Value; an ERROR value comes back as its pb.ErrorInfo."""
    if value.type in _REFERENCES:
        return DropletReference(value.body.decode(), value.type == pb.REFERENCE)
    if value.type == pb.ERROR:
        info = pb.ErrorInfo()
        info.ParseFromString(value.body)
        return info
    try:
        return pickle.loads(value.body)
    except Exception:
        raise  # what the value's own loading raised: its callers say where it came from
    except BaseException as exc:  # SystemExit from a __setstate__ must not end the process
        if not user_failure(exc):
            raise
        raise DropletError(f"loading a value raised {type(exc).__name__}: {exc}",
                           code=pb.EXECUTION_ERROR) from None


def reference_keys(values: Any) -> list[str]:
    """Keys of the references among serialized arguments, without unpickling anything."""
    return [v.body.decode() for v in values if v.type in _REFERENCES]


def to_bytes(value: pb.Value) -> bytes:
    return value.SerializeToString()


def from_bytes(data: bytes) -> pb.Value:
    value = pb.Value()
    value.ParseFromString(data)
    return value
