"""`droplet bench --rounds N` measures the floor, the peers and Droplet N times, every other
round backwards, and reports each figure's median: a machine that drifts through the run then
weighs on every system alike, instead of on whichever ran last.

The phases here are real scripts (run by the bench as it runs the peers') and a stand-in for
Droplet's measurement; all of them read one shared clock that slows every figure by a tenth
at each phase run, as a VM whose neighbours wake up does."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from droplet.cli import bench
from droplet.cli.bench_rounds import alternating, check_rounds, medians
from droplet.cli.main import main

# A peer script: every figure is 1.0 at the first phase run and a tenth more at each later one.
_SCRIPT = '''import json, sys
from pathlib import Path
ticks = Path(sys.argv[0]).parent / "ticks"
tick = int(ticks.read_text()) if ticks.exists() else 0
ticks.write_text(str(tick + 1))
{fail}
slow = 1.0 + 0.1 * tick
print(json.dumps({{{figures}}}))
'''
_FLOOR = ('"hops2_p50_ms": slow, "hops3_p50_ms": slow, "hops3_burst_msgs_per_s": 1000 * (2 - slow),'
          ' "argv": sys.argv[1:]')
_PEER = ('"call_p50_ms": slow, "call_p99_ms": 2 * slow, "burst_calls_per_s": 1000 * (2 - slow),'
         ' "argv": sys.argv[1:]')


def _script(path: Path, figures: str, fail: str = "") -> None:
    path.write_text(_SCRIPT.format(figures=figures, fail=fail))


class _Bench:
    """A bench whose cluster, client and Droplet measurement are stand-ins (the rounds are
    what is tested here; the real ones are in tests/e2e/test_bench_smoke.py)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
        self.folder = folder
        self.clusters = 0
        self.marks: list[str] = []
        self.traced: list[bool] = []
        bench_ = self

        class Speed(bench.SpeedLog):
            def start(self, timeout_s: float = 10.0) -> None:
                """No sampler process: the marks are what is looked at."""

            def mark(self, phase: str) -> None:
                bench_.marks.append(phase)
                super().mark(phase)

        @contextmanager
        def cluster(settings: Any, *_args: Any) -> Iterator[Any]:
            self.clusters += 1
            yield SimpleNamespace(settings=settings)

        @contextmanager
        def connect(settings: Any) -> Iterator[Any]:
            metadata = SimpleNamespace(workers=lambda: [1, 2], schedulers=lambda: [1])
            yield SimpleNamespace(metadata=metadata)

        def measure(_client: Any, _counts: Any, _progress: Any, _notes: Any,
                    traced: bool = False, samples: Any = None) -> dict[str, Any]:
            self.traced.append(traced)
            ticks = folder / "ticks"
            tick = int(ticks.read_text()) if ticks.exists() else 0
            ticks.write_text(str(tick + 1))
            slow = 1.0 + 0.1 * tick
            samples["call"] = [slow]
            figures = {"call_p50_ms": slow, "call_p99_ms": 2 * slow,
                       "burst_calls_per_s": 1000 * (2 - slow)}
            if traced:
                figures["breakdown"] = {"client.send -> worker.start": {"p50_ms": 0.3}}
            return figures

        monkeypatch.setattr(bench, "SpeedLog", Speed)
        monkeypatch.setattr(bench, "local_cluster", cluster)
        monkeypatch.setattr(bench.droplet, "connect", connect)
        monkeypatch.setattr(bench, "measure", measure)

    def run(self, capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
        assert main(["bench", "--quick", "--peers", str(self.folder),
                     "--peers-python", sys.executable, *argv]) == 0
        out: dict[str, Any] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        return out


@pytest.fixture
def peers(tmp_path: Path) -> Path:
    _script(tmp_path / "pika_floor.py", _FLOOR)
    _script(tmp_path / "celery_bench.py", _PEER)
    _script(tmp_path / "dramatiq_bench.py", _PEER)
    return tmp_path


def test_rounds_alternate_their_order() -> None:
    assert list(alternating(["a", "b", "c"], 1)) == [(0, "a"), (0, "b"), (0, "c")]
    assert [item for _, item in alternating(["a", "b", "c"], 4)] == list("abccbaabccba")


@pytest.mark.parametrize("rounds", [0, -2, 3, 5])
def test_an_odd_number_of_rounds_over_one_is_refused(rounds: int) -> None:
    with pytest.raises(bench.BenchError, match=f"1 or an even number, not {rounds}"):
        check_rounds("--rounds", rounds)


def test_no_round_at_all_is_not_called_odd() -> None:
    for rounds in (0, -2):
        with pytest.raises(bench.BenchError) as refused:
            check_rounds("--rounds", rounds)
        assert "odd" not in str(refused.value) and "fewer than 1" in str(refused.value)


def test_medians_are_taken_figure_by_figure_over_the_rounds_that_have_them() -> None:
    runs = [{"a": 1.0, "peers": {"x": {"p": 3}}, "name": "first", "flag": True},
            {"a": 3.0, "peers": {"x": {"p": 1}, "y": {"p": 7}}, "name": "second"},
            {"a": 2.0, "peers": {"x": {"p": 2}}, "flag": False}]
    assert medians(runs) == {"a": 2.0, "peers": {"x": {"p": 2}, "y": {"p": 7}},
                             "name": "first", "flag": True}


def test_one_round_gives_the_drift_to_whatever_ran_last(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        peers: Path) -> None:
    """The control: the bias `--rounds` removes (Droplet runs last and reads 20% slower than
    the floor, though all three systems are the same)."""
    runner = _Bench(monkeypatch, peers)
    out = runner.run(capsys)
    assert runner.marks == ["floor", "celery", "dramatiq", "droplet"]
    assert out["call_p50_ms_vs_celery"] == pytest.approx(1.3 / 1.1, abs=1e-3)
    assert out["call_p50_ms_vs_dramatiq"] == pytest.approx(1.3 / 1.2, abs=1e-3)
    assert out["burst_vs_floor3"] == pytest.approx(0.7 / 1.0, abs=1e-3)
    assert "round_figures" not in out and out["counts"]["rounds"] == 1
    # A peer measures as many calls as the bench (--quick: 20 calls, bursts of 100).
    assert out["peers"]["celery"]["argv"] == ["--n", "20", "--burst", "100"]
    assert out["floor"]["argv"] == []  # (the floor's script takes no counts)


@pytest.mark.parametrize("rounds", [2, 4])
def test_over_even_rounds_a_steady_drift_weighs_on_every_system_alike(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], peers: Path,
        rounds: int) -> None:
    runner = _Bench(monkeypatch, peers)
    out = runner.run(capsys, "--rounds", str(rounds), "--breakdown")
    assert runner.marks == ["floor", "celery", "dramatiq", "droplet",
                            "droplet", "dramatiq", "celery", "floor"] * (rounds // 2)
    for ratio in ("call_p50_ms_vs_celery", "call_p99_ms_vs_celery",
                  "burst_calls_per_s_vs_celery", "call_p50_ms_vs_dramatiq", "burst_vs_floor3"):
        assert out[ratio] == pytest.approx(1.0, abs=0.02), ratio
    assert runner.clusters == 1  # one cluster, kept up through every round
    assert runner.traced == [True] + [False] * (rounds - 1)  # the stages are traced once
    assert "client.send -> worker.start" in out["breakdown"]
    figures = out["round_figures"]
    assert len(figures) == rounds and out["counts"]["rounds"] == rounds
    assert [r["call_p50_ms"] for r in figures[:2]] == [pytest.approx(1.3), pytest.approx(1.4)]
    assert all(set(r["peers"]) == {"celery", "dramatiq"} for r in figures)  # every round has both


def test_a_missing_peer_is_noted_once_however_many_rounds(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        peers: Path) -> None:
    (peers / "dramatiq_bench.py").unlink()
    out = _Bench(monkeypatch, peers).run(capsys, "--rounds", "4")
    assert out["notes"].count(f"dramatiq_bench.py not in {peers}: dramatiq skipped") == 1
    assert set(out["peers"]) == {"celery"}


def test_a_peer_that_fails_in_one_round_counts_with_the_rounds_it_ran(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        peers: Path) -> None:
    _script(peers / "celery_bench.py", _PEER, fail="if tick == 1: sys.exit('broker away')")
    out = _Bench(monkeypatch, peers).run(capsys, "--rounds", "2")
    assert out["peers"]["celery"]["call_p50_ms"] == pytest.approx(1.6)  # round 2's alone
    assert "celery" not in out["round_figures"][0].get("peers", {})
    assert any(note.startswith("celery could not be measured") for note in out["notes"])


def _floor_elsewhere(factory: pytest.TempPathFactory, text: str) -> Path:
    """A `--floor PATH` script outside the peers' folder."""
    path = factory.mktemp("elsewhere") / "my_floor.py"
    path.write_text(text)
    return path


def test_an_explicit_floor_runs_once_in_place_of_the_peers_folders(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], peers: Path,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    mine = _floor_elsewhere(tmp_path_factory,
                            'import json\nprint(json.dumps({"hops3_p50_ms": 0.5}))\n')
    runner = _Bench(monkeypatch, peers)
    out = runner.run(capsys, "--floor", str(mine))
    assert runner.marks == ["floor", "celery", "dramatiq", "droplet"]
    assert out["floor"] == {"hops3_p50_ms": 0.5}


def test_an_explicit_floor_that_fails_ends_the_bench(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], peers: Path,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    broken = _floor_elsewhere(tmp_path_factory, "raise SystemExit('no broker')\n")
    runner = _Bench(monkeypatch, peers)
    assert main(["bench", "--quick", "--floor", str(broken), "--rounds", "2"]) == 1
    assert "no broker" in capsys.readouterr().err
    assert runner.clusters == 0


def test_a_relative_peers_folder_runs_its_scripts(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        peers: Path) -> None:
    """`--peers dir` from the folder above it: each script runs in its own folder, so a path
    relative to the bench's was looked for at dir/dir/script, and every phase but Droplet's
    failed (a relative `--floor` ended the bench)."""
    monkeypatch.chdir(peers.parent)
    out = _Bench(monkeypatch, Path(peers.name)).run(capsys, "--rounds", "2")
    assert "could not be measured" not in " ".join(out.get("notes", []))
    assert out["floor"]["hops3_p50_ms"] > 0 and set(out["peers"]) == {"celery", "dramatiq"}


def test_a_null_first_round_does_not_hide_the_rounds_that_measured() -> None:
    runs = [{"a": None, "p": {"x": None}}, {"a": 2.0, "p": {"x": 5}}, {"a": 4.0}, {"b": None}]
    assert medians(runs) == {"a": 3.0, "p": {"x": 5}, "b": None}


def test_a_nan_round_does_not_unsort_the_median() -> None:
    nan = float("nan")
    assert medians([{"a": 1.0}, {"a": nan}, {"a": 5.0}, {"a": 3.0}]) == {"a": 3.0}
    assert str(medians([{"a": nan}, {"a": nan}])["a"]) == "nan"  # (no round measured it)


def test_figures_that_are_not_numbers_are_neither_divided_nor_tabled(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        peers: Path) -> None:
    """A peer that prints a string, a flag or a null where a figure was expected: the first
    round's value is the median, and dividing by a string ended the bench with a TypeError
    after every round, its figures lost; a flag was divided as 1."""
    _script(peers / "celery_bench.py", '"call_p50_ms": "fast" if tick == 1 else slow, '
            '"call_p99_ms": True, "burst_calls_per_s": None, "direct": 0')
    _Bench(monkeypatch, peers)
    assert main(["bench", "--quick", "--peers", str(peers), "--peers-python", sys.executable,
                 "--rounds", "2"]) == 0
    *table, last = capsys.readouterr().out.strip().splitlines()
    out = json.loads(last)
    assert out["peers"]["celery"]["call_p50_ms"] == "fast"
    assert not [key for key in out if key.endswith("_vs_celery")]
    assert out["call_p50_ms_vs_dramatiq"] > 0  # the other peer is still compared
    assert "celery call_p99_ms" not in "\n".join(table)  # (a flag is no figure to print)
    assert "celery direct" in "\n".join(table)


def test_an_explicit_floor_is_not_noted_as_skipped_when_the_peers_folder_has_none(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], peers: Path,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    (peers / "pika_floor.py").unlink()
    mine = tmp_path_factory.mktemp("mine") / "my_floor.py"
    mine.write_text('import json\nprint(json.dumps({"hops3_p50_ms": 0.5}))\n')
    out = _Bench(monkeypatch, peers).run(capsys, "--floor", str(mine), "--rounds", "2")
    assert out["floor"] == {"hops3_p50_ms": 0.5}
    assert not [note for note in out.get("notes", []) if "floor skipped" in note]


def test_a_round_that_fails_leaves_the_rounds_before_it_on_stderr(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        peers: Path) -> None:
    runner = _Bench(monkeypatch, peers)
    measured = bench.measure

    def measure_once(*args: Any, **kwargs: Any) -> dict[str, Any]:
        if runner.traced:  # (the second round's)
            raise bench.BenchError("a call timed out")
        figures: dict[str, Any] = measured(*args, **kwargs)
        return figures

    monkeypatch.setattr(bench, "measure", measure_once)
    assert main(["bench", "--quick", "--peers", str(peers), "--peers-python", sys.executable,
                 "--rounds", "2"]) == 1
    captured = capsys.readouterr()
    assert "a call timed out" in captured.err and not captured.out.strip()
    line = next(line for line in captured.err.splitlines() if "rounds measured" in line)
    first = json.loads(line.split("ended: ", 1)[1])[0]
    assert first["call_p50_ms"] == pytest.approx(1.3)
    assert set(first["peers"]) == {"celery", "dramatiq"} and "floor" in first
