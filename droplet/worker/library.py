"""The user library: the first argument of every function (`lib`).

It gives a running function the store (`get`, `put`, `put_many`, `delete`), its worker's id
(`getid`, also the address for messages), and, through the worker, messages to other running
functions. Bad use raises a DropletError inside the calling function, which the worker turns
into that call's EXECUTION_ERROR; it never reaches the worker itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from droplet.errors import InvalidArgumentError, error_from_info
from droplet.proto import pb
from droplet.store import serializer
from droplet.store.values import ValueStore
from droplet.worker.cache import ValueCache


def _check_key(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidArgumentError(f"store keys are non-empty strings, not {key!r}")
    return key


class UserLibrary:
    def __init__(self, worker_id: str, values: ValueStore, cache: ValueCache | None = None) -> None:
        self._worker_id = worker_id
        self._values = values
        self._cache = cache

    def getid(self) -> str:
        return self._worker_id

    def get(self, key: str | Iterable[str]) -> Any:
        """The value under key (None when missing), or a {key: value} dict for several keys."""
        if isinstance(key, str):
            value = self._read([_check_key(key)]).get(key)
            return None if value is None else _load(value)
        keys = [_check_key(k) for k in key]
        found = self._read(keys)
        return {k: _load(found[k]) if k in found else None for k in keys}

    def get_raw(self, key: str) -> bytes | None:
        """The stored bytes of a value (a pickle), without loading them."""
        value = self._read([_check_key(key)]).get(key)
        return None if value is None else value.body

    def put(self, key: str, value: Any) -> None:
        self.put_many({key: value})

    def put_many(self, values: Mapping[str, Any]) -> None:
        """Writes several keys in one etcd transaction: readers see all or none."""
        dumped = {_check_key(k): serializer.dump(v) for k, v in values.items()}
        revision = self._values.put_values(dumped)
        if self._cache is not None:
            for key, value in dumped.items():
                self._cache.store(key, value, revision)

    def delete(self, key: str) -> None:
        self._values.delete(_check_key(key))
        if self._cache is not None:
            self._cache.drop(key)

    def stored_result(self, key: str) -> pb.Value | None:
        """A call's stored outcome, read past the cache (results are not cached)."""
        return self._values.get_value(key)

    def _read(self, keys: list[str]) -> dict[str, pb.Value]:
        if self._cache is not None:
            return self._cache.get_values(keys)
        return self._values.get_values(keys)


def _load(value: pb.Value) -> Any:
    """A stored value; a stored call error is raised, as the client's get_object does."""
    loaded = serializer.load(value)
    if isinstance(loaded, pb.ErrorInfo):
        raise error_from_info(loaded)
    return loaded
