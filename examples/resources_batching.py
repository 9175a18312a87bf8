"""Resource tags and batching functions on a running cluster with one tagged worker:

    droplet up --workers 1 --tagged-worker gpu=1,mem=16     # in one terminal
    python examples/resources_batching.py                    # in another

A "model" that needs a GPU worker answers many calls a batch at a time, alone and as the
last step of a DAG whose first step runs on the plain worker.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from dag_checks import created

import droplet


def infer(lib: Any, batch: list[tuple[float]]) -> list[tuple[float, int]]:
    """A batching function: a list of argument tuples in, one result per tuple out. A real one
    would run a model on the whole batch at once; this one says how big the batch was."""
    time.sleep(0.02)  # the fixed cost a batch pays once, like a model's forward pass
    return [(round(x * 0.5, 2), len(batch)) for (x,) in batch]


def prep(lib: Any, x: float) -> float:
    return x + 1


def main() -> None:
    with droplet.connect() as client:
        model = client.register(infer, "rb-infer", resources={"gpu": 1}, batching=True,
                                batch_size=32, batch_linger_ms=10)
        where = client.register(lambda lib: lib.getid(), "rb-where", resources={"gpu": 1})
        try:
            print("gpu worker            ->", where().get(timeout=10))
        except droplet.NoResourcesError as exc:
            print(f"no worker has gpu=1 ({exc}); start one: "
                  "droplet up --workers 1 --tagged-worker gpu=1,mem=16")
            raise SystemExit(1) from None
        results = [f.get(timeout=30) for f in [model(float(i)) for i in range(200)]]
        sizes = Counter(size for _, size in results)
        print("200 calls, results    ->", [r for r, _ in results[:5]], "...")
        print("calls by batch size   ->", dict(sorted(sizes.items())))

        tpu = client.register(lambda lib: 0, "rb-tpu", resources={"tpu": 1})
        try:
            tpu().get(timeout=10)
        except droplet.NoResourcesError as exc:
            print("needs tpu=1           -> NO_RESOURCES:", exc)

        client.register(prep, "rb-prep")
        client.register(infer, "rb-step")  # batching in the DAG below, which says so
        client.delete_dag("rb-dag")  # left by an earlier run, if any
        dag = created("rb-dag", client.register_dag(
            "rb-dag", ["rb-prep", "rb-step"], [("rb-prep", "rb-step")],
            gpu_functions=["rb-step"], batching_functions=["rb-step"],
            colocated=["rb-prep", "rb-step"]))
        print("register_dag          ->", dag)
        futures = [client.call_dag("rb-dag", {"rb-prep": [float(i)]}) for i in range(50)]
        steps = [f.get(timeout=30) for f in futures]
        print("DAG results           ->", [r for r, _ in steps[:5]], "...")
        print("DAG steps by batch size ->", dict(sorted(Counter(s for _, s in steps).items())))
        client.delete_dag("rb-dag")


if __name__ == "__main__":
    main()
