"""A DAG call as the client builds and sends it (shared by the threaded and asyncio clients)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from droplet.client.checks import checked_key, checked_name, checked_size
from droplet.client.dagspecs import add_continuations
from droplet.errors import InvalidArgumentError
from droplet.proto import envelope, pb
from droplet.store import serializer

if TYPE_CHECKING:
    from droplet.client.client import DropletClient


def build_dag_call(client: DropletClient, name: str, arg_map: Mapping[str, Sequence[Any]],
                   direct_response: bool, consistency: int, output_key: str | None,
                   client_id: str | None, continuation: Any = None) -> pb.DagCall:
    """The DagCall, checked; refuses what cannot be sent before anything is sent. A MULTI
    call's snapshot is taken by send_dag_call. `continuation`: see client/dagspecs.py."""
    if consistency not in (pb.NORMAL, pb.MULTI):
        raise InvalidArgumentError("consistency is droplet.NORMAL or droplet.MULTI")
    call = pb.DagCall(
        name=checked_name("DAG", name), consistency=consistency,  # type: ignore[arg-type]
        call_id=uuid.uuid4().hex, direct_response=direct_response,
    )
    if output_key is not None:
        call.output_key = checked_key(output_key)
    if client_id is not None:
        call.client_id = str(client_id)  # its floor is taken when it is sent
    if not isinstance(arg_map, Mapping):
        raise InvalidArgumentError("arg_map maps function names to argument lists")
    for function, args in arg_map.items():
        if isinstance(args, (str, bytes)) or not isinstance(args, Iterable):
            raise InvalidArgumentError(f"arguments of {function!r} must be a list")
        target = call.function_args[checked_name("function", function)]
        for arg in args:
            serializer.dump(arg, target.values.add())
    add_continuations(call, continuation)
    checked_size(call.ByteSize(), client.settings.max_message_bytes,
                 f"arguments of DAG {name!r}")
    return call


def send_dag_call(client: DropletClient, call: pb.DagCall) -> None:
    client.ensure_open()  # closed: refused before etcd is read (the snapshot, a session's floor)
    if call.consistency == pb.MULTI:
        # Everything written before the call, this client's own writes included.
        call.snapshot_revision = client.kv.revision()
    if call.client_id:  # (an etcd read at a session's first call: client/sessions.py)
        call.min_revision = client.sessions.floor(call.client_id,
                                                  call.snapshot_revision or None)
        if call.consistency == pb.MULTI and call.min_revision > call.snapshot_revision:
            # A MULTI call reads at its snapshot: never below its session's floor (raised
            # meanwhile by another call of the session; the store is past it by now).
            call.snapshot_revision = client.kv.revision()
    body = envelope.encode([pb.Message(dag_call=call)], client.signer)
    routed = client.dag_routes.trigger(call) if client.settings.dag_direct else None
    if routed is None:
        client.pump.send(client.names.calls, body, [call.call_id])
        return
    # Straight to the source's worker, one hop less; back to the schedulers when the
    # worker's queue is gone (client/dagroutes.py).
    worker, trigger = routed
    direct = envelope.encode([pb.Message(trigger=trigger)], client.signer)
    client.pump.send_direct(client.names.worker(worker), direct, [call.call_id],
                            client.names.calls, body)
