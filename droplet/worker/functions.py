"""Registered functions as a worker holds them: loaded once, verified, reused across calls.

A function registered as a class is built once per worker with its `init_args` (expensive
set-up lives in `__init__`), and each call runs its `run(lib, *args)`. Re-registering a name
invalidates the cached copy through the functions watch.
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from droplet.errors import DropletError, ExecutionError, user_failure
from droplet.proto import pb
from droplet.store import serializer
from droplet.worker import own_signals


@dataclass(frozen=True)
class LoadedFunction:
    name: str
    run: Callable[..., Any]
    spec: pb.Function


class FunctionCache:
    def __init__(self, loader: Callable[[str], pb.Function | None]) -> None:
        self._loader = loader
        self._lock = threading.Lock()
        self._loaded: dict[str, LoadedFunction] = {}
        # Invalidations per name: a load that an invalidation overtook (the body was
        # re-registered while it was being read) is used once but not cached.
        self._invalidations: dict[str, int] = {}

    def get(self, name: str) -> LoadedFunction | None:
        """The function, or None when no such name is registered.

        Raises SignatureError for a body that fails verification and ExecutionError for one
        that cannot be unpickled or whose class cannot be constructed.
        """
        loaded = self._loaded.get(name)
        if loaded is not None:
            return loaded
        with self._lock:
            seen = self._invalidations.get(name, 0)
        spec = self._loader(name)
        if spec is None:
            return None
        loaded = LoadedFunction(name, _build(spec), spec)
        with self._lock:
            if self._invalidations.get(name, 0) == seen:
                self._loaded[name] = loaded
        return loaded

    def invalidate(self, name: str) -> None:
        with self._lock:
            self._loaded.pop(name, None)
            self._invalidations[name] = self._invalidations.get(name, 0) + 1

    def __contains__(self, name: str) -> bool:
        return name in self._loaded


def _build(spec: pb.Function) -> Callable[..., Any]:
    """The callable a registration stands for. Its loading runs user code (a class's
    __init__, what unpickling imports): a signal handler of the worker's it replaced is put
    back, as after a call (own_signals.py)."""
    if not own_signals.on_main_thread():
        return _load(spec)
    handlers = own_signals.current()
    try:
        return _load(spec)
    finally:
        own_signals.put_back(handlers)


def _load(spec: pb.Function) -> Callable[..., Any]:
    try:
        obj = pickle.loads(spec.body)
    except BaseException as exc:  # SystemExit from a hostile body: the calls fail, not the worker
        if not user_failure(exc):
            raise
        raise ExecutionError(f"function {spec.name!r} cannot be loaded: {exc}") from None
    if not spec.is_class:
        if not callable(obj):
            raise ExecutionError(f"function {spec.name!r} is not callable")
        return obj  # type: ignore[no-any-return]
    try:
        args = [serializer.load(v) for v in spec.init_args.values]
        instance = obj(*args)
    except BaseException as exc:  # sys.exit() in __init__ too
        if not user_failure(exc):
            raise
        raise ExecutionError(f"class {spec.name!r} failed to initialise: {exc!r}") from None
    run = getattr(instance, "run", None)
    if not callable(run):
        raise DropletError(f"class {spec.name!r} has no run(self, lib, ...) method")
    return run  # type: ignore[no-any-return]
