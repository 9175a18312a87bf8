"""What a client registers for a function: its checked, serialised definition.

The function (or class) is pickled by value with its options, so a worker needs none of the
client's code; whatever cannot work is refused here, before anything is sent.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from droplet.errors import InvalidArgumentError, qualified_names
from droplet.proto import pb
from droplet.store import serializer


def function_spec(function: Callable[..., Any] | type, name: str, init_args: Sequence[Any],
                  time_limit_s: float, retries: int,
                  retry_on: Sequence[type[BaseException]], retry_backoff_s: float,
                  needs: dict[str, float], batch: tuple[int, float] | None) -> pb.Function:
    """The definition of a function or class to register (see DropletClient.register);
    `needs` and `batch` as tagging.registration_options returns them."""
    is_class = inspect.isclass(function)
    if is_class and not callable(getattr(function, "run", None)):
        raise InvalidArgumentError(f"class {function.__name__} has no run(self, lib, ...)")
    if not is_class and not callable(function):
        raise InvalidArgumentError(f"{function!r} is neither a function nor a class")
    if time_limit_s < 0 or retries < 0 or retry_backoff_s <= 0:
        raise InvalidArgumentError("time_limit_s, retries and retry_backoff_s must be >= 0")
    if not all(inspect.isclass(c) and issubclass(c, BaseException) for c in retry_on):
        raise InvalidArgumentError("retry_on is a sequence of exception classes")
    body = serializer.dump(function)
    spec = pb.Function(
        name=name, body=body.body, is_class=is_class, time_limit_s=time_limit_s,
        max_retries=retries, retry_backoff_s=retry_backoff_s,
        retry_on=[qualified_names(c)[0] for c in retry_on],
    )
    for arg in init_args:
        serializer.dump(arg, spec.init_args.values.add())
    spec.resources.update(needs)
    if batch is not None:
        spec.batching, spec.batch_size, spec.batch_linger_s = True, batch[0], batch[1]
    return spec
