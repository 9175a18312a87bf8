"""Attack: registering a function whose closure holds a few MB (a model, a lookup table).

The scheduler stored the function as one etcd record; etcd refused the 5 MB request
(RESOURCE_EXHAUSTED), the scheduler took that for etcd being away and put the registration
back in the admin queue, and took it again some 80 times a second, for ever. The client got
"no scheduler answered within 30s: is `droplet scheduler` running?", and so did every later
register and register_dag of every client of the fleet. Now the client refuses such a
function at once with ValueTooLargeError saying what to do, and a scheduler answers one sent
all the same with INVALID_REQUEST.
"""

from __future__ import annotations

import time

import pytest

import droplet
from droplet.client.registration import function_spec
from droplet.proto import pb


def test_a_function_too_large_to_store_is_refused_and_the_fleet_goes_on(
        client: droplet.DropletClient, unique: str) -> None:
    table = b"x" * (5 * 1024 * 1024)
    started = time.monotonic()
    with pytest.raises(droplet.ValueTooLargeError, match="put_object"):
        client.register(lambda lib: len(table), unique)
    assert time.monotonic() - started < 2

    # Sent anyway (an older client, a raw request): the scheduler refuses it.
    spec = function_spec(lambda lib: len(table), unique, (), 0.0, 0, (Exception,), 1.0, {},
                         None)
    started = time.monotonic()
    with pytest.raises(droplet.InvalidRequestError, match="one etcd record"):
        client.admin.checked(pb.Message(function=spec))
    assert time.monotonic() - started < 5

    small = client.register(lambda lib: 1, unique + "-small")  # the admin queue is not stuck
    assert small().get(timeout=20) == 1
