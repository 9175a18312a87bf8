"""`droplet bench` samples the machine's speed through the whole run, gives each phase the
mean of its samples, and says when phases ran at speeds far enough apart to make the ratios
between them doubtful."""

from __future__ import annotations

import itertools
import sys
import time

import pytest

from droplet.cli.bench_speed import (
    DRIFT_NOTED,
    MIN_SAMPLES,
    SpeedLog,
    _read,
    by_phase,
    probe_cpu_ms,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_the_probe_times_real_work() -> None:
    small, large = probe_cpu_ms(5_000), probe_cpu_ms(40_000)
    assert 0 < small < large  # eight times the loop: longer even on a machine that slows 2x


def test_each_sample_belongs_to_the_phase_running_when_it_was_taken() -> None:
    marks = [("floor", 10.0), ("celery", 20.0), ("floor", 30.0)]
    samples = [(5.0, 9.0), (12.0, 2.5), (19.9, 2.6), (20.0, 5.5), (31.0, 2.7), (40.0, 8.0)]
    assert by_phase(marks, 35.0, samples) == {"floor": [2.5, 2.6, 2.7], "celery": [5.5]}
    assert by_phase([], 35.0, samples) == {}


def _log(phases: dict[str, list[float]]) -> SpeedLog:
    log = SpeedLog()
    log.stop()  # (never started: only its temporary file to remove)
    log.phases = phases
    return log


def test_a_steady_machine_gets_no_note() -> None:
    log = _log({"floor": [2.5] * 10, "celery": [2.6] * 10, "droplet": [2.7] * 10})
    assert log.drift() == pytest.approx(2.7 / 2.5) and log.drift() < DRIFT_NOTED
    assert log.note() is None
    assert log.report() == {"probe_cpu_ms": {"floor": 2.5, "celery": 2.6, "droplet": 2.7},
                            "samples": {"floor": 10, "celery": 10, "droplet": 10},
                            "drift": pytest.approx(2.7 / 2.5)}


def test_phases_at_different_speeds_are_named_in_the_order_they_ran() -> None:
    # A machine that sped up must not read as one that slowed down.
    log = _log({"floor": [5.5] * 10, "celery": [4.0] * 10, "droplet": [2.5, 2.5] * 5})
    note = log.note()
    assert note is not None
    assert "5.50 ms of CPU on average during floor and 2.50 ms during droplet" in note
    assert "(2.20x)" in note


def test_a_phase_with_too_few_samples_is_not_compared() -> None:
    log = _log({"floor": [2.5] * MIN_SAMPLES, "end of run": [9.0] * (MIN_SAMPLES - 1)})
    assert log.drift() == 1.0 and log.note() is None
    assert log.report()["samples"] == {"floor": MIN_SAMPLES, "end of run": MIN_SAMPLES - 1}
    assert _log({}).drift() == 1.0


def _samples_since(log: SpeedLog, mark: float, want: int, timeout_s: float = 20.0) -> None:
    """Waits until the sampler has written `want` samples since `mark` (or has ended, or
    timeout_s has passed: the assertions after it say what is missing). Counted, not slept
    for: a crowded host starves the sampler of a core for a while, a broken one never writes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and log._sampler is not None \
            and log._sampler.poll() is None \
            and sum(at >= mark for at, _ in _read(log._path)) < want:
        time.sleep(0.02)


def test_a_real_sampler_covers_each_phase_and_is_gone_after_stop() -> None:
    log = SpeedLog(every_s=0.05)
    log.start()
    sampler = log._sampler
    assert sampler is not None
    log.mark("first")
    _samples_since(log, log._marks[-1][1], 4)
    log.mark("second")
    _samples_since(log, log._marks[-1][1], 4)
    taken = [at for at, _ in _read(log._path)]
    log.stop()
    # Its own clock, not ours: at its every_s (0.05 s) at least one gap is well under 0.2 s
    # however crowded the host; at the default 0.25 s (every_s not passed on) none is.
    gaps = [later - at for at, later in itertools.pairwise(taken)]
    assert gaps and min(gaps) < 0.2, gaps
    assert sampler.poll() is not None
    assert set(log.phases) == {"first", "second"}
    assert all(len(ms) >= 4 and all(m > 0 for m in ms) for ms in log.phases.values()), \
        {phase: len(ms) for phase, ms in log.phases.items()}
    assert not log._path.exists()
