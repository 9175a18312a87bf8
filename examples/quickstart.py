"""Registers functions and a DAG on a running cluster and prints what comes back.

Run it against `droplet up` (make demo does both):  python examples/quickstart.py
"""

from __future__ import annotations

from typing import Any

from dag_checks import created

import droplet


def main() -> None:
    with droplet.connect() as client:
        incr = client.register(lambda lib, x: x + 1, "incr")
        square = client.register(lambda lib, x: x * x, "square")
        print("incr(1)               ->", incr(1).get(timeout=10))
        print("call('square', 7)     ->", client.call("square", 7).get(timeout=10))

        class Scale:
            def __init__(self, factor: int) -> None:
                self.factor = factor  # expensive set-up runs once per worker

            def run(self, lib: Any, x: Any) -> Any:
                return x * self.factor

        scale = client.register(Scale, "scale", init_args=(3,))
        print("Scale(3)('2')         ->", scale("2").get(timeout=10))

        client.put_object("answer", 41)
        print("incr(ref 'answer')    ->", incr(droplet.DropletReference("answer")).get(timeout=10))

        futures = [square(i) for i in range(10)]
        print("10 squares at once    ->", [f.get(timeout=10) for f in futures])

        def where(lib: Any) -> str:
            return lib.getid()

        print("ran on worker         ->", client.register(where, "where")().get(timeout=10))

        try:
            client.register(lambda lib: 1 / 0, "oops")().get(timeout=10)
        except droplet.ExecutionError as exc:
            print("oops() raised         ->", str(exc).splitlines()[0])

        client.delete_dag("pipeline")  # from an earlier run, if any
        result = created("pipeline", client.register_dag(
            "pipeline", ["incr", "square"], [("incr", "square")]))
        print("register_dag          ->", result)
        direct = client.call_dag("pipeline", {"incr": [1]}, direct_response=True, timeout=10)
        print("call_dag direct       ->", direct)
        print("call_dag future       ->", client.call_dag("pipeline", {"incr": [2]}).get(10))
        client.call_dag("pipeline", {"incr": [3]}, output_key="pipeline-out").get(timeout=10)
        print("call_dag output_key   ->", client.get_object("pipeline-out"))
        deleted = client.delete_dag("pipeline"), client.delete_dag("pipeline")
        print("delete_dag            ->", *deleted)
        print("functions             ->", client.list())


if __name__ == "__main__":
    main()
