"""heap.GcPauses started (or stopped and started again) while another thread's collection is
in progress: the collection's "stop" arrives without its "start".

A collection runs finalizers and weakref callbacks (Python code), and the interpreter
switches threads in them, so the main thread can append the callback to gc.callbacks
between the two phases of a collection in, say, the recorder's thread: exactly what
run_worker does (recorder.start() and then _settle_heap). The stop phase then measured
`perf_counter() - 0.0`, the machine's uptime, as one pause: droplet_gc_longest_pause_seconds
and droplet_gc_pause_seconds_total kept that bogus figure for the life of the worker."""

from __future__ import annotations

import gc
import threading
import time

from droplet import heap


class _Holds:
    """Cyclic garbage whose finalizer, run inside the collection, lets the main thread in."""

    def __init__(self, inside: threading.Event, go_on: threading.Event) -> None:
        self.me = self
        self.inside = inside
        self.go_on = go_on

    def __del__(self) -> None:
        self.inside.set()
        self.go_on.wait(10)


def _collect_in_a_thread_while(action: object) -> None:
    inside, go_on = threading.Event(), threading.Event()
    _Holds(inside, go_on)  # garbage at once: only the collector frees it
    collector = threading.Thread(target=gc.collect)
    collector.start()
    try:
        assert inside.wait(10), "the collection ran the finalizer"
        action()  # type: ignore[operator]
    finally:
        go_on.set()
        collector.join(10)
    assert not collector.is_alive()


def test_started_during_another_threads_collection() -> None:
    began = time.perf_counter()
    pauses = heap.GcPauses()
    try:
        _collect_in_a_thread_while(pauses.start)
        gc.collect()
    finally:
        pauses.stop()
    lived = time.perf_counter() - began
    assert pauses.longest_s[2] <= lived and pauses.paused_s[2] <= lived, (
        f"a pause longer than the collector has been counting: {pauses.longest_s[2]:.1f} s "
        f"counted in {lived:.3f} s"
    )


def test_restarted_during_another_threads_collection() -> None:
    pauses = heap.GcPauses().start()
    try:
        gc.collect()
        pauses.stop()
        before = pauses.paused_s[2]
        time.sleep(0.5)  # a stale "start" half a second old
        began = time.perf_counter()
        _collect_in_a_thread_while(pauses.start)
    finally:
        pauses.stop()
    lived = time.perf_counter() - began
    assert pauses.paused_s[2] - before <= lived, (
        f"the stale start of an earlier collection counted: {pauses.paused_s[2] - before:.3f} "
        f"s more in {lived:.3f} s ({pauses.collections})"
    )
