"""Resource tags: what a worker has (`droplet worker --resources gpu=1,mem=16`) and what a
function, a call or a DAG function needs.

Tags are names with numbers. A worker satisfies a need when it has every tag named, each with a
value at least the one needed (`gpu=1` satisfies `{"gpu": 1}`; `mem=16` satisfies
`{"mem": 8}`, not `{"mem": 32}`). Needs from several places (the function's registration, the
call, the DAG) combine by taking the largest value of each tag. Nothing here is consumed or
counted down: a tag says what a worker is, not what is free on it (a worker runs one call at a
time anyway).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

from droplet.errors import InvalidArgumentError
from droplet.proto import pb

Needs = dict[str, float]

_TAG = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")
GPU_NEEDS: Mapping[str, float] = {"gpu": 1.0}

# Batching functions (worker/batching.py): most calls in one invocation, and how long a worker
# waits for more to join, unless the registration says otherwise. Here since the client and
# the worker both read them.
DEFAULT_BATCH_SIZE = 32
DEFAULT_LINGER_S = 0.005
MAX_LINGER_S = 10.0
MAX_BATCH_SIZE = 4096
# Tags travel in every tagged call and in the worker's status record (rewritten every few
# tenths of a second): a few describe a worker; thousands would make each record too large
# for one etcd request, and the worker could not even register.
MAX_TAGS = 64


def checked(needs: Mapping[str, float] | None, what: str = "resources") -> Needs:
    """A copy of a needs (or tags) mapping with every name and value checked."""
    if needs is None:
        return {}
    if not isinstance(needs, Mapping):
        raise InvalidArgumentError(f"{what} is a mapping of tag names to numbers, not {needs!r}")
    if len(needs) > MAX_TAGS:
        raise InvalidArgumentError(f"{what}: at most {MAX_TAGS} tags, not {len(needs)}")
    out: Needs = {}
    for name, value in needs.items():
        if not isinstance(name, str) or not _TAG.match(name):
            raise InvalidArgumentError(f"{what}: bad tag name {name!r} (letters, digits, _.-)")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidArgumentError(f"{what}: the value of {name!r} is a number")
        try:
            number = float(value)  # an int too large for a float raises OverflowError
        except OverflowError:
            number = math.inf
        if not math.isfinite(number) or number < 0:
            raise InvalidArgumentError(
                f"{what}: the value of {name!r} must be a finite number >= 0, not {value!r:.40}")
        out[name] = number
    return out


def parse(text: str | None) -> Needs:
    """`gpu=1,mem=16` -> {"gpu": 1.0, "mem": 16.0}; a bare name means 1 (`gpu` = `gpu=1`)."""
    tags: dict[str, float] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, raw = part.partition("=")
        try:
            value = float(raw) if sep else 1.0
        except ValueError:
            raise InvalidArgumentError(f"resources: {part!r} is not name=number") from None
        tags[name.strip()] = value
    return checked(tags, "resources")


def describe(needs: Mapping[str, float]) -> str:
    """`gpu=1,mem=16` (the form parse reads), or `none`."""
    return ",".join(f"{k}={v:g}" for k, v in sorted(needs.items())) or "none"


def satisfies(tags: Mapping[str, float], needs: Mapping[str, float]) -> bool:
    """Whether a worker with `tags` may run something that needs `needs`."""
    return all(tags.get(name, 0.0) >= value for name, value in needs.items() if value > 0)


def merged(*needs: Mapping[str, float]) -> Needs:
    """Several needs at once: the largest value of each tag."""
    out: Needs = {}
    for one in needs:
        for name, value in one.items():
            out[name] = max(out.get(name, 0.0), float(value))
    return out


def dag_function_needs(dag: pb.Dag, function: str,
                       registered: Mapping[str, float] | None = None) -> Needs:
    """What a DAG's function needs of the worker it is pinned on: the DAG's own mapping for it
    (gpu_functions included) and what the function was registered with."""
    own = dag.function_resources[function].amounts if function in dag.function_resources else {}
    return merged(own, registered or {})


def colocated_with(dag: pb.Dag, function: str) -> Iterable[str]:
    """The other functions of the DAG listed in a colocated group with `function`."""
    for group in dag.colocated:
        if function in group.functions:
            yield from (f for f in group.functions if f != function)
