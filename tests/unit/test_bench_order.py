"""The order `droplet bench` makes its calls in (bench_measure.measure): each kind is timed after
untimed calls of its own kind, as the peers' scripts do (50 untimed, then the timed ones),
direct calls first (their warm-up lasts the period in which the workers learn the function is
quick), then stored calls, then the DAG; the burst, map and (with --breakdown) the traced
calls after them. A durable stream leaves RabbitMQ and etcd busy for seconds, so what is timed
right after one is slower: a call of another kind timed there would carry a cost its peers'
figure does not. A stand-in client records every call's kind and the phase it was made in."""

from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Any

import pytest

from droplet.cli import bench_measure
from droplet.cli.bench_measure import Progress, measure

COUNTS = {"calls": 20, "dag_calls": 20, "burst": 100, "map": 200, "warmup": 5}
STATUS_INTERVAL_S = 0.2
TICK_S = 0.01  # what one call takes on the stand-in's clock


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def perf_counter(self) -> float:
        return self.now


class Future:
    def __init__(self, value: Any, trace: list[tuple[str, float]] | None = None) -> None:
        self.value, self.trace = value, trace or []

    def get(self, timeout: float | None = None) -> Any:
        return self.value


class Recording(Progress):
    """Names the call just made by the label of the bar it moved (None: it moved none)."""

    def __init__(self, log: list[tuple[str, str | None]]) -> None:
        super().__init__(enabled=False)
        self.log = log

    def show(self, label: str, done: int, total: int) -> None:
        if self.log and self.log[-1][1] is None:
            self.log[-1] = (self.log[-1][0], label)


class Client:
    """Answers every call at once (one tick of the clock) and logs (kind, phase)."""

    def __init__(self, clock: Clock, free_workers: int) -> None:
        self.clock = clock
        self.log: list[tuple[str, str | None]] = []
        self.progress = Recording(self.log)
        self.settings = SimpleNamespace(status_interval_s=STATUS_INTERVAL_S)
        self.metadata = SimpleNamespace(
            pins=lambda: [], workers=lambda: [SimpleNamespace(id=f"w{i}")
                                              for i in range(free_workers)],
            delete_function=lambda name: None)

    def _made(self, kind: str) -> None:
        self.clock.now += TICK_S
        self.log.append((kind, None))

    def register(self, fn: Any, name: str) -> None:
        pass

    def register_dag(self, name: str, functions: Any, connections: Any) -> tuple[bool, None]:
        return True, None

    def delete_dag(self, name: str) -> None:
        pass

    def call(self, name: str, x: int) -> Future:
        self._made("stored")
        return Future(x + 1)

    def call_direct(self, name: str, x: int) -> Future:
        self._made("direct")
        return Future(x + 1)

    def submit(self, name: str, args: list[int], traced: bool = False) -> Future:
        self._made("traced" if traced else "stored")
        return Future(args[0] + 1, [("client.send", 0.0), ("client.received", 0.001)])

    def call_dag(self, dag: str, args: dict[str, list[int]], direct_response: bool = False,
                 timeout: float | None = None, traced: bool = False) -> Any:
        self._made("traced dag" if traced else "dag")
        value = (next(iter(args.values()))[0] + 1) ** 2
        return Future(value, [("a.start", 0.0), ("a.end", 0.001)]) if traced else value

    def map(self, name: str, xs: range) -> list[int]:
        self._made("map")
        return [x + 1 for x in xs]


def run(monkeypatch: pytest.MonkeyPatch, free_workers: int = 2,
        traced: bool = False) -> tuple[list[tuple[str, int]], Client, dict[str, Any]]:
    clock = Clock()
    monkeypatch.setattr(bench_measure, "time", clock)
    client = Client(clock, free_workers)
    notes: list[str] = []
    out = measure(client, COUNTS, client.progress, notes, traced=traced)  # type: ignore[arg-type]
    out["notes"] = notes
    runs = [(kind, len(list(group))) for kind, group in itertools.groupby(k for k, _ in client.log)]
    return runs, client, out


def test_direct_calls_are_timed_first_after_direct_warm_up_lasting_the_learn_period(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _, client, out = run(monkeypatch)
    warm, calls = COUNTS["warmup"], COUNTS["calls"]
    # The warm-up goes on in direct calls (no bar moves) until the workers have had time to
    # publish what they learnt (1.5 status intervals and a second): no other call before then.
    learning = int((1.5 * STATUS_INTERVAL_S + 1.0) / TICK_S) - warm
    phases = [(kind, phase, len(list(group)))
              for (kind, phase), group in itertools.groupby(client.log)]
    assert phases[1][:2] == ("direct", None) and phases[1][2] >= learning
    assert phases[:1] + phases[2:] == [
        ("direct", "warm-up calls", warm),
        ("direct", "direct calls", calls),
        ("stored", "warm-up stored calls", warm),
        ("stored", "calls", calls),
        ("dag", "warm-up DAG calls", warm),
        ("dag", "DAG calls", COUNTS["dag_calls"]),
        ("stored", None, COUNTS["burst"] - 1),  # a burst is sent whole before its bar moves
        ("stored", "burst", 1),
        ("map", None, 1),
    ]
    for key in ("direct_call_p99_ms", "call_p99_ms", "dag2_p99_ms", "burst_calls_per_s",
                "map_calls_per_s"):
        assert key in out


def test_no_dag_skips_its_warm_up_too(monkeypatch: pytest.MonkeyPatch) -> None:
    runs, _, out = run(monkeypatch, free_workers=1)
    assert [kind for kind, _ in runs] == ["direct", "stored", "map"]
    assert runs[1][1] == COUNTS["warmup"] + COUNTS["calls"] + COUNTS["burst"]
    assert "dag2_p99_ms" not in out
    assert any(note.startswith("DAG figures skipped") for note in out["notes"])


def test_traced_calls_come_after_map(monkeypatch: pytest.MonkeyPatch) -> None:
    runs, _, out = run(monkeypatch, traced=True)
    assert [kind for kind, _ in runs] == ["direct", "stored", "dag", "stored", "map", "traced",
                                          "traced dag"]
    assert runs[-2:] == [("traced", COUNTS["calls"]), ("traced dag", COUNTS["dag_calls"])]
    assert "breakdown" in out and "dag2_breakdown" in out
