"""`droplet bench --sweep` and `--sweep-rounds` given odd input: each is refused, with a
clear message and exit 1, before a cluster starts (a full bench runs minutes before its
sweep), instead of being ignored or measured in a way that does not do what it says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from droplet.cli import bench
from droplet.cli.main import main
from droplet.settings import Settings
from tests.unit.test_bench_sweep_rounds import _drifting_fleet


@pytest.fixture
def no_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bench that gets past its checks stops at its first cluster with this error."""
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise bench.BenchError("past the checks")

    monkeypatch.setattr(bench, "local_cluster", refuse)
    monkeypatch.setattr(bench, "SpeedLog", _NoSampler)


class _NoSampler(bench.SpeedLog):
    def start(self, timeout_s: float = 10.0) -> None:
        """Nothing is measured here: no sampler process to start."""


@pytest.mark.parametrize(("argv", "said"), [
    (["--sweep-rounds", "2"], "--sweep-rounds repeats the fleet sizes of --sweep"),
    (["--sweep", ","], "--sweep takes worker counts like 1,2,4, not ','"),
    (["--sweep", ""], "--sweep takes worker counts like 1,2,4, not ''"),
    (["--sweep", "2,4,2"], "--sweep names 2 twice"),
    (["--sweep", "2,32", "--sweep-rounds", "3"], "1 or an even number, not 3"),
    (["--sweep", "2,32", "--sweep-rounds", "0"], "1 or an even number, not 0"),
])
def test_odd_sweep_input_is_refused_before_a_cluster_starts(
        no_cluster: None, capsys: pytest.CaptureFixture[str], argv: list[str],
        said: str) -> None:
    assert main(["bench", "--quick", *argv]) == 1
    err = capsys.readouterr().err
    assert said in err and "past the checks" not in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [[], ["--sweep", "2,32"], ["--sweep", "2, 32,"],
                                  ["--sweep", "2,32", "--sweep-rounds", "1"],
                                  ["--sweep", "2,32", "--sweep-rounds", "4"]])
def test_sound_sweep_input_gets_past_the_checks(
        no_cluster: None, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert main(["bench", "--quick", *argv]) == 1
    assert "past the checks" in capsys.readouterr().err


def test_three_rounds_leave_a_steady_drift_on_one_size(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Why an odd number of rounds over 1 is refused: under a steady drift each size's
    median is its middle round's rate alone, and that round starts the sizes in one order,
    so the bias of a single round is back (reversed), where 2 or 4 rounds cancel it."""
    _drifting_fleet(monkeypatch)
    out = bench._sweep(Settings(), bench.sweep_order([2, 32], 3), {}, tmp_path,
                       bench.Progress(False))
    assert out["sweep"]["32"] / out["sweep"]["2"] == pytest.approx(5800 / 5700)


def test_a_huge_number_of_rounds_is_not_laid_out_up_front(
        no_cluster: None, capsys: pytest.CaptureFixture[str]) -> None:
    """The rounds are started one by one: 10**20 of them used to be built into a list first,
    which filled the machine's memory before the bench began."""
    argv = ["bench", "--quick", "--sweep", "1,2", "--sweep-rounds", str(10**20)]
    assert main(argv) == 1
    assert "past the checks" in capsys.readouterr().err
