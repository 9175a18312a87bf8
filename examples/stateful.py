"""State and messages: shared values, a consistent (MULTI) DAG, and two functions talking.

Run it against a cluster with at least two workers (`droplet up`; `make demo` runs it):
    python examples/stateful.py
"""

from __future__ import annotations

import time
from typing import Any

from dag_checks import created

import droplet


def deposit(lib: Any, account: str, amount: int) -> int:
    """Adds to a balance kept in the store; returns the new balance."""
    balance = (lib.get(account) or 0) + amount
    lib.put(account, balance)
    return balance


def transfer_out(lib: Any, source: str, target: str, amount: int) -> dict[str, int]:
    """First step of a MULTI transfer: both balances read from one snapshot."""
    balances = lib.get([source, target])
    lib.put(source, balances[source] - amount)
    return {"moved": amount}


def transfer_in(lib: Any, target: str, step: dict[str, int]) -> int:
    """Second step: sees the first step's write; both land together when the call ends."""
    balance = lib.get(target) + step["moved"]
    lib.put(target, balance)
    return balance


def listener(lib: Any, key: str, expected: int) -> list[Any]:
    """Publishes its address, then collects messages sent to it."""
    lib.put(key, lib.getid())
    received: list[Any] = []
    deadline = time.monotonic() + 20
    while len(received) < expected and time.monotonic() < deadline:
        received += [message for _sender, message in lib.recv(timeout=1.0)]
    return received


def talker(lib: Any, destination: str, words: list[str]) -> int:
    for word in words:
        lib.send(destination, word)
    return len(words)


def main() -> None:
    with droplet.connect() as client:
        client.register(deposit, "deposit")
        client.put_objects({"alice": 100, "bob": 20})
        print("deposit(alice, 5)      ->", client.call("deposit", "alice", 5).get(timeout=10))

        client.register(transfer_out, "transfer_out")
        client.register(transfer_in, "transfer_in")
        client.delete_dag("transfer")  # from an earlier run, if any
        created("transfer", client.register_dag("transfer", ["transfer_out", "transfer_in"],
                                                [("transfer_out", "transfer_in")]))
        new_bob = client.call_dag(
            "transfer",
            {"transfer_out": ["alice", "bob", 30], "transfer_in": ["bob"]},
            consistency=droplet.MULTI, direct_response=True, timeout=10,
        )
        print("MULTI transfer of 30   ->", new_bob, client.get_objects(["alice", "bob"]))
        client.delete_dag("transfer")

        client.register(listener, "listener")
        client.register(talker, "talker")
        client.delete_object("listener-address")
        listening = client.call("listener", "listener-address", 3)
        deadline = time.monotonic() + 20
        while (address := client.get_object("listener-address")) is None:
            if time.monotonic() > deadline:
                raise SystemExit("the listener did not start")
            time.sleep(0.05)
        client.call("talker", address, ["hello", "from", "droplet"]).get(timeout=10)
        print("messages received      ->", listening.get(timeout=30))


if __name__ == "__main__":
    main()
