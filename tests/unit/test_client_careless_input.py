"""Careless input to the client gets an error that names it.

- get_objects("key") read the string as its letters and answered {"k": None, "e": None, ...};
  put_objects([("k", 1)]) raised AttributeError "'list' object has no attribute 'items'".
- get(timeout=10**400) raised OverflowError from math.isnan: such a number is as good as
  forever.
- pickling a DropletFuture (to hand it to another process) raised "cannot pickle
  '_thread.lock' object", a lock deep in the client; it now says what to pass instead.
"""

from __future__ import annotations

import math
import pickle
from types import SimpleNamespace
from typing import Any

import pytest

from droplet.client.client import DropletClient
from droplet.client.future import DropletFuture, checked_timeout
from droplet.errors import InvalidArgumentError


def _fake() -> Any:
    return SimpleNamespace(ensure_open=lambda: None)


def test_get_objects_refuses_one_key_given_as_a_string() -> None:
    with pytest.raises(InvalidArgumentError, match="get_object"):
        DropletClient.get_objects(_fake(), "abc")


def test_put_objects_refuses_what_is_not_a_mapping() -> None:
    with pytest.raises(InvalidArgumentError, match="mapping"):
        DropletClient.put_objects(_fake(), [("k", 1)])  # type: ignore[arg-type]


def test_a_timeout_past_any_float_waits_for_ever() -> None:
    assert checked_timeout(10**400) == math.inf
    for bad in ("5", float("nan"), True, None):
        with pytest.raises(InvalidArgumentError):
            checked_timeout(bad)


def test_a_future_refuses_pickling_naming_what_to_pass() -> None:
    future = DropletFuture("r1", _fake(), "c1")
    with pytest.raises(TypeError, match=r"call_id .*'c1'"):
        pickle.dumps(future)
