"""Attack on the layering check (tests/unit/test_layers.py, f3c9bf4): forbidden dependencies it
let through, found by mutating droplet/ (a line added to one file, the check run again).

It looks at each import statement alone, and a part is only the modules PARTS names. So:
- a forbidden import made through a module the part may import is not seen: the message cycle
  (outbox.py, cycle.py) may import anything, so `from droplet.worker import pace` in
  outbox.py makes every scheduler module depend on the worker, unreported (and the same
  through refusal.py, which no part holds);
- the message cycle's own modules (acks.py, refusal.py, prepared_answers.py, handback.py)
  belong to no part: the user API, the transport, the store and the schema may import them;
- an import by name (`importlib.import_module("droplet.worker.dags")`, `__import__`) is not
  read at all.
Each case below is one such mutation, in a tree of its own, as test_layers.py builds them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_layers import violations

CASES = {
    "the cycle imports a handler, the scheduler the cycle": (
        {"outbox.py": "from droplet.worker import pace",
         "scheduler/calls.py": "from droplet.outbox import Outbox"},
        "scheduler"),
    "the cycle imports the scheduler, the worker the cycle": (
        {"cycle.py": "from droplet.scheduler import policy",
         "worker/service.py": "from droplet.cycle import Cycle"},
        "worker"),
    "the cycle imports the user API": (
        {"cycle.py": "from droplet.client import client"},
        "cycle"),
    "refusal.py imports a handler, the scheduler refusal.py": (
        {"refusal.py": "from droplet.worker import pace",
         "scheduler/service.py": "from droplet.refusal import refusals"},
        "scheduler"),
    "the user API imports the cycle's refusals": (
        {"client/routing.py": "from droplet.refusal import refusals"}, "client"),
    "the user API imports the cycle's ack gate": (
        {"client/pump.py": "from droplet.acks import AckGate"}, "client"),
    "the user API imports the cycle's prepared answers": (
        {"aio/client.py": "from droplet.prepared_answers import send_answers"}, "client"),
    "the transport imports the cycle's ack gate": (
        {"broker/stub.py": "from droplet.acks import AckGate"}, "broker"),
    "the store imports the cycle's refusals": (
        {"store/kv.py": "from droplet.refusal import refusals"}, "store"),
    "the schema imports the cycle's hand-back": (
        {"proto/replies.py": "from droplet.handback import hand_back_rest"}, "proto"),
    "the scheduler imports a handler by name": (
        {"scheduler/calls.py": "import importlib\n"
                               "dags = importlib.import_module('droplet.worker.dags')"},
        "scheduler"),
    "the worker imports the scheduler by __import__": (
        {"worker/handlers.py": "policy = __import__('droplet.scheduler.policy')"}, "worker"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_check_finds_a_forbidden_dependency(tmp_path: Path, case: str) -> None:
    files, source = CASES[case]
    root = tmp_path / "droplet"
    for where, line in files.items():
        (root / where).parent.mkdir(parents=True, exist_ok=True)
        (root / where).write_text(line + "\n")
    found = violations(root)
    assert any(f": {source} imports" in f for f in found), f"{case}: not found ({found})"
