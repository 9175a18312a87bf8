"""`droplet bench` times a fixed loop as each phase starts, and says when the machine's speed
moved enough during a run to make ratios between its phases doubtful."""

from __future__ import annotations

from pathlib import Path

from droplet.cli import bench
from droplet.cli.bench_speed import DRIFT_NOTED, SpeedLog, probe_ms


def test_the_probe_times_real_work() -> None:
    small, large = probe_ms(5_000, 5), probe_ms(40_000, 5)
    assert 0 < small < large  # eight times the loop: longer even on a machine that slows 2x


def _log(times: list[float]) -> SpeedLog:
    queued = iter(times)
    log = SpeedLog(probe=lambda: next(queued))
    for phase in ("floor", "celery", "droplet", "end")[:len(times)]:
        log.mark(phase)
    return log


def test_a_steady_machine_gets_no_note() -> None:
    log = _log([2.5, 2.6, 2.55, 2.7])
    assert log.drift() == 2.7 / 2.5 < DRIFT_NOTED
    assert log.note() is None
    assert log.report() == {"probe_ms": {"floor": 2.5, "celery": 2.6, "droplet": 2.55,
                                         "end": 2.7}, "drift": 2.7 / 2.5}


def test_a_machine_that_slowed_between_phases_is_named_in_a_note() -> None:
    log = _log([2.6, 2.6, 5.7, 5.5])
    note = log.note()
    assert note is not None
    assert "2.60 ms as floor started" in note and "5.70 ms as droplet started" in note
    assert "(2.19x)" in note


def test_one_mark_or_none_is_no_drift() -> None:
    assert _log([]).drift() == 1.0
    assert _log([3.0]).drift() == 1.0 and _log([3.0]).note() is None


def test_each_peer_script_found_is_probed_as_it_starts(tmp_path: Path) -> None:
    (tmp_path / "pika_floor.py").write_text(
        'import json\nprint(json.dumps({"hops2_p50_ms": 0.6, "hops3_p50_ms": 0.9}))\n')
    (tmp_path / "celery_bench.py").write_text(
        'import json\nprint("warming up")\nprint(json.dumps({"call_p50_ms": 2.0}))\n')
    times = iter([2.5, 2.6])
    speed = SpeedLog(probe=lambda: next(times))
    notes: list[str] = []
    found = bench._run_peers(tmp_path, "amqp://unused", None, bench.Progress(False), notes,
                             speed)
    assert found == {"floor": {"hops2_p50_ms": 0.6, "hops3_p50_ms": 0.9},
                     "peers": {"celery": {"call_p50_ms": 2.0}}}
    assert speed.probes_ms == {"floor": 2.5, "celery": 2.6}  # dramatiq_bench.py is absent
    assert notes == [f"dramatiq_bench.py not in {tmp_path}: dramatiq skipped"]


def test_the_note_names_the_two_phases_in_the_order_they_ran() -> None:
    """A machine that sped up is not told as one that slowed down, and the end is no phase
    that starts."""
    log = _log([5.6, 5.5, 5.6, 2.5])  # fast only once every phase was done
    note = log.note()
    assert note is not None
    assert "took 5.60 ms as floor started and 2.50 ms at the end (2.24x)" in note
