"""Speculative DAG functions, chains of DAG calls and dry runs against a running cluster (two
workers are enough).

Run it against `droplet up`:  python examples/speculative_chains.py
"""

from __future__ import annotations

import random
from typing import Any

from dag_checks import created

import droplet


def flaky(lib: Any, x: int) -> int | None:
    """A lookup that sometimes stalls and sometimes comes back empty (None)."""
    import time

    time.sleep(random.choice([0.0, 0.0, 2.0]))
    return None if random.random() < 0.3 else x * 10


def main() -> None:
    with droplet.connect() as client:
        client.register(flaky, "flaky")
        client.register(lambda lib, x: x + 1, "incr")
        client.register(lambda lib, x: x * x, "square")
        for name in ("speculative", "inc", "sq"):
            client.delete_dag(name)  # from an earlier run, if any

        # "flaky" runs as two copies at once; the first result that is not None wins.
        print("register speculative  ->",
              created("speculative", client.register_dag("speculative", [("flaky", [None])], [])))
        answers = []
        for i in range(5):
            try:
                answers.append(client.call_dag("speculative", {"flaky": [i]},
                                               direct_response=True, timeout=30))
            except droplet.ExecutionError:
                answers.append("every copy returned None")
        print("speculative calls     ->", answers)
        client.delete_dag("speculative")

        created("inc", client.register_dag("inc", ["incr"], []))
        created("sq", client.register_dag("sq", ["square"], []))
        print("inc, then sq          ->",
              client.call_dag("inc", {"incr": [1]}, continuation="sq").get(timeout=30))
        print("inc, sq, inc, sq      ->", client.call_dag(
            "inc", {"incr": [1]}, continuation=["sq", "inc", "sq"]).get(timeout=30))
        request = client.call_dag("inc", {"incr": [1]}, continuation="sq", dry_run=True)
        print("dry run               ->", {k: request[k] for k in ("dag", "arguments",
                                                                   "continuation")})
        print("list(prefix='in')     ->", client.list(prefix="in"))
        print("get_function('incr')  ->", client.get_function("incr")(41).get(timeout=30))
        client.delete_dag("inc")
        client.delete_dag("sq")


if __name__ == "__main__":
    main()
