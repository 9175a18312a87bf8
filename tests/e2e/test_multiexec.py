"""Speculative DAG functions (MULTIEXEC) through real `droplet` processes: copies run on
several workers, the first valid result wins, every DAG call has one outcome and sends one
result downstream, also when copies finish together or a copy's worker is killed.

Downstream of the speculative step, `after` (pinned on one worker, so its runs are sequential)
appends the call's tag to a stored list each time it runs: the list holds each tag once exactly
when each call sent one result on."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

import droplet
from droplet.cli.status import collect
from tests.conftest import Cluster, Services, client_fixture, cluster_fixture, start_cluster

pytestmark = pytest.mark.e2e

spec_cluster = cluster_fixture(workers=4, worker_lease_ttl_s=3, status_interval_s=0.5)
sclient = client_fixture("spec_cluster")


def _after(runs_key: str) -> Any:
    def after(lib: Any, tag: str, result: Any) -> Any:
        runs = lib.get(runs_key) or []
        lib.put(runs_key, [*runs, tag])
        return result

    return after


def _speculative_dag(client: Any, unique: str, spec: Any, invalid: list[Any],
                     copies: int = 3) -> tuple[str, str, str]:
    """Registers spec -> after with spec speculative: (dag, spec name, after name)."""
    client.register(spec, unique + "-spec")
    client.register(_after(unique + "-runs"), unique + "-after")
    dag = unique + "-dag"
    ok = client.register_dag(dag, [(unique + "-spec", invalid, copies), unique + "-after"],
                             [(unique + "-spec", unique + "-after")])
    assert ok == (True, None)
    return dag, unique + "-spec", unique + "-after"


def _pinned(cluster: Cluster, dag: str, function: str) -> str:
    [worker] = [w["id"] for w in collect(cluster.settings)["workers"]
                if w["pinned"] == f"{dag}/{function}"]
    return str(worker)


def test_the_first_valid_copy_wins_on_another_worker(spec_cluster: Cluster, sclient: Any,
                                                     unique: str) -> None:
    """The pinned worker's copy returns an invalid result (None) at once; the call still
    answers, with a result from a copy on another worker."""
    bad_key, ran_key = unique + "-bad", unique + "-ran"

    def spec(lib: Any, x: int) -> Any:
        me = lib.getid()
        lib.put(f"{ran_key}-{me}-{x}", 1)
        return None if me == lib.get(bad_key) else (x * 2, me)

    dag, s, a = _speculative_dag(sclient, unique, spec, invalid=[None], copies=3)
    try:
        pinned = _pinned(spec_cluster, dag, s)
        sclient.put_object(bad_key, pinned)
        results = [sclient.call_dag(dag, {s: [i], a: [f"t{i}"]}, direct_response=True,
                                    timeout=20) for i in range(10)]
        assert [r[0] for r in results] == [i * 2 for i in range(10)]
        assert all(r[1] != pinned for r in results), "an invalid result never wins"
        assert sorted(sclient.get_object(unique + "-runs")) == sorted(f"t{i}" for i in range(10))
        workers = [w["id"] for w in collect(spec_cluster.settings)["workers"]]
        ran = {(w, i) for w in workers for i in range(10)
               if sclient.get_object(f"{ran_key}-{w}-{i}") is not None}
        # A copy that starts once the race is decided does not run: so at least the winner
        # ran, on a worker other than the pinned one, and at most the three copies.
        assert all(1 <= sum(i == j for _, j in ran) <= 3 for i in range(10))
        assert len({w for w, _ in ran}) >= 2, f"copies ran on several workers: {ran}"
        print(f"10 calls, 3 copies each: {len(ran)} copies ran, on {len({w for w, _ in ran})} "
              "workers")
    finally:
        sclient.delete_dag(dag)


def test_copies_finishing_together_give_one_outcome_and_one_downstream_run(
        spec_cluster: Cluster, sclient: Any, unique: str) -> None:
    """Every copy sleeps until the same instant and returns a valid result: the race is as
    tight as it gets, and each call still runs `after` once."""

    def spec(lib: Any, x: int, at: float) -> Any:
        import time as t

        t.sleep(max(0.0, at - t.time()))
        return (x, lib.getid())

    sclient.register(spec, unique + "-spec")
    sclient.register(_after(unique + "-runs"), unique + "-after")
    dag = unique + "-dag"
    assert sclient.register_dag(dag, [(unique + "-spec", [], 3), unique + "-after"],
                                [(unique + "-spec", unique + "-after")]) == (True, None)
    try:
        winners = set()
        for i in range(12):
            at = time.time() + 0.3
            future = sclient.call_dag(dag, {unique + "-spec": [i, at],
                                            unique + "-after": [f"t{i}"]})
            x, winner = future.get(timeout=20)
            assert x == i
            winners.add(winner)
        time.sleep(1.0)  # time for any second result to arrive downstream
        runs = sclient.get_object(unique + "-runs")
        assert sorted(runs) == sorted(f"t{i}" for i in range(12)), f"one run each: {runs}"
        print(f"12 tight races: one downstream run each; winners seen on {len(winners)} workers")
    finally:
        sclient.delete_dag(dag)


def test_many_calls_at_once_each_send_one_result_on(sclient: Any, unique: str) -> None:
    """40 calls in flight at once, three quick copies each: copies of different calls
    interleave on every worker and finish close together; each call still has one result and
    one downstream run."""
    dag, s, a = _speculative_dag(sclient, unique, lambda lib, x: (x, lib.getid()), invalid=[],
                                 copies=3)
    try:
        futures = [sclient.call_dag(dag, {s: [i], a: [f"t{i}"]}) for i in range(40)]
        assert [f.get(timeout=60)[0] for f in futures] == list(range(40))
        time.sleep(1.0)
        runs = sclient.get_object(unique + "-runs")
        assert sorted(runs) == sorted(f"t{i}" for i in range(40)), "one downstream run each"
    finally:
        sclient.delete_dag(dag)


def test_a_speculative_step_downstream_and_among_several_sinks(sclient: Any,
                                                                unique: str) -> None:
    u = unique
    sclient.register(lambda lib, x: x + 1, u + "-first")
    sclient.register(lambda lib, x: ("spec", x), u + "-spec")
    sclient.register(lambda lib, x: ("other", x), u + "-other")
    dag = u + "-dag"
    assert sclient.register_dag(dag, [u + "-first", (u + "-spec", [], 2), u + "-other"], [
        (u + "-first", u + "-spec"), (u + "-first", u + "-other")]) == (True, None)
    try:
        for i in range(5):
            assert sclient.call_dag(dag, {u + "-first": [i]}, direct_response=True,
                                    timeout=20) == {u + "-spec": ("spec", i + 1),
                                                    u + "-other": ("other", i + 1)}
    finally:
        sclient.delete_dag(dag)


def test_a_multi_call_commits_only_the_winners_writes(spec_cluster: Cluster, sclient: Any,
                                                      unique: str) -> None:
    """In a MULTI call each copy's writes are buffered: only the winning copy's travel on and
    commit with the outcome; a losing copy's writes vanish with it."""
    bad_key, out_key = unique + "-bad", unique + "-written"

    def spec(lib: Any, x: int) -> Any:
        me = lib.getid()
        lib.put(out_key, me)
        return None if me == lib.get(bad_key) else me

    dag, s, a = _speculative_dag(sclient, unique, spec, invalid=[None], copies=2)
    try:
        pinned = _pinned(spec_cluster, dag, s)
        sclient.put_object(bad_key, pinned)
        for i in range(5):
            winner = sclient.call_dag(dag, {s: [i], a: [f"t{i}"]}, consistency=droplet.MULTI,
                                      direct_response=True, timeout=20)
            assert winner != pinned
            assert sclient.get_object(out_key) == winner, "only the winner's write committed"
    finally:
        sclient.delete_dag(dag)


def test_every_copy_invalid_fails_the_call_with_a_clear_error(sclient: Any,
                                                               unique: str) -> None:
    dag, s, a = _speculative_dag(sclient, unique, lambda lib, x: -1, invalid=[-1], copies=2)
    try:
        with pytest.raises(droplet.ExecutionError, match="every copy"):
            sclient.call_dag(dag, {s: [1], a: ["t"]}, direct_response=True, timeout=20)
        with pytest.raises(droplet.ExecutionError, match="every copy"):
            sclient.call_dag(dag, {s: [1], a: ["t"]}).get(timeout=20)
        assert sclient.get_object(unique + "-runs") is None, "nothing ran downstream"
    finally:
        sclient.delete_dag(dag)


def test_a_copy_that_fails_loses_to_one_that_does_not(spec_cluster: Cluster, sclient: Any,
                                                       unique: str) -> None:
    bad_key = unique + "-bad"

    def spec(lib: Any, x: int) -> int:
        if lib.getid() == lib.get(bad_key):
            raise RuntimeError("this copy breaks")
        return x + 1

    dag, s, a = _speculative_dag(sclient, unique, spec, invalid=[], copies=2)
    try:
        sclient.put_object(bad_key, _pinned(spec_cluster, dag, s))
        assert sclient.call_dag(dag, {s: [1], a: ["t"]}, direct_response=True,
                                timeout=20) == 2
    finally:
        sclient.delete_dag(dag)


def test_a_losing_copy_still_running_is_interrupted(spec_cluster: Cluster, sclient: Any,
                                                    unique: str) -> None:
    """The pinned worker's copy would sleep 60 s; another copy wins as soon as it runs, and
    the slow one is interrupted: it records that it was (only an interruption writes that)."""
    slow_key, mark_key = unique + "-slow", unique + "-interrupted"

    def spec(lib: Any, x: int) -> int:
        import time as t

        if lib.getid() == lib.get(slow_key):
            lib.put(mark_key, "started")
            try:
                t.sleep(60)
            except BaseException:
                lib.put(mark_key, lib.getid())
                raise
        waited = t.monotonic()
        while lib.get(mark_key) is None and t.monotonic() - waited < 20:
            t.sleep(0.02)  # the fast copy wins only once the slow one runs
        return x

    dag, s, a = _speculative_dag(sclient, unique, spec, invalid=[], copies=2)
    try:
        slow = _pinned(spec_cluster, dag, s)
        sclient.put_object(slow_key, slow)
        started = time.monotonic()
        assert sclient.call_dag(dag, {s: [3], a: ["t"]}, direct_response=True,
                                timeout=20) == 3
        while sclient.get_object(mark_key) in (None, "started"):
            assert time.monotonic() - started < 45, "the losing copy was not interrupted"
            time.sleep(0.1)
        assert sclient.get_object(mark_key) == slow
        print(f"losing copy interrupted {time.monotonic() - started:.2f}s after the call")
    finally:
        sclient.delete_dag(dag)


@pytest.mark.fault
def test_a_worker_killed_while_running_a_copy_leaves_one_outcome(
        services: Services, tmp_path: Any, unique: str) -> None:
    """Three copies of a 2 s step; the worker of one extra copy is killed (kill -9) while it
    runs. The call answers once with a valid result, `after` runs once, and once the dead
    worker's trigger has been moved and handled again (the race is decided: it does not run)
    nothing more happens."""
    settings = services.settings(worker_lease_ttl_s=2, status_interval_s=0.5)
    cluster = start_cluster(settings, tmp_path, workers=4)
    try:
        with droplet.connect(settings=settings) as client:
            started_key = unique + "-started"

            def spec(lib: Any, x: int) -> Any:
                import time as t

                lib.put(f"{started_key}-{lib.getid()}", t.time())
                t.sleep(2.0)
                return x * 3

            dag, s, a = _speculative_dag(client, unique, spec, invalid=[None], copies=3)
            pinned = {_pinned(cluster, dag, s), _pinned(cluster, dag, a)}
            statuses = collect(settings)["workers"]
            extra = [w for w in statuses if w["id"] not in pinned]
            assert len(extra) == 2, "two free workers run the extra copies"
            future = client.call_dag(dag, {s: [7], a: ["t"]})
            victim = extra[0]
            deadline = time.monotonic() + 20
            while client.get_object(f"{started_key}-{victim['id']}") is None:
                assert time.monotonic() < deadline, "the victim never started its copy"
                time.sleep(0.05)
            os.kill(victim["pid"], signal.SIGKILL)
            assert future.get(timeout=30) == 21
            pinned_runs = {w: client.get_object(f"{started_key}-{w}") for w in pinned}
            # The victim's unacked trigger is moved once its lease ends (2 s) and handled by
            # the step's pinned worker, which finds the race decided.
            deadline = time.monotonic() + 30
            while victim["id"] in {w["id"] for w in collect(settings)["workers"]}:
                assert time.monotonic() < deadline, "the victim never left the fleet"
                time.sleep(0.2)
            time.sleep(4.0)  # its queue reaped, its trigger moved and handled
            assert client.get_object(unique + "-runs") == ["t"], "after ran exactly once"
            assert pinned_runs == {w: client.get_object(f"{started_key}-{w}") for w in pinned}, (
                "the moved copy found the race decided and did not run again")
            again = client.call_dag(dag, {s: [8], a: ["t2"]}, direct_response=True, timeout=30)
            assert again == 24, "the DAG serves on with a worker fewer"
            print(f"killed {victim['id']} mid-copy: one outcome, one downstream run")
    finally:
        cluster.stop()
