"""What the examples share: register_dag's answer, checked.

Not an example itself; each example imports it from this folder (run them as
`python examples/<name>.py`, which puts the folder on the import path).
"""

from __future__ import annotations

import droplet


def created(name: str, result: tuple[bool, int | None]) -> tuple[bool, int | None]:
    """register_dag's (success, error_code), checked: a DAG that was not created would only
    show later, as "no DAG named ..." from its first call."""
    if not result[0]:
        hint = (": each DAG function is pinned on a worker of its own; delete DAGs left from "
                "earlier runs or start more workers" if result[1] == droplet.NO_RESOURCES else "")
        raise SystemExit(f"register_dag({name!r}) -> {result}{hint}")
    return result
