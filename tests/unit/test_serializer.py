"""droplet.store.serializer: which pickler a value takes, and that every value loads back."""

from __future__ import annotations

import pickle
import threading
from typing import Any

import pytest

from droplet.errors import InvalidArgumentError
from droplet.proto import pb
from droplet.proto.replies import error_value
from droplet.store import serializer
from droplet.store.serializer import DropletReference


def roundtrip(obj: Any) -> tuple[pb.Value, Any]:
    """Dumps obj, sends it through bytes as the wire does, and loads it back."""
    value = serializer.dump(obj)
    again = serializer.from_bytes(serializer.to_bytes(value))
    return value, serializer.load(again)


@pytest.mark.parametrize(
    "obj",
    [
        0,
        -(2**80),
        3.5,
        float("inf"),
        1 + 2j,
        "",
        "héllo wörld",
        b"\x00\xff bytes",
        None,
        True,
        False,
        [1, "two", 3.0, None],
        (1, (2, (3,))),
        {"a": 1, "b": [1, 2], 3: (4, 5)},
        {1, 2, 3},
        frozenset({"x", "y"}),
        {"nested": {"list": [(1, b"z")]}},
    ],
    ids=repr,
)
def test_builtin_values_round_trip_with_the_plain_pickler(obj: Any) -> None:
    value, back = roundtrip(obj)

    assert value.type == pb.PICKLE
    assert back == obj
    assert type(back) is type(obj)


def test_plain_bodies_load_without_cloudpickle() -> None:
    value = serializer.dump({"k": [1, 2, (3, "x")]})

    assert pickle.loads(value.body) == {"k": [1, 2, (3, "x")]}


def test_a_large_container_falls_back_to_cloudpickle_and_loads_back() -> None:
    big = list(range(1000))
    value, back = roundtrip(big)

    assert value.type == pb.CLOUDPICKLE
    assert back == big


def test_deep_nesting_falls_back_to_cloudpickle_and_loads_back() -> None:
    deep: Any = [[[[[["bottom"]]]]]]
    value, back = roundtrip(deep)

    assert value.type == pb.CLOUDPICKLE
    assert back == deep


def test_a_lambda_goes_the_cloudpickle_way_and_loads_back_callable() -> None:
    offset = 7
    value, back = roundtrip(lambda x: x + offset)

    assert value.type == pb.CLOUDPICKLE
    assert callable(back)
    assert back(3) == 10


def test_an_instance_of_a_local_class_goes_the_cloudpickle_way() -> None:
    class Point:
        def __init__(self, x: int, y: int) -> None:
            self.x = x
            self.y = y

        def norm1(self) -> int:
            return abs(self.x) + abs(self.y)

    value, back = roundtrip(Point(3, -4))

    assert value.type == pb.CLOUDPICKLE
    assert (back.x, back.y) == (3, -4)
    assert back.norm1() == 7
    assert type(back).__name__ == "Point"


def test_a_list_holding_a_function_is_not_plain() -> None:
    value, back = roundtrip([1, len])

    assert value.type == pb.CLOUDPICKLE
    assert back == [1, len]


def test_dump_into_an_existing_value_fills_it_in_place() -> None:
    call = pb.FunctionCall()
    target = call.arguments.values.add()

    returned = serializer.dump("abc", target)

    assert returned is target
    assert serializer.load(call.arguments.values[0]) == "abc"


def test_reference_round_trips_as_its_key() -> None:
    value, back = roundtrip(DropletReference("some/key"))

    assert value.type == pb.REFERENCE
    assert value.body == b"some/key"
    assert back == DropletReference("some/key")


def test_reference_deserialize_flag_survives_the_wire() -> None:
    _, back = roundtrip(DropletReference("k", deserialize=False))

    assert back.deserialize is False


def test_reference_keys_lists_only_references_in_order() -> None:
    args = pb.Arguments()
    serializer.dump(1, args.values.add())
    serializer.dump(DropletReference("first"), args.values.add())
    serializer.dump("not-a-ref", args.values.add())
    serializer.dump(DropletReference("ünïcode"), args.values.add())

    assert serializer.reference_keys(args.values) == ["first", "ünïcode"]


def test_reference_keys_of_no_references_is_empty() -> None:
    values = [serializer.dump(x) for x in (1, "a", None)]

    assert serializer.reference_keys(values) == []


@pytest.mark.parametrize("key", ["", None, 3])
def test_reference_needs_a_non_empty_string_key(key: Any) -> None:
    with pytest.raises(InvalidArgumentError):
        DropletReference(key)


def test_an_error_value_loads_back_as_error_info() -> None:
    value = error_value(pb.EXECUTION_ERROR, "boom", "tb")

    back = serializer.load(serializer.from_bytes(serializer.to_bytes(value)))

    assert value.type == pb.ERROR
    assert isinstance(back, pb.ErrorInfo)
    assert back.code == pb.EXECUTION_ERROR
    assert back.message == "boom"
    assert back.traceback == "tb"


def test_an_unpicklable_value_raises_invalid_argument() -> None:
    with pytest.raises(InvalidArgumentError, match="lock"):
        serializer.dump(threading.Lock())


def test_an_unpicklable_value_inside_a_container_raises_invalid_argument() -> None:
    with pytest.raises(InvalidArgumentError):
        serializer.dump({"ok": 1, "bad": threading.Lock()})


def test_a_failed_dump_leaves_the_target_untouched() -> None:
    target = serializer.dump("before")

    with pytest.raises(InvalidArgumentError):
        serializer.dump(threading.Lock(), target)

    assert serializer.load(target) == "before"


def test_invalid_argument_error_is_a_value_error_with_the_request_code() -> None:
    with pytest.raises(ValueError) as caught:
        DropletReference("")

    assert isinstance(caught.value, InvalidArgumentError)
    assert caught.value.code == pb.INVALID_REQUEST
