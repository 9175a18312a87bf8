"""What register_dag and call_dag accept beyond names: speculative functions and chains.

* A DAG function given as `(name, invalid_results)` or `(name, invalid_results, copies)` is
  speculative (droplet/speculation.py): it runs as up to `copies` copies at once (default
  `speculative_copies`), and the first result not equal to any of `invalid_results` wins.
* `continuation=` of call_dag names the DAG calls to make next with each result: a DAG name,
  a `(dag_name, arg_map)` pair, or a list of those (a chain).
* `dry_run=True` of call_dag gives `describe(call)`: the request as it would be sent.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from droplet.client.checks import checked_name
from droplet.errors import InvalidArgumentError, ValueTooLargeError
from droplet.proto import pb
from droplet.speculation import MAX_DAG_BYTES
from droplet.store import serializer

FunctionEntry = str | tuple[str, Iterable[Any]] | tuple[str, Iterable[Any], int]
# What the message's field holds (uint32); the scheduler runs at most one copy per live worker.
MAX_COPIES = 2**32 - 1
ContinuationStep = str | tuple[str, Mapping[str, Sequence[Any]]]


def dag_functions(functions: Iterable[Any], default_copies: int
                  ) -> tuple[builtins.list[str], builtins.list[pb.Speculative]]:
    """The DAG's function names and its speculative functions, checked."""
    if isinstance(functions, (str, bytes)):
        raise InvalidArgumentError("functions is a list of names")
    names: builtins.list[str] = []
    specs: builtins.list[pb.Speculative] = []
    for entry in functions:
        if isinstance(entry, str):
            names.append(checked_name("function", entry))
            continue
        if not isinstance(entry, (tuple, builtins.list)) or len(entry) not in (2, 3):
            raise InvalidArgumentError(
                f"a DAG function is a name, (name, invalid_results) or (name, invalid_results, "
                f"copies), not {entry!r}")
        name = checked_name("function", entry[0])
        invalid = entry[1]
        if isinstance(invalid, (str, bytes)) or not isinstance(invalid, Iterable):
            raise InvalidArgumentError(f"invalid_results of {name!r} is a list of values")
        copies = entry[2] if len(entry) == 3 else default_copies
        if isinstance(copies, bool) or not isinstance(copies, int) or not (
                1 <= copies <= MAX_COPIES):
            raise InvalidArgumentError(
                f"copies of {name!r} is a whole number from 1 to {MAX_COPIES}, not {copies!r}")
        spec = pb.Speculative(function=name, copies=copies)
        for value in invalid:
            serializer.dump(value, spec.invalid_results.add())
        names.append(name)
        specs.append(spec)
    return names, specs


def checked_size(dag: pb.Dag) -> None:
    """Refuses a DAG a scheduler would refuse for its size (droplet/speculation.py)."""
    if dag.ByteSize() > MAX_DAG_BYTES:
        raise ValueTooLargeError(
            f"DAG {dag.name!r} takes {dag.ByteSize()} bytes, over {MAX_DAG_BYTES} (every "
            "message of its calls carries it): keep invalid_results to a few small values")


def add_continuations(call: pb.DagCall, continuation: Any) -> None:
    """Adds the chain of DAG calls that follows `call` (see the module docstring)."""
    if continuation is None:
        return
    if call.consistency == pb.MULTI:
        raise InvalidArgumentError("a MULTI DAG call cannot have a continuation")
    steps = [continuation] if _is_step(continuation) else continuation
    if isinstance(steps, (str, bytes, Mapping)) or not isinstance(steps, Iterable):
        raise InvalidArgumentError(_FORMS)
    for step in steps:
        if not _is_step(step):
            raise InvalidArgumentError(f"{_FORMS}; not {step!r}")
        name, arg_map = (step, {}) if isinstance(step, str) else step
        added = call.continuations.add(dag=checked_name("DAG", name))
        for function, args in arg_map.items():
            if isinstance(args, (str, bytes)) or not isinstance(args, Iterable):
                raise InvalidArgumentError(f"arguments of {function!r} must be a list")
            target = added.function_args[checked_name("function", function)]
            for arg in args:
                serializer.dump(arg, target.values.add())
    if not call.continuations:
        raise InvalidArgumentError("a continuation names at least one DAG")


_FORMS = ("a continuation is a DAG name, a (dag_name, arg_map) pair, or a list of those")


def _is_step(step: Any) -> bool:
    return isinstance(step, str) or (
        isinstance(step, tuple) and len(step) == 2 and isinstance(step[0], str)
        and isinstance(step[1], Mapping))


def describe(call: pb.DagCall, queue: str) -> dict[str, Any]:
    """A DagCall as plain Python values: what call_dag(..., dry_run=True) returns. `message`
    is the DagCall itself; a MULTI call's snapshot revision is taken only when it is sent."""

    def arguments(args: Mapping[str, pb.Arguments]) -> dict[str, builtins.list[Any]]:
        return {f: [_shown(v) for v in a.values] for f, a in sorted(args.items())}

    return {
        "queue": queue,
        "dag": call.name,
        "call_id": call.call_id,
        "arguments": arguments(call.function_args),
        "consistency": pb.ConsistencyMode.Name(call.consistency),
        "direct_response": call.direct_response,
        "output_key": call.output_key or None,
        "client_id": call.client_id or None,
        "continuation": [{"dag": c.dag, "arguments": arguments(c.function_args)}
                         for c in call.continuations],
        "size_bytes": call.ByteSize(),
        "message": call,
    }


def _shown(value: pb.Value) -> Any:
    if value.type in (pb.REFERENCE, pb.RAW_REFERENCE):
        return serializer.DropletReference(value.body.decode(), value.type == pb.REFERENCE)
    return serializer.load(value)
