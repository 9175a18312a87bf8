"""`droplet bench --sweep` compares fleet sizes measured one after another on a machine whose
load drifts: its rounds alternate the order, so a drift does not pass for a cost of size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from droplet.cli import bench
from droplet.cli.bench_cpu import FleetCpu
from droplet.settings import Settings


def test_every_other_round_starts_the_sizes_backwards() -> None:
    assert list(bench.sweep_order([2, 32], 1)) == [2, 32]
    assert list(bench.sweep_order([2, 32], 2)) == [2, 32, 32, 2]
    assert list(bench.sweep_order([1, 2, 4], 3)) == [1, 2, 4, 4, 2, 1, 1, 2, 4]


def _drifting_fleet(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every fleet size bursts at the same true rate, but the machine slows down by 100
    calls/s at each fleet started (as a VM whose neighbours wake up does)."""
    started: list[int] = []

    def sweep_one(_base: Settings, workers: int, *_args: Any) -> tuple[float, FleetCpu]:
        started.append(workers)
        rate = 6000.0 - 100.0 * (len(started) - 1)
        return rate, FleetCpu(worker_cpu_us_per_call=100.0 + len(started),
                              scheduler_cpu_us_per_call=0.0, idle_worker_cpu_pct=0.1)

    monkeypatch.setattr(bench, "_sweep_one", sweep_one)
    return started


@pytest.mark.parametrize(("rounds", "ratio"), [(1, 5900 / 6000), (2, 1.0), (4, 1.0)])
def test_a_steady_drift_weighs_on_every_size_alike_once_rounds_alternate(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, rounds: int, ratio: float) -> None:
    started = _drifting_fleet(monkeypatch)
    out = bench._sweep(Settings(), bench.sweep_order([2, 32], rounds), {}, tmp_path,
                       bench.Progress(False))
    assert started == list(bench.sweep_order([2, 32], rounds))
    assert out["sweep"]["32"] / out["sweep"]["2"] == pytest.approx(ratio)
    assert len(out["sweep_runs"]["2"]) == len(out["sweep_runs"]["32"]) == rounds
    assert set(out["sweep_cpu"]) == {"2", "32"}


def test_the_cpu_figures_are_medians_over_rounds_figure_by_figure() -> None:
    rounds = [FleetCpu(100.0, 5.0, 0.3), FleetCpu(300.0, 1.0, 0.1), FleetCpu(200.0, 9.0, 0.2)]
    assert FleetCpu.median_of(rounds) == FleetCpu(200.0, 5.0, 0.2)
    assert FleetCpu.median_of(rounds[:1]) == rounds[0]
