"""The client's side of resource tags, batching functions and colocation: checking what a
registration, a call or a DAG asks for before anything is sent.

Calls that need tags, or whose function batches, are placed by a scheduler (client/routing.py
sends them to the call queue) on the own queue of a worker that has the tags, idle first
(scheduler/tagged.py); a call made by name, whose needs the client does not know, is sent back
to the schedulers by the worker that takes it if that worker lacks them (worker/tags.py).
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from droplet import resources
from droplet.client.checks import checked_name
from droplet.errors import InvalidArgumentError
from droplet.proto import pb


def checked_needs(needs: Mapping[str, float] | None) -> dict[str, float]:
    """A call's or function's resource needs, checked (names, numbers >= 0)."""
    if needs is None:
        return {}  # most calls: nothing to check
    return {k: v for k, v in resources.checked(needs).items() if v > 0}


def registration_options(needs: Mapping[str, float] | None, batching: bool, batch_size: int,
                         batch_linger_ms: float) -> tuple[dict[str, float],
                                                          tuple[int, float] | None]:
    """(needs, (batch_size, linger in s) or None when the function does not batch)."""
    checked = checked_needs(needs)
    if not batching:
        return checked, None
    if (isinstance(batch_size, bool) or not isinstance(batch_size, int)
            or not 1 <= batch_size <= resources.MAX_BATCH_SIZE):
        raise InvalidArgumentError(
            f"batch_size is a whole number from 1 to {resources.MAX_BATCH_SIZE}")
    if not isinstance(batch_linger_ms, (int, float)) or not math.isfinite(batch_linger_ms) \
            or not 0 <= batch_linger_ms <= resources.MAX_LINGER_S * 1000:
        raise InvalidArgumentError(f"batch_linger_ms is a number of milliseconds, "
                                   f"0 .. {resources.MAX_LINGER_S * 1000:g}")
    # 0 is stored as a microsecond: a stored 0 would read as "the default".
    return checked, (batch_size, max(batch_linger_ms / 1000, 1e-6))


def dag_options(dag: pb.Dag, gpu_functions: Iterable[str], batching_functions: Iterable[str],
                colocated: Sequence[Any],
                needs: Mapping[str, Mapping[str, float]] | None) -> None:
    """Fills a DAG's resources (gpu_functions are {"gpu": 1}), batching and colocated lists."""
    for name, wanted in (needs or {}).items():
        amounts = dag.function_resources[checked_name("function", name)].amounts
        amounts.update(checked_needs(wanted))
    for name in _names(gpu_functions, "gpu_functions"):
        amounts = dag.function_resources[name].amounts
        amounts.update(resources.merged(amounts, resources.GPU_NEEDS))
    dag.batching_functions.extend(_names(batching_functions, "batching_functions"))
    if isinstance(colocated, str):
        raise InvalidArgumentError("colocated is a list of function names (or of such lists)")
    groups = colocated if colocated and not isinstance(colocated[0], str) else [colocated]
    for group in groups:
        names = _names(group, "colocated")
        if len(names) > 1:
            dag.colocated.add(functions=names)


def _names(names: Iterable[str], what: str) -> builtins.list[str]:
    if isinstance(names, str) or not isinstance(names, Iterable):
        raise InvalidArgumentError(f"{what} is a list of function names, not {names!r}")
    return [checked_name("function", n) for n in names]
