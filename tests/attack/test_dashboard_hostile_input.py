"""The dashboard against hostile input, in process (an in-memory etcd and broker): whatever
comes in a query, a form, an etcd record or a dead letter, a page answers 200 or 400 with a
reason, never 500 or a hang, shows what it cannot decode instead of stopping, escapes what it
shows, and cannot be read or driven by another site. The operator commands' side is in
test_operator_commands_hostile_input.py."""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import Any

import pytest

from droplet.broker.stub import StubBroker
from droplet.broker_config.names import DEAD_FROM_HEADER, DEAD_REASON_HEADER, QueueNames
from droplet.dashboard.app import Dashboard
from droplet.dashboard.dead_letters import DeadLetters
from droplet.dashboard.guard import BadInput, Guard, Refused
from droplet.dashboard.sampler import Sampler
from droplet.proto import pb
from droplet.settings import Settings
from droplet.signing import Signer
from droplet.store.keys import StoreKeys
from tests.attack.dashboard_board import (
    ODD_HEADERS,
    TOKEN,
    AmqpNames,
    Board,
    TestClient,
    dead_letter,
    fleet_with_garbage,
)


@pytest.mark.parametrize("raw", ["\u00b2", "\u2460", "9" * 5000])
def test_a_number_that_is_digits_but_not_a_number_is_refused_with_400(board: Board,
                                                                     raw: str) -> None:
    # "²" and "①" are digits to str.isdigit() but not to int(); 5000 digits are past int()'s
    # limit on conversions. Each was a 500 page.
    for page, name in (("/calls", "limit"), ("/errors", "limit"), ("/plots", "minutes")):
        answer = board.http.get(page, params={name: raw})
        assert answer.status_code == 400, (page, raw[:5], answer.status_code)
        assert "must be a whole number" in answer.text


@pytest.mark.parametrize("raw", ["\u00b2", "\u2460"])
def test_a_confirmation_whose_expiry_is_not_a_plain_number_is_refused_with_400(
        board: Board, raw: str) -> None:
    with pytest.raises(BadInput, match="bad confirmation"):
        Guard(TOKEN).redeem("purge", "all", raw, "0" * 64)
    answer = board.http.post("/dead-letters/confirm", data={
        "action": "purge", "target": "all", "expires": raw, "ticket": "0" * 64})
    assert answer.status_code == 400 and "bad confirmation" in answer.text


def test_dead_letters_with_odd_headers_are_listed_escaped_and_can_be_purged(
        board: Board) -> None:
    # Headers travel from whoever published the message (x-death is only RabbitMQ's when
    # RabbitMQ dead-lettered it): a string x-death or a header that is not UTF-8 was a 500
    # on the page, and, because each letter is described before it is acted on, it made
    # "purge all" fail too: one such message blocked the dead-letter queue for good.
    for headers in ODD_HEADERS:
        dead_letter(board, b"<script>alert(1)</script>", headers)
    page = board.http.get("/dead-letters")
    assert page.status_code == 200, page.text[-300:]
    assert "<b>queue</b>" not in page.text and "&lt;b&gt;queue&lt;/b&gt;" in page.text
    assert "<i>why</i>" not in page.text
    ask = board.http.post("/dead-letters/action",
                          data={"token": TOKEN, "action": "purge", "target": "all"})
    assert ask.status_code == 200, ask.text[-300:]
    form = dict(re.findall(r'name="(\w+)" value="([^"]*)"', ask.text))
    done = board.http.post("/dead-letters/confirm", data=form)
    assert done.status_code == 200, done.text[-300:]
    assert board.broker.queue_depth(board.names.dead) == 0


def test_a_garbage_record_in_etcd_does_not_freeze_the_dashboard(board: Board) -> None:
    # sample() raised DecodeError: the sampler thread logged it and kept the old snapshot, so
    # the pages said "etcd up" while showing nothing new, for as long as the key stayed.
    fleet_with_garbage(board.kv, board.sampler.settings)
    snapshot = board.sampler.sample()
    assert snapshot.etcd.up
    assert [w.id for w in snapshot.workers] == ["good"]
    assert [d.name for d in snapshot.dags] == ["d"]
    for page in ("/", "/functions", "/api/status"):
        assert board.http.get(page).status_code == 200, page


def test_a_confirmation_acts_once(board: Board) -> None:
    # The ticket was good for five minutes, as often as it was sent: a double click, a reload
    # that resubmits, or the back button purged or requeued again, now acting on letters that
    # died since (a requeued letter that died again went round once more) and that the
    # confirmation page never showed.
    dead_letter(board, b"first", {DEAD_FROM_HEADER: "hostile.q", DEAD_REASON_HEADER: "x"})
    ask = board.http.post("/dead-letters/action",
                          data={"token": TOKEN, "action": "purge", "target": "all"})
    form = dict(re.findall(r'name="(\w+)" value="([^"]*)"', ask.text))
    assert board.http.post("/dead-letters/confirm", data=form).status_code == 200
    dead_letter(board, b"second, never shown", {DEAD_FROM_HEADER: "hostile.q"})
    again = board.http.post("/dead-letters/confirm", data=form)
    assert again.status_code == 403 and "used already" in again.text
    assert board.broker.queue_depth(board.names.dead) == 1


def test_a_ticket_is_redeemed_once_and_forgotten_when_it_expires() -> None:
    guard = Guard(TOKEN)
    ticket = guard.ticket("purge", "all", now=1000.0)
    guard.redeem("purge", "all", str(ticket.expires), ticket.mac, now=1001.0)
    with pytest.raises(Refused, match="used already"):
        guard.redeem("purge", "all", str(ticket.expires), ticket.mac, now=1002.0)
    other = guard.ticket("purge", "all", now=1001.0)  # asked again: a new ticket works
    guard.redeem("purge", "all", str(other.expires), other.mac, now=1003.0)
    guard.ticket("requeue", "all", now=5000.0)
    guard.redeem("requeue", "all", str(5000 + 300), guard.ticket("requeue", "all", 5000.0).mac,
                 now=5000.0)
    assert len(guard._used) == 1, "expired tickets are forgotten"


def test_a_loopback_dashboard_answers_only_requests_addressed_to_localhost(
        board: Board) -> None:
    # DNS rebinding: a web page whose name the attacker makes resolve to 127.0.0.1 is, to the
    # browser, the dashboard's origin; its script read every page (fleet, errors,
    # tracebacks). Its requests name the page's host, which a loopback dashboard now refuses.
    dead = DeadLetters(board.broker.connect, board.names, Signer(None))
    app = Dashboard(board.sampler, dead, Guard(TOKEN), loopback_only=True).app
    for base, allowed in (("http://127.0.0.1:8375", True), ("http://localhost:8375", True),
                          ("http://[::1]:8375", True), ("http://127.0.0.1", True),
                          ("http://rebound.attacker.example:8375", False),
                          ("http://10.0.0.5:8375", False), ("http://127.0.0.1.nip.io", False)):
        with TestClient(app, base_url=base, raise_server_exceptions=False) as http:
            for path in ("/", "/errors", "/api/status", "/static/live.js"):
                answer = http.get(path)
                assert (answer.status_code == 200) is allowed, (base, path, answer.status_code)
            refused = http.post("/dead-letters/action",
                                data={"token": TOKEN, "action": "purge", "target": "all"})
            assert (refused.status_code == 400) is not allowed, (base, refused.status_code)


def test_droplet_dashboard_on_loopback_refuses_a_rebound_host(tmp_path: Path) -> None:
    """The command as a user starts it (no etcd or RabbitMQ needed to answer pages)."""
    from tests.e2e.dashboard_support import DashboardProcess

    settings = Settings(namespace="hostile", broker_url="amqp://guest:guest@127.0.0.1:1/",
                        etcd_endpoints=("127.0.0.1:1",), dashboard_token=TOKEN)
    board = DashboardProcess(settings, tmp_path / "dashboard.log").wait_ready()
    try:
        assert board.http.get("/api/status").status_code == 200
        rebound = board.http.get("/api/status", headers={"host": "attacker.example"})
        assert rebound.status_code == 400 and "localhost" in rebound.text
    finally:
        board.stop()


def test_purging_all_of_more_than_one_action_takes_says_that_some_are_left(
        board: Board) -> None:
    # The confirmation promised "each of these (and the others of the N in the queue)", the
    # action stopped at ACTED_ON letters and said only "Purged 1000": the rest went unsaid.
    from droplet.dashboard.dead_letters import ACTED_ON

    conn = board.broker.connect()
    for i in range(ACTED_ON + 5):
        conn.publish(board.names.dead, b"%d" % i, headers={DEAD_FROM_HEADER: "hostile.q"})
    ask = board.http.post("/dead-letters/action",
                          data={"token": TOKEN, "action": "purge", "target": "all"})
    form = dict(re.findall(r'name="(\w+)" value="([^"]*)"', ask.text))
    done = board.http.post("/dead-letters/confirm", data=form)
    assert f"Purged {ACTED_ON} dead letter" in done.text
    assert board.broker.queue_depth(board.names.dead) == 5
    assert "5 more" in done.text, done.text[-600:]


XSS = "<img src=x onerror=alert(1)>\"'</textarea></script><svg onload=alert(2)>"


def test_every_name_and_text_from_etcd_is_escaped_on_every_page(board: Board) -> None:
    """Names are checked when registered, but etcd records (a worker's status, its recent
    calls with errors and tracebacks, a DAG, a pin) can hold anything: written by hand, by
    an older version, or by a function that raises with hostile text."""
    import time

    keys = StoreKeys(board.sampler.settings.etcd_prefix)
    now = time.time()
    kv = board.kv
    kv.put(keys.worker("w"), pb.WorkerStatus(
        id="w" + XSS, host=XSS, incarnation=XSS, resources={XSS: 1.0},
        started_at=now).SerializeToString())
    kv.put(keys.scheduler("s"), pb.SchedulerStatus(id=XSS, host=XSS).SerializeToString())
    kv.put(keys.pin("w" + XSS), pb.PinRecord(dag_name=XSS, function_name=XSS,
                                             worker_id="w" + XSS).SerializeToString())
    dag = pb.Dag(name="d" + XSS, functions=["f" + XSS, "g" + XSS])
    dag.connections.add(source="f" + XSS, sink="g" + XSS)
    kv.put(keys.dag("d"), pb.DagRecord(dag=dag, ready=False).SerializeToString())
    kv.put(keys.placement("d" + XSS, "f" + XSS), ("w" + XSS).encode())
    kv.put(keys.function("f" + XSS), b"x")
    record = pb.RecentCalls(worker_id="w" + XSS, incarnation=XSS, started_at=now - 60,
                            published_at=now - 30, bucket_bounds_s=[0.1], interval_s=1.0)
    record.calls.add(seq=1, call_id=XSS, function="f" + XSS, started_at=now - 31,
                     status=pb.INVALID_REQUEST, error=XSS, traceback=XSS, exception_type=XSS)
    record.totals.add(function="f" + XSS, calls=1, errors=1, run_s=0.01, buckets=[1, 0])
    kv.put(keys.recent + "w", record.SerializeToString())
    board.sampler.sample()
    record.published_at = now - 10
    record.totals[0].calls = 5
    kv.put(keys.recent + "w", record.SerializeToString())
    board.sampler.sample()
    dead_letter(board, XSS.encode(), {DEAD_FROM_HEADER: XSS, DEAD_REASON_HEADER: XSS})
    for page in ("/", "/queues", "/functions", "/calls", "/errors", "/plots", "/dead-letters",
                 "/calls?fragment=1", "/errors?fragment=1", "/plots?minutes=15"):
        answer = board.http.get(page)
        assert answer.status_code == 200, (page, answer.text[-300:])
        for raw in ("<img", "<svg onload", "</script><", "</textarea>"):
            assert raw not in answer.text, (page, raw)
        if page in ("/", "/functions", "/calls", "/errors", "/dead-letters"):
            assert "&lt;img src=x" in answer.text, f"{page} shows the text, escaped"
    assert 'class="dag"' in board.http.get("/functions").text, "the DAG was drawn"
    assert XSS in board.http.get("/api/status").json()["workers"][0]["id"]


@pytest.mark.parametrize("odd", [math.inf, -math.inf, math.nan, 1e300])
def test_a_record_with_an_impossible_number_neither_stops_nor_breaks_the_dashboard(
        board: Board, odd: float) -> None:
    """Times and loads in etcd records are a worker's floats: infinite, NaN or absurd (a
    clock years off). An infinite one raised in the sampler (frozen, as with garbage bytes),
    a far one spread its calls over millions of chart bins (the sampler hung), and on the
    pages a time past what the C library takes, or an infinite load, was a 500."""
    import time

    keys = StoreKeys(board.sampler.settings.etcd_prefix)
    now = time.time()
    board.kv.put(keys.worker("w"), pb.WorkerStatus(id="w", utilisation=odd, started_at=odd,
                                                   updated_at=odd).SerializeToString())
    record = pb.RecentCalls(worker_id="w", incarnation="a", started_at=now - 5,
                            published_at=now - 4, bucket_bounds_s=[0.1], interval_s=1.0)
    record.calls.add(seq=1, call_id="c", function="f", started_at=odd, status=pb.NO_ERROR)
    record.calls.add(seq=2, call_id="d", function="f", started_at=odd, status=pb.INVALID_REQUEST,
                     error="e")
    record.calls[0].stages.run_s = odd
    record.totals.add(function="f", calls=1, run_s=0.1, buckets=[1, 0])
    board.kv.put(keys.recent + "w", record.SerializeToString())
    board.sampler.sample()
    record.published_at = odd if odd != 1e300 else now + 3 * 365 * 86400
    record.totals[0].calls = 5
    board.kv.put(keys.recent + "w", record.SerializeToString())
    started = time.monotonic()
    snapshot = board.sampler.sample()
    assert time.monotonic() - started < 2, "the sampler took seconds over one record"
    assert snapshot.taken_at >= now and [w.id for w in snapshot.workers] == ["w"]
    for page in ("/", "/calls", "/errors", "/plots", "/functions", "/api/status"):
        answer = board.http.get(page)
        assert answer.status_code == 200, (page, odd)


def test_calls_of_a_worker_idle_for_weeks_are_spread_quickly() -> None:
    """A worker writes its record only while calls run: one that started weeks ago under
    this dashboard and runs its first calls now has them spread over weeks of 5-second bins
    (half a million for a month: the sampler spent seconds per worker, every sample); only the
    bins of the last window are kept, as they were after the trim anyway."""
    import time

    from droplet.dashboard.history import FunctionHistory

    now = 2_000_000_000.0
    month = 30 * 86400.0
    history = FunctionHistory(watching_since=now - 2 * month)
    record = pb.RecentCalls(worker_id="w", incarnation="a", started_at=now - month,
                            published_at=now, bucket_bounds_s=[0.1], interval_s=1.0)
    record.totals.add(function="f", calls=int(month), buckets=[int(month), 0])
    started = time.monotonic()
    history.add(record, now + 1)
    assert time.monotonic() - started < 0.5
    summary = history.summary("f", now - 60)
    assert summary is not None and summary.calls_per_s == pytest.approx(1.0, rel=0.01)


def test_a_long_chain_listed_sink_first_is_drawn(board: Board) -> None:
    """Layers were found by recursion: a chain of some 330 functions listed from its sink (a
    DAG whose record sits in etcd while it is being created, or one written there) raised
    RecursionError, and the Functions & DAGs page was a 500 for as long as it existed."""
    from droplet.dashboard.svg import layers

    functions = [f"f{i}" for i in range(2000)]
    edges = list(itertools.pairwise(functions))
    assert layers(functions[::-1], edges) == [[f] for f in functions]
    cycle = layers(["a", "b", "c"], [("a", "b"), ("b", "c"), ("c", "a")])
    assert sorted(f for layer in cycle for f in layer) == ["a", "b", "c"], "a cycle ends"
    dag = pb.Dag(name="long", functions=functions[::-1])
    for source, sink in edges:
        dag.connections.add(source=source, sink=sink)
    keys = StoreKeys(board.sampler.settings.etcd_prefix)
    board.kv.put(keys.dag("long"), pb.DagRecord(dag=dag).SerializeToString())
    board.sampler.sample()
    assert board.http.get("/functions").status_code == 200


def test_no_answer_can_be_framed_by_another_site(board: Board) -> None:
    # Framed invisibly over a decoy (clickjacking), the dead-letter form could have the
    # operator type the token and click purge; nothing forbade framing, on any answer.
    answers = [board.http.get(path) for path in
               ("/", "/dead-letters", "/static/live.js", "/no-such-page", "/calls?limit=x")]
    answers.append(board.http.post("/dead-letters/action", data={"action": "purge"}))
    for answer in answers:
        policy = answer.headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in policy, (answer.url, answer.status_code)
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy.split(
            "script-src")[1].split(";")[0]
        assert answer.headers.get("x-frame-options") == "DENY"


def test_page_views_while_rabbitmq_does_not_answer_share_one_attempt() -> None:
    """The Dead letters page reads the queue when a view asks (cached 3 s). With RabbitMQ not
    answering, each view tried again, taking the connect timeout (5 s), one after another
    behind the broker lock: ten views at once (tabs refreshing, or anyone who can reach the
    page) waited 5, 10, ... 50 s and held the server's threads meanwhile. A failure is
    cached like a listing, and views that waited on the lock take what the one before read."""
    import threading
    import time

    from droplet.errors import BrokerError

    attempts: list[float] = []

    def silent() -> Any:
        attempts.append(time.monotonic())
        time.sleep(0.3)  # the connect timeout, shortened
        raise BrokerError("no answer within 5s")

    dead = DeadLetters(silent, QueueNames.of(Settings(namespace="hostile")), Signer(None))
    failures: list[str] = []

    def view() -> None:
        try:
            dead.listing()
        except BrokerError as exc:
            failures.append(str(exc))

    views = [threading.Thread(target=view) for _ in range(10)]
    started = time.monotonic()
    for thread in views:
        thread.start()
    for thread in views:
        thread.join()
    assert len(failures) == 10, "every view says RabbitMQ is unavailable"
    assert len(attempts) == 1 and time.monotonic() - started < 1.5
    broker = StubBroker()
    names = QueueNames.of(Settings(namespace="hostile"))
    broker.declare_queue(names.dead)
    reads: list[int] = []

    def counted() -> Any:
        reads.append(1)
        return broker.connect()

    dead = DeadLetters(counted, names, Signer(None))
    views = [threading.Thread(target=dead.listing) for _ in range(10)]
    for thread in views:
        thread.start()
    for thread in views:
        thread.join()
    assert len(reads) == 1, "views waiting on the lock took the listing just read"


def test_pages_name_their_files_by_path_not_by_the_host_asked_for(board: Board) -> None:
    # The stylesheet and script were absolute URLs built from the request's Host and scheme:
    # behind a TLS proxy that uvicorn does not trust for X-Forwarded-Proto (any proxy not on
    # 127.0.0.1), an https page named http:// files, which browsers block (no style, no live
    # refresh); and whatever Host a request claimed went into the page.
    page = board.http.get("/", headers={"host": "evil.example"}).text
    assert 'src="/static/live.js"' in page and 'href="/static/dashboard.css"' in page
    assert "evil.example" not in page and "http://" not in page


def test_the_functions_a_worker_counts_together_can_be_chosen(board: Board) -> None:
    """A worker that ran more than 500 functions counts the rest together as "(other)"; the
    Plots page offered it in its menu and Functions linked to it, and choosing it was a 400
    ("function must be a function name")."""
    import time

    from droplet.worker.recorder import OTHER_FUNCTIONS

    keys = StoreKeys(board.sampler.settings.etcd_prefix)
    now = time.time()
    record = pb.RecentCalls(worker_id="w", incarnation="a", started_at=now - 5,
                            published_at=now - 4, bucket_bounds_s=[0.1], interval_s=1.0)
    record.totals.add(function=OTHER_FUNCTIONS, calls=1, run_s=0.1, buckets=[1, 0])
    board.kv.put(keys.recent + "w", record.SerializeToString())
    board.sampler.sample()
    record.published_at, record.totals[0].calls = now - 1, 9
    board.kv.put(keys.recent + "w", record.SerializeToString())
    board.sampler.sample()
    assert OTHER_FUNCTIONS in board.http.get("/functions").text
    for page in ("/plots", "/calls", "/errors"):
        answer = board.http.get(page, params={"function": OTHER_FUNCTIONS})
        assert answer.status_code == 200, (page, answer.text[-300:])


def test_a_worker_id_too_long_for_a_queue_name_does_not_freeze_the_sampler(
        board: Board) -> None:
    """The sampler asks RabbitMQ for each live worker's queues: a status record whose id
    makes a queue name over 255 bytes raised ValueError there, and the dashboard froze."""
    sampler = Sampler(board.sampler.settings, lambda: board.kv,
                      lambda: AmqpNames(board.broker))  # type: ignore[arg-type,return-value]
    keys = StoreKeys(board.sampler.settings.etcd_prefix)
    long_id = "w" * 250
    board.kv.put(keys.worker(long_id), pb.WorkerStatus(id=long_id).SerializeToString())
    snapshot = sampler.sample()
    assert snapshot.broker.up and [w.id for w in snapshot.workers] == [long_id]
