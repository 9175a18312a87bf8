"""The dashboard's pure parts: rates from successive records, the merged call log, the DAG
drawing and charts, and the guard of actions (token, confirmation tickets)."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

import pytest

from droplet.dashboard.guard import BadInput, Guard, Refused
from droplet.dashboard.history import CallLog, FunctionHistory, QueueHistory, quantile
from droplet.dashboard.svg import Placement, Series, dag_svg, layers, line_chart
from droplet.proto import pb

BOUNDS = (0.001, 0.01, 0.1)


def _record(worker: str, incarnation: str, started: float, published: float, calls: int,
            buckets: tuple[int, ...] = (0, 0, 0, 0), errors: int = 0) -> pb.RecentCalls:
    record = pb.RecentCalls(worker_id=worker, incarnation=incarnation, started_at=started,
                            published_at=published, bucket_bounds_s=BOUNDS)
    record.totals.add(function="f", calls=calls, errors=errors, run_s=calls * 0.005,
                      buckets=list(buckets) or [calls, 0, 0, 0])
    return record


def test_rates_come_from_differences_spread_over_the_time_between_records() -> None:
    history = FunctionHistory(watching_since=1000.0, bin_s=5.0)
    history.add(_record("w", "a", 900.0, 1000.0, 500), 1000.5)  # running before: a baseline
    history.add(_record("w", "a", 900.0, 1010.0, 600, (0, 100, 0, 0)), 1010.5)
    history.add(_record("w", "a", 900.0, 1010.0, 600, (0, 100, 0, 0)), 1014.0)  # unchanged
    points = history.points("f", since=0)
    assert [p.at for p in points] == [1002.5, 1007.5]
    assert all(p.calls_per_s == pytest.approx(10.0) for p in points), "100 calls over 10 s"
    assert all(p.p50_s == 0.01 and p.mean_s == pytest.approx(0.005) for p in points)
    summary = history.summary("f", since=0)
    assert summary is not None and summary.calls_per_s == pytest.approx(10.0)


def test_a_worker_that_starts_while_watched_counts_from_zero_and_a_restart_too() -> None:
    history = FunctionHistory(watching_since=1000.0, bin_s=10.0)
    history.add(_record("w", "a", 1000.0, 1010.0, 50), 1010.0)
    history.add(_record("w", "b", 1010.0, 1020.0, 30), 1020.0)  # restarted: counts from 0
    history.add(_record("w", "b", 1010.0, 1020.0, 30), 1030.0)
    assert [round(p.calls_per_s, 6) for p in history.points("f", 0)] == [5.0, 3.0]


def test_a_burst_after_a_quiet_spell_is_not_spread_over_the_spell() -> None:
    history = FunctionHistory(watching_since=0.0, bin_s=5.0)
    history.add(_record("w", "a", 0.0, 100.0, 0), 100.0)
    for seen in range(102, 200, 2):
        history.add(_record("w", "a", 0.0, 100.0, 0), float(seen))  # idle, unchanged
    history.add(_record("w", "a", 0.0, 201.0, 100), 201.5)  # 100 calls, just before 201
    history.add(_record("w", "a", 0.0, 201.0, 100), 210.0)
    points = history.points("f", 0)
    assert sum(p.calls_per_s * 5 for p in points) == pytest.approx(100)
    assert min(p.at for p in points) >= 195, "within the last seconds, not since 100"


def test_a_worker_idle_when_first_seen_is_quiet_until_then() -> None:
    history = FunctionHistory(watching_since=500.0, bin_s=5.0)
    history.add(_record("w", "a", 0.0, 100.0, 7), 500.0)  # last wrote long before we watched
    history.add(_record("w", "a", 0.0, 503.0, 57), 503.5)  # 50 calls just after
    history.add(_record("w", "a", 0.0, 503.0, 57), 510.0)
    points = history.points("f", 0)
    assert sum(p.calls_per_s * 5 for p in points) == pytest.approx(50)
    assert min(p.at for p in points) >= 495, "not spread back to 100"


def test_quantiles_are_bucket_upper_bounds() -> None:
    assert quantile(BOUNDS, [90, 9, 1, 0], 0.5) == 0.001
    assert quantile(BOUNDS, [90, 9, 1, 0], 0.99) == 0.01
    assert quantile(BOUNDS, [0, 0, 0, 5], 0.5) == 0.1  # the overflow bucket: the last bound
    assert math.isnan(quantile(BOUNDS, [0, 0, 0, 0], 0.5))


def test_queue_rate_is_growth_per_second() -> None:
    queues = QueueHistory()
    assert queues.rate("q") is None
    queues.add(100.0, {"q": 10, "gone": None})
    queues.add(102.0, {"q": 30})
    queues.add(104.0, {"q": 20})
    assert queues.rate("q") == pytest.approx(2.5)  # 10 -> 20 over 4 s
    assert queues.queues() == ["q"]


def test_the_call_log_takes_each_call_once_and_keeps_errors_apart() -> None:
    log = CallLog()
    record = pb.RecentCalls(worker_id="w", incarnation="a")
    record.calls.add(seq=1, function="f", call_id="c1", stages=pb.CallStages(run_s=0.5))
    record.calls.add(seq=2, function="f", status=pb.EXECUTION_ERROR, error="boom",
                     traceback="Traceback...", stages=pb.CallStages(run_s=0.1, store_s=0.2))
    assert log.add(record) == 2
    assert log.add(record) == 0, "seen already"
    record.calls.add(seq=3, function="g")
    assert log.add(record) == 1
    (error,) = log.errors()
    assert (error.status, error.traceback, error.duration_s) == (
        "EXECUTION_ERROR", "Traceback...", pytest.approx(0.3))
    assert [c.call_id for c in log.calls()][:1] == ["c1"]


def test_a_call_first_seen_without_its_id_gets_it_from_a_later_record() -> None:
    """A worker publishes a run before its outcome is stored (no call id yet); the next
    record carries the id, and the call already listed is completed with it."""
    log = CallLog()
    early = pb.RecentCalls(worker_id="w", incarnation="a")
    early.calls.add(seq=1, function="f", status=pb.EXECUTION_ERROR, error="boom")
    assert log.add(early) == 1
    later = pb.RecentCalls(worker_id="w", incarnation="a")
    later.calls.add(seq=1, function="f", call_id="c1", status=pb.EXECUTION_ERROR, error="boom",
                    stages=pb.CallStages(run_s=0.1, store_s=0.2))
    assert log.add(later) == 0, "not a new call"
    (call,) = log.calls()
    (error,) = log.errors()
    assert call.call_id == error.call_id == "c1"
    assert call.stages == {"run_s": 0.1, "store_s": 0.2}


def test_dag_layers_put_each_function_after_its_deepest_upstream() -> None:
    edges = [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("a", "d")]
    assert layers(["a", "b", "c", "d"], edges) == [["a"], ["b", "c"], ["d"]]
    assert layers(["x"], []) == [["x"]]


def test_the_dag_drawing_names_each_pin_marks_dead_ones_and_escapes_names() -> None:
    svg = dag_svg("d<1>", ["a", "b&c"], [("a", "b&c")],
                  {"a": Placement("w1", True), "b&c": Placement("w2", False)})
    root = ET.fromstring(svg)  # well-formed XML despite the names
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert texts == ["a", "w1", "b&c", "w2 (dead)"]
    assert len(list(root.iter("{http://www.w3.org/2000/svg}line"))) == 1
    assert "#dc2626" in svg, "the dead worker's box is drawn red"


def test_a_chart_draws_one_line_per_series_within_its_window() -> None:
    svg = line_chart("calls", [Series("f", [(90.0, 1.0), (95.0, 4.0), (10.0, 99.0)])],
                     "/s", window_s=60, now=100.0)
    root = ET.fromstring(svg)
    (line,) = root.iter("{http://www.w3.org/2000/svg}polyline")
    assert len(line.get("points", "").split()) == 2, "the point outside the window is left out"
    assert len(list(root.iter("{http://www.w3.org/2000/svg}circle"))) == 2, "a dot per point"
    assert "5/s" in svg, "the axis goes up to a round maximum above 4"
    empty = line_chart("nothing", [], "/s", window_s=60, now=100.0)
    assert "no data yet" in empty


def test_actions_need_the_configured_token() -> None:
    with pytest.raises(Refused, match="read-only"):
        Guard(None).check_token("anything")
    guard = Guard("s3cret")
    with pytest.raises(Refused, match="needs the dashboard token"):
        guard.check_token("")
    with pytest.raises(Refused, match="wrong"):
        guard.check_token("guess")
    guard.check_token("s3cret")


def test_a_confirmation_holds_only_for_what_was_asked_and_not_for_long() -> None:
    guard = Guard("s3cret")
    ticket = guard.ticket("requeue", "0123456789ab", now=1000.0)
    assert re.fullmatch(r"[0-9a-f]{64}", ticket.mac) and "s3cret" not in ticket.mac
    guard.redeem("requeue", "0123456789ab", str(ticket.expires), ticket.mac, now=1001.0)
    with pytest.raises(Refused, match="not for this action"):
        guard.redeem("purge", "0123456789ab", str(ticket.expires), ticket.mac, now=1001.0)
    with pytest.raises(Refused, match="not for this action"):
        guard.redeem("requeue", "all", str(ticket.expires), ticket.mac, now=1001.0)
    with pytest.raises(Refused, match="expired"):
        guard.redeem("requeue", "0123456789ab", str(ticket.expires), ticket.mac, now=5000.0)
    with pytest.raises(BadInput):
        guard.redeem("requeue", "0123456789ab", "soon", ticket.mac)
    with pytest.raises(Refused, match="not for this action"):
        Guard("other").redeem("requeue", "0123456789ab", str(ticket.expires), ticket.mac,
                              now=1001.0)


def test_the_command_refuses_a_port_in_use_and_a_bad_interval_in_a_sentence(
        capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from droplet.cli.main import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["dashboard", "--port", str(port)]) == 1
    assert f"127.0.0.1:{port} is in use" in capsys.readouterr().err
    assert main(["dashboard", "--interval", "0"]) == 1
    assert "--interval must be 0.2-60 seconds" in capsys.readouterr().err
