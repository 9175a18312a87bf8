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

_MAX_RETRIES = 2**32 - 1  # what the registration's field holds
_MAX_SECONDS = 1e9  # (setitimer refuses 1e12 s: "timestamp out of range for platform time_t")


def _checked_options(time_limit_s: object, retries: object, retry_backoff_s: object) -> None:
    """Numbers a worker can use. NaN or infinity went through: a time limit of inf failed
    every call ("timestamp out of range"), a back-off of NaN or inf every retry ("cannot
    convert float NaN to integer", dead-lettered), as did any limit past what setitimer
    takes; retries of 2.5 or 10**30 raised the protobuf library's TypeError or ValueError."""
    for label, number, least in (("time_limit_s", time_limit_s, 0.0),
                                 ("retry_backoff_s", retry_backoff_s, 0.0)):
        if (isinstance(number, bool) or not isinstance(number, int | float)
                or not least <= number <= _MAX_SECONDS
                or (label == "retry_backoff_s" and number == 0)):
            raise InvalidArgumentError(
                f"{label} is a number of seconds up to {_MAX_SECONDS:g}, "
                f"{'> 0' if label == 'retry_backoff_s' else '>= 0 (0: no limit)'}, "
                f"not {number!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or not (
            0 <= retries <= _MAX_RETRIES):
        raise InvalidArgumentError(f"retries is a whole number from 0 to {_MAX_RETRIES}, "
                                   f"not {retries!r}")


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
    _checked_options(time_limit_s, retries, retry_backoff_s)
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
