"""`droplet dashboard` over HTTP against a running cluster: what its pages show, what workers
record for it, how it refuses bad input and actions without the token, and how it shows etcd
and RabbitMQ going away and coming back."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import droplet
from droplet.broker_config.names import QueueNames
from droplet.cli.etcd_local import LocalEtcd
from droplet.proto import pb
from droplet.runtime import open_kv
from droplet.store.keys import StoreKeys
from tests.conftest import Cluster, Services, client_fixture, cluster_fixture
from tests.e2e.dashboard_support import (
    DashboardProcess,
    TcpProxy,
    declare_holding_queue,
    delete_queue,
    make_dead_letter,
    queue_depth,
)

pytestmark = pytest.mark.e2e

TOKEN = "e2e-dashboard-token"
PAGES = ("/", "/queues", "/functions", "/calls", "/errors", "/plots", "/dead-letters")

board_cluster = cluster_fixture(workers=2, worker_lease_ttl_s=3, status_interval_s=0.5)
board_client = client_fixture("board_cluster")


@pytest.fixture(scope="module")
def dashboard(board_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[DashboardProcess]:
    settings = board_cluster.settings.with_(dashboard_token=TOKEN)
    board = DashboardProcess(settings, tmp_path_factory.mktemp("dash") / "dashboard.log")
    try:
        yield board.wait_ready()
    finally:
        board.stop()


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text and 'File "' not in text, text[:500]


def test_every_page_loads_and_shows_the_live_fleet(board_cluster: Cluster,
                                                   dashboard: DashboardProcess) -> None:
    ids = board_cluster.worker_ids()
    status = dashboard.wait_for(
        lambda s: {w["id"] for w in s["workers"] if w["alive"]} >= set(ids) and s["schedulers"],
        15, "both workers and the scheduler listed alive")
    assert status["etcd"]["up"] and status["broker"]["up"]
    names = QueueNames(board_cluster.settings.namespace)
    assert status["queues"][names.work] == 0 and status["queues"][names.worker(ids[0])] == 0
    for path in PAGES:
        page = dashboard.http.get(path)
        assert page.status_code == 200, (path, page.text[:300])
        assert "etcd" in page.text and "Dead letters" in page.text
        fragment = dashboard.http.get(path, params={"fragment": "1"})
        assert fragment.status_code == 200 and "<nav>" not in fragment.text
    fleet = dashboard.http.get("/").text
    for worker in ids:
        assert re.search(rf'data-worker="{worker}">.*?alive', fleet, re.S), worker


def test_calls_arrive_with_their_ids_workers_and_errors_with_tracebacks(
        board_client: Any, board_cluster: Cluster, dashboard: DashboardProcess,
        unique: str) -> None:
    incr = board_client.register(lambda lib, x: x + 1, unique)
    futures = [incr(i) for i in range(20)]
    assert [f.get(timeout=20) for f in futures] == list(range(1, 21))

    def fails(lib: Any) -> None:
        return {}["missing-" + lib.getid()]  # type: ignore[no-any-return]

    failing = board_client.register(fails, unique + "-bad")
    bad = failing()
    with pytest.raises(droplet.ExecutionError):
        bad.get(timeout=20)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        calls = dashboard.http.get("/calls", params={"function": unique, "limit": "100"}).text
        if all(f.call_id[:12] in calls for f in futures):
            break
        time.sleep(0.3)
    # A run published before its outcome was stored gets its id from a later record.
    assert all(f.call_id[:12] in calls for f in futures), "every call listed by its call id"
    assert any(worker in calls for worker in board_cluster.worker_ids())
    errors = dashboard.http.get("/errors", params={"function": unique + "-bad"}).text
    assert "KeyError" in errors and "Traceback (most recent call last)" in errors
    assert bad.call_id in errors and "missing-" in errors

    # What the workers publish: a bounded record per worker, with call ids and run times.
    kv = open_kv(board_cluster.settings)
    try:
        keys = StoreKeys(board_cluster.settings.etcd_prefix)
        records = [pb.RecentCalls.FromString(raw)
                   for raw in kv.get_prefix(keys.recent)[0].values()]
    finally:
        kv.close()
    recorded = {c.call_id: c for r in records for c in r.calls}
    assert {f.call_id for f in futures} <= set(recorded)
    assert all(recorded[f.call_id].stages.HasField("run_s") for f in futures)
    assert recorded[bad.call_id].status == pb.EXECUTION_ERROR
    assert {r.worker_id for r in records} <= set(board_cluster.worker_ids())

    # ... and the plots draw the function's throughput once a bin is complete.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        plots = dashboard.http.get("/plots", params={"function": unique, "minutes": "1"}).text
        if "polyline" in plots:
            break
        time.sleep(0.5)
    assert "polyline" in plots and f"{unique}: calls and errors per second" in plots


def _page_showing(dashboard: DashboardProcess, path: str, text: str,
                  timeout_s: float = 10.0) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        page = dashboard.http.get(path).text
        if text in page or time.monotonic() > deadline:
            return page
        time.sleep(0.3)


BAD_QUERIES = [
    ("/calls", {"limit": "abc"}, "limit must be a whole number"),
    ("/calls", {"limit": "0"}, "limit must be a whole number"),
    ("/calls", {"status": "maybe"}, "status must be one of"),
    ("/calls", {"function": "<script>"}, "function must be a function name"),
    ("/errors", {"limit": "-1"}, "limit must be a whole number"),
    ("/plots", {"minutes": "99"}, "minutes must be a whole number from 1 to 15"),
    ("/", {"bogus": "1"}, "unknown query parameter"),
    ("/queues", {"fragment": "2"}, "fragment must be 1"),
]


def test_bad_input_to_every_page_and_form_is_refused_with_400_and_a_reason(
        dashboard: DashboardProcess) -> None:
    for path, params, reason in BAD_QUERIES:
        answer = dashboard.http.get(path, params=params)
        assert answer.status_code == 400, (path, params)
        assert reason in answer.text, (path, params, answer.text[:300])
        _no_traceback(answer.text)
    repeated = dashboard.http.get("/calls?limit=5&limit=6")
    assert repeated.status_code == 400 and "more than once" in repeated.text
    forms = [
        ("/dead-letters/action", {"token": TOKEN, "action": "delete", "target": "all"},
         "action must be requeue or purge"),
        ("/dead-letters/action", {"token": TOKEN, "action": "purge", "target": "../x"},
         "target must be 'all' or a dead letter's id"),
        ("/dead-letters/action", {"token": TOKEN, "action": "purge", "target": "all",
                                  "extra": "1"}, "unknown form field"),
        ("/dead-letters/action", {"token": "x" * 600, "action": "purge", "target": "all"},
         "too long"),
        ("/dead-letters/confirm", {"action": "purge", "target": "all", "expires": "soon",
                                   "ticket": "0" * 64}, "bad confirmation"),
        ("/dead-letters/confirm", {"action": "purge", "target": "all", "expires": "1",
                                   "ticket": "<b>"}, "bad confirmation"),
    ]
    for path, data, reason in forms:
        answer = dashboard.http.post(path, data=data)
        assert answer.status_code == 400, (path, data, answer.text[:300])
        assert reason in html.unescape(answer.text)
        _no_traceback(answer.text)
    as_json = dashboard.http.post("/dead-letters/action", json={"action": "purge"})
    assert as_json.status_code == 400 and "expected a form" in as_json.text
    missing = dashboard.http.get("/no-such-page")
    assert missing.status_code == 404
    _no_traceback(missing.text)
    assert dashboard.http.get("/dead-letters/action").status_code == 405


def test_a_requeue_needs_the_token_then_a_confirmation_then_moves_the_letter_back(
        board_cluster: Cluster, dashboard: DashboardProcess, unique: str) -> None:
    settings = board_cluster.settings
    names = QueueNames(settings.namespace)
    holding = f"{settings.namespace}.holding-{unique}"
    declare_holding_queue(settings, holding)
    try:
        make_dead_letter(settings, holding, "crashed its handler (test)", unique)
        page = _page_showing(dashboard, "/dead-letters", holding)  # listings are cached 3 s
        assert holding in page and f"call {unique}" in page and "crashed its handler" in page
        letter = re.search(r'data-pick="([0-9a-f]{12})"', page)
        assert letter is not None
        ask = {"action": "requeue", "target": letter.group(1)}
        refused = dashboard.http.post("/dead-letters/action", data=ask)
        assert refused.status_code == 403 and "needs the dashboard token" in refused.text
        wrong = dashboard.http.post("/dead-letters/action", data={**ask, "token": "guess"})
        assert wrong.status_code == 403 and "wrong dashboard token" in wrong.text
        confirm_page = dashboard.http.post("/dead-letters/action", data={**ask, "token": TOKEN})
        assert confirm_page.status_code == 200 and "Yes, requeue" in confirm_page.text
        assert TOKEN not in confirm_page.text, "the confirmation carries a ticket, not the token"
        assert queue_depth(settings, names.dead) == 1, "asking changed nothing yet"
        fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', confirm_page.text))
        tampered = dashboard.http.post("/dead-letters/confirm", data={**fields, "target": "all"})
        assert tampered.status_code == 403 and "not for this action" in tampered.text
        done = dashboard.http.post("/dead-letters/confirm", data=fields)
        assert done.status_code == 200 and "Requeued 1 dead letter" in done.text
        assert queue_depth(settings, holding) == 1 and queue_depth(settings, names.dead) == 0

        make_dead_letter(settings, holding, "poison (test)", unique + "-p")
        confirm_page = dashboard.http.post("/dead-letters/action", data={
            "action": "purge", "target": "all", "token": TOKEN})
        fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', confirm_page.text))
        done = dashboard.http.post("/dead-letters/confirm", data=fields)
        assert "Purged 1 dead letter" in done.text
        assert queue_depth(settings, names.dead) == 0 and queue_depth(settings, holding) == 1
    finally:
        delete_queue(settings, holding)


def test_a_dashboard_without_a_token_is_read_only(board_cluster: Cluster,
                                                  tmp_path: Path) -> None:
    board = DashboardProcess(board_cluster.settings, tmp_path / "dash.log")
    try:
        board.wait_ready()
        page = board.http.get("/dead-letters")
        assert page.status_code == 200 and "read-only" in page.text
        refused = board.http.post("/dead-letters/action", data={
            "action": "purge", "target": "all", "token": "anything"})
        assert refused.status_code == 403 and "read-only" in refused.text
        refused = board.http.post("/dead-letters/confirm", data={
            "action": "purge", "target": "all", "expires": "9999999999", "ticket": "0" * 64})
        assert refused.status_code == 403 and "read-only" in refused.text
    finally:
        board.stop()


@pytest.mark.fault
def test_etcd_going_away_shows_as_down_and_the_dashboard_recovers(services: Services,
                                                                   tmp_path: Path) -> None:
    etcd = LocalEtcd(tmp_path / "etcd")
    board = DashboardProcess(services.settings().with_(etcd_endpoints=(etcd.endpoint,)),
                             tmp_path / "dash.log")
    try:
        etcd.start()
        board.wait_ready().wait_for(lambda s: s["etcd"]["up"], 15, "etcd shown up")
        etcd.stop()
        down = board.wait_for(lambda s: not s["etcd"]["up"], 20, "etcd shown down")
        assert down["etcd"]["detail"] and down["broker"]["up"]
        for path in PAGES:
            page = board.http.get(path)
            assert page.status_code == 200 and 'id="etcd-state">etcd DOWN' in page.text, path
        etcd.start()
        board.wait_for(lambda s: s["etcd"]["up"], 30, "etcd shown up again")
        assert 'id="etcd-state">etcd up' in board.http.get("/").text
    finally:
        board.stop()
        etcd.stop()


@pytest.mark.fault
def test_rabbitmq_going_away_shows_as_down_and_the_dashboard_recovers(services: Services,
                                                                       tmp_path: Path) -> None:
    host, _, port = services.broker_url.split("@", 1)[1].split("/", 1)[0].partition(":")
    proxy = TcpProxy((host, int(port or 5672))).start()
    url = services.broker_url.replace(f"@{host}:{port}", f"@127.0.0.1:{proxy.port}")
    settings = services.settings().with_(broker_url=url)
    names = QueueNames(settings.namespace)
    declare_holding_queue(services.settings(namespace=settings.namespace), names.work)
    board = DashboardProcess(settings, tmp_path / "dash.log")
    try:
        board.wait_ready().wait_for(lambda s: s["queues"].get(names.work) == 0, 15,
                                    "RabbitMQ shown up, with the queue's depth")
        proxy.stop()
        down = board.wait_for(lambda s: not s["broker"]["up"], 20, "RabbitMQ shown down")
        assert down["etcd"]["up"] and down["queues"][names.work] is None
        page = board.http.get("/queues")
        assert page.status_code == 200 and 'id="broker-state">RabbitMQ DOWN' in page.text
        assert board.http.get("/dead-letters").status_code == 200
        proxy.start()
        board.wait_for(lambda s: s["broker"]["up"] and s["queues"][names.work] == 0, 30,
                       "RabbitMQ shown up again, with the queue's depth")
    finally:
        board.stop()
        proxy.stop()
        delete_queue(services.settings(namespace=settings.namespace), names.work)
