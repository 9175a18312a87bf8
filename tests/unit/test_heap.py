"""heap.py: a worker's or scheduler's start-up objects set aside from full collections, and
the collector's pauses counted for the metrics."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from droplet import heap


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # the rest of the test run keeps its collector as it was


def test_settling_collects_start_up_garbage_and_sets_the_rest_aside(unfrozen: None) -> None:
    kept = Node()
    garbage = Node()
    garbage.other = Node()
    garbage.other.other = garbage  # a cycle: only the collector frees it
    gone = weakref.ref(garbage)
    del garbage
    frozen = heap.settle()
    assert gone() is None, "garbage made at start-up is collected, not frozen for good"
    assert frozen > 1000  # (frozen objects may still be freed by refcount: the count moves)
    assert not any(o is kept for o in gc.get_objects()), (
        "an object alive at start-up is out of the collector's sight"
    )
    assert len(gc.get_objects(2)) < frozen / 10, "a full collection walks only what came after"
    later = Node()
    assert any(o is later for o in gc.get_objects()), "what comes after is collected as ever"


def test_pauses_are_counted_per_generation_and_read_when_scraped() -> None:
    pauses = heap.GcPauses().start()
    try:
        gc.collect(0)
        gc.collect(2)
        gc.collect(2)
    finally:
        pauses.stop()
    assert pauses.collections[0] >= 1 and pauses.collections[2] >= 2
    assert 0 < pauses.longest_s[2] <= pauses.paused_s[2]
    counted = list(pauses.collections)
    gc.collect(2)
    assert pauses.collections == counted, "stop() takes the callback away"

    registry = CollectorRegistry()
    registry.register(pauses)
    scraped = generate_latest(registry).decode()
    assert f'droplet_gc_collections_total{{generation="2"}} {float(counted[2])}' in scraped
    assert 'droplet_gc_pause_seconds_total{generation="0"}' in scraped
    assert 'droplet_gc_longest_pause_seconds{generation="1"}' in scraped
    assert "droplet_gc_frozen_objects " in scraped


def test_starting_twice_installs_one_callback() -> None:
    pauses = heap.GcPauses()
    pauses.start().start()
    try:
        assert gc.callbacks.count(pauses._observe) == 1
    finally:
        pauses.stop()
    assert pauses._observe not in gc.callbacks
