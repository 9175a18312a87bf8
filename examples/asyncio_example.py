"""The asyncio client against a running cluster: awaitable calls, a DAG, a streamed map, a
delayed call, a priority, and a cancel.

Run it against `droplet up`:  python examples/asyncio_example.py
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from dag_checks import created

import droplet
import droplet.aio


def slow(lib: Any, seconds: float) -> float:
    import time as t

    t.sleep(seconds)
    return seconds


async def main() -> None:
    async with await droplet.aio.connect() as client:
        incr = await client.register(lambda lib, x: x + 1, "incr")
        square = await client.register(lambda lib, x: x * x, "square")
        print("await incr(1)              ->", await incr(1))
        print("gather 100 calls           ->", sum(await asyncio.gather(*map(incr, range(100)))))
        total = 0
        async for result in client.map(square, range(1000)):
            total += result
        print("async for ... map(square)  ->", total)

        await client.delete_dag("incr-then-square")  # from an earlier run, if any
        created("incr-then-square", await client.register_dag(
            "incr-then-square", ["incr", "square"], [("incr", "square")]))
        print("await call_dag             ->", await client.call_dag("incr-then-square",
                                                                    {"incr": [2]}))

        started = time.monotonic()
        await incr.call_later(1.0, 0)
        print(f"call_later(1.0)            -> ran after {time.monotonic() - started:.2f}s")
        print("with_priority(9)           ->", await incr.with_priority(9)(9))

        sleeper = await client.register(slow, "slow")
        long_call = sleeper(60)
        await asyncio.sleep(0.5)
        print("cancel a running call      ->", await long_call.cancel())
        try:
            await long_call
        except droplet.CancelledError as exc:
            print("await the cancelled call   ->", type(exc).__name__, exc.code)
        await client.delete_dag("incr-then-square")


if __name__ == "__main__":
    asyncio.run(main())
