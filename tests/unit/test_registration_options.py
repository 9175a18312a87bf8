"""register()'s numeric options are checked: NaN, infinity, and numbers the worker or the
registration's fields cannot hold were sent, and failed every call later with errors naming
none of them ("timestamp out of range for platform time_t", "refused: cannot convert float
NaN to integer") or raised the protobuf library's TypeError/ValueError
(droplet/client/registration.py)."""

from __future__ import annotations

import pytest

from droplet.client.registration import function_spec
from droplet.errors import InvalidArgumentError


def _spec(time_limit_s: object = 0.0, retries: object = 0,
          retry_backoff_s: object = 1.0) -> object:
    return function_spec(lambda lib: 1, "f", (), time_limit_s, retries,  # type: ignore[arg-type]
                         (Exception,), retry_backoff_s, {}, None)  # type: ignore[arg-type]


@pytest.mark.parametrize("options, named", [
    ({"time_limit_s": float("nan")}, "time_limit_s"),
    ({"time_limit_s": float("inf")}, "time_limit_s"),
    ({"time_limit_s": 1e12}, "time_limit_s"),
    ({"time_limit_s": -1}, "time_limit_s"),
    ({"retry_backoff_s": float("nan")}, "retry_backoff_s"),
    ({"retry_backoff_s": float("inf")}, "retry_backoff_s"),
    ({"retry_backoff_s": 0}, "retry_backoff_s"),
    ({"retries": 2.5}, "retries"),
    ({"retries": 10**30}, "retries"),
    ({"retries": -1}, "retries"),
    ({"retries": True}, "retries"),
])
def test_an_option_no_worker_can_use_is_refused_by_name(options: dict[str, object],
                                                         named: str) -> None:
    with pytest.raises(InvalidArgumentError, match=named):
        _spec(**options)


def test_ordinary_options_pass() -> None:
    _spec(time_limit_s=30, retries=3, retry_backoff_s=0.5)
    _spec(time_limit_s=0.0, retries=0, retry_backoff_s=1e-3)
