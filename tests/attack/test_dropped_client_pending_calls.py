"""Attack: a client dropped, unclosed, right after a burst of calls whose futures nobody
kept (fire and forget: `c = droplet.connect(); for x in xs: c.call("log", x)` in a helper).

Calls made back to back wait up to 1 ms in the client's batcher for company. Once a dropped
client is collected (32b3707), its batcher is closed and flushes what waits, through the
client's sender, which is weak: the client was gone, so the calls were dropped without a
word. README: a call once sent runs whatever becomes of its caller, a closed client too.
"""

from __future__ import annotations

import gc
import time

import droplet
from tests.conftest import Cluster


def test_calls_of_a_client_dropped_unclosed_all_run(module_cluster: Cluster,
                                                    unique: str) -> None:
    with droplet.connect(settings=module_cluster.settings) as client:
        client.register(lambda lib, x: x + 1, unique)
        assert client.call(unique, 0).get(timeout=20) == 1
        ids: list[str] = []
        for _ in range(5):
            dropped = droplet.connect(settings=module_cluster.settings)
            ids += [dropped.call(unique, i).response_id for i in range(20)]
            del dropped  # no future kept: collected here, its batcher still holding calls
        gc.collect()
        deadline = time.monotonic() + 30
        missing = ids
        while missing and time.monotonic() < deadline:
            missing = [i for i in missing if client.get_object(i) is None]
            time.sleep(0.2)
        assert not missing, f"{len(missing)} of {len(ids)} calls never ran"
